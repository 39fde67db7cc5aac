"""Both implementations trained side by side from one init on one data order, for every cell."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from problems import CELLS_AND_LAYERS, random_problem
from twins import as_tensors, manual_loss_and_grads, torch_loss_and_grads

from compare.data.corpus import StreamBatches, Vocab, builtin_corpus
from compare.model.engines import ADAGRAD_EPS, make_engine
from compare.model.init import init_params
from compare.model.state import EngineState
from manual.lr_schedule import LRSchedule

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability


def lockstep_run(
    steps,
    cell="rnn",
    num_layers=1,
    eps=ADAGRAD_EPS,
    hidden_size=16,
    batch_size=4,
    seq_length=10,
    clip=0.1,
    optimizer="adagrad",
    lr=0.1,
    clip_norm=0.0,
    lr_schedule=None,
):
    """Train both engines in float64; per step: (manual StepStats, torch StepStats, params of each)."""
    text = builtin_corpus()[:20000]
    vocab = Vocab.from_text(text)
    batches = StreamBatches(vocab.encode(text), batch_size, seq_length)
    params = init_params(len(vocab), hidden_size, 3, cell, num_layers)
    engines = [
        make_engine(
            impl,
            params,
            lr=lr,
            clip=clip,
            dtype="float64",
            cell=cell,
            eps=eps,
            optimizer=optimizer,
            clip_norm=clip_norm,
            lr_schedule=lr_schedule,
        )
        for impl in ("manual", "torch")
    ]
    for engine in engines:
        engine.reset_hidden(batch_size)
    history = []
    for index in range(steps):
        inputs, targets = batches.get_batch(index)
        stats = [engine.train_step(inputs, targets) for engine in engines]
        history.append((stats, [engine.numpy_params() for engine in engines]))
    return history


def assert_lockstep(history, tolerance):
    """Same loss and parameters at every step, the clip active in some steps, and learning."""
    clipped_steps = 0
    for step, ((manual_stats, torch_stats), (manual_params, torch_params)) in enumerate(history):
        assert abs(manual_stats.loss - torch_stats.loss) < tolerance, f"step {step}"
        torch.testing.assert_close(
            as_tensors(manual_params),
            as_tensors(torch_params),
            rtol=0,
            atol=tolerance,
            msg=lambda m, step=step: f"step {step}: {m}",
        )
        assert manual_stats.clipped == torch_stats.clipped
        clipped_steps += manual_stats.clipped > 0
    # The comparison must cover the clipping path, and not only steps where it did nothing.
    assert 0 < clipped_steps < len(history)
    assert history[-1][0][0].loss < history[0][0][0].loss - 0.5  # and it is training, not standing still


def test_fifty_lockstep_steps_agree_in_float64():
    assert_lockstep(lockstep_run(50), tolerance=1e-12)  # float64 rounding over 50 steps (measured < 3e-14)


@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_every_cell_trains_in_lockstep(cell, num_layers):
    # AdaGrad eps 1e-6 keeps its first update from amplifying rounding by lr / eps = 1e9 (docs/tolerances.md).
    assert_lockstep(lockstep_run(50, cell, num_layers, eps=1e-6), tolerance=1e-10)  # measured at most 3.9e-12


def global_norm(grads) -> float:
    return float(np.sqrt(sum(np.sum(np.asarray(grad) ** 2) for grad in grads.values())))


@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_step_stats_report_the_gradient_norm_before_clipping(impl):
    """StepStats.grad_norm is the norm of the gradients backward gave, not of the clipped ones.

    The reference norm comes from manual.backward (manual) or autograd (torch) on the same
    weights, batch and carried-in state; weights of std 0.5 and --clip 0.02 make the clip cut
    the norm to less than half, so the two norms cannot be mistaken for each other.
    """
    problem = random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=4)
    _, grads = (manual_loss_and_grads if impl == "manual" else torch_loss_and_grads)(problem)
    grads = {name: np.asarray(grad, dtype=np.float64) for name, grad in grads.items()}
    expected = global_norm(grads)
    clip = 0.02
    clipped_norm = global_norm({name: np.clip(grad, -clip, clip) for name, grad in grads.items()})
    assert clipped_norm < 0.5 * expected  # the clip is active, and changes the norm a lot

    engine = make_engine(impl, problem["params"], lr=0.1, clip=clip, dtype="float64")
    zeros = {name: np.zeros_like(value) for name, value in problem["params"].items()}
    engine.load_state(EngineState(problem["params"], zeros, updates=0, hidden=problem["state0"]))
    stats = engine.train_step(problem["inputs"], problem["targets"])
    assert stats.clipped > 0
    assert stats.grad_norm == pytest.approx(expected, rel=1e-12, abs=0), f"clipped norm: {clipped_norm}"


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_fifty_lockstep_steps_of_rmsprop_and_adam_agree_in_float64(optimizer):
    # lr 0.01: the usual size for both (their steps are about lr per entry; AdaGrad's shrink as G grows).
    history = lockstep_run(50, optimizer=optimizer, lr=0.01)
    assert_lockstep(history, tolerance=1e-12)  # float64 rounding over 50 steps (measured at most 5.4e-15)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_every_cell_trains_in_lockstep_with_rmsprop_and_adam(optimizer, cell, num_layers):
    history = lockstep_run(50, cell, num_layers, optimizer=optimizer, lr=0.01)
    # Their fixed eps 1e-8 lets lr / eps amplify the rounding of near-zero gradient entries, as AdaGrad's does
    # (docs/tolerances.md): measured at most 6.7e-12 (lstm); float64 rounding, not a slip, is 1e-10 away.
    assert_lockstep(history, tolerance=1e-10)


CLIP_NORM = 0.5  # the gradient norms of these 50 steps run from 0.26 to 1.04: the clip acts in some steps, not all


@pytest.mark.parametrize("optimizer, lr", [("adagrad", 0.1), ("rmsprop", 0.01), ("adam", 0.01)])
def test_clipping_by_the_global_norm_trains_in_lockstep(optimizer, lr):
    history = lockstep_run(50, clip=0, clip_norm=CLIP_NORM, optimizer=optimizer, lr=lr)
    for step, ((manual_stats, torch_stats), (manual_params, torch_params)) in enumerate(history):
        assert abs(manual_stats.loss - torch_stats.loss) < 1e-12, f"step {step}"  # float64 rounding
        # float64 rounding over 50 steps (measured at most 8.1e-15); the two norms differ in their last bits only
        torch.testing.assert_close(as_tensors(manual_params), as_tensors(torch_params), rtol=0, atol=1e-12)
    scaled = sum(manual_stats.grad_norm > CLIP_NORM for (manual_stats, _), _ in history)
    assert 0 < scaled < len(history)  # both paths compared: scaled steps and untouched ones


@pytest.mark.parametrize("impl", ["manual", "torch"])
@pytest.mark.parametrize("clip", [0.0, 0.02], ids=["norm-only", "after-the-element-wise-clip"])
def test_the_optimizer_gets_gradients_scaled_to_the_global_norm(impl, clip):
    """The gradient the update reads (manual: engine.grads; torch: each param.grad) has norm --clip-norm.

    Weights of std 0.5 give a gradient norm (0.6) far above 0.01; StepStats.grad_norm still reports it unclipped.
    """
    problem = random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=4)
    engine = make_engine(impl, problem["params"], lr=0.1, clip=clip, dtype="float64", clip_norm=0.01)
    zeros = {name: np.zeros_like(value) for name, value in problem["params"].items()}
    engine.load_state(EngineState(problem["params"], zeros, updates=0, hidden=problem["state0"]))
    stats = engine.train_step(problem["inputs"], problem["targets"])
    if impl == "manual":
        grads = dict(engine.grads)
    else:
        grads = {name: param.grad.numpy() for name, param in engine.model.named_parameters()}
    assert stats.grad_norm > 0.5
    assert (stats.clipped > 0) == (clip > 0)
    # max_norm * norm / (norm + 1e-6) is 1e-6 / norm relatively below max_norm: norm >= 0.02 here (the largest
    # entry, after the clip), so under 5e-5 off, and float64 rounding adds nothing visible at 1e-4
    assert global_norm(grads) == pytest.approx(0.01, rel=1e-4, abs=0)


SCHEDULES = {  # over the 50 steps: halved every 10 (rates exact in binary), and a cosine down to 0 at step 50
    "step": LRSchedule("step", every=10, gamma=0.5),
    "cosine": LRSchedule("cosine", horizon=50),
}


@pytest.mark.parametrize("optimizer, lr", [("adagrad", 0.1), ("adam", 0.01)])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_learning_rate_schedules_train_in_lockstep(optimizer, lr, schedule):
    history = lockstep_run(50, optimizer=optimizer, lr=lr, lr_schedule=SCHEDULES[schedule])
    assert_lockstep(history, tolerance=1e-12)  # float64 rounding over 50 steps, as without a schedule
    constant = lockstep_run(50, optimizer=optimizer, lr=lr)
    assert not np.array_equal(history[-1][1][0]["W"], constant[-1][1][0]["W"])  # the schedule changed the steps


@pytest.mark.parametrize("impl", ["manual", "torch"])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_the_rate_after_each_update_follows_the_schedule(impl, schedule):
    problem = random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=4)
    engine = make_engine(impl, problem["params"], lr=0.1, clip=5.0, dtype="float64", lr_schedule=SCHEDULES[schedule])
    engine.reset_hidden(3)
    rates = []
    for _ in range(50):
        engine.train_step(problem["inputs"], problem["targets"])
        rates.append(engine.optimizer.lr if impl == "manual" else engine.optimizer.param_groups[0]["lr"])
    if schedule == "step":  # 0.1 * 0.5^(t // 10): products by 0.5 are exact
        assert rates == [0.1 * 0.5 ** (t // 10) for t in range(1, 51)]
    else:  # the closed form 0.1 * (1 + cos(pi t / 50)) / 2, reached by 50 rounded ratios: within 1e-15 of it
        closed = [0.1 * (1 + np.cos(np.pi * t / 50)) / 2 for t in range(1, 51)]
        np.testing.assert_allclose(rates, closed, rtol=0, atol=1e-15)
