"""The real training loop (compare.training.loop.train) against one written out here by hand.

The hand-written loop uses only ``manual.forward``, ``manual.backward``, ``manual.Adagrad``
and ``np.clip``, with its own vocabulary, split, streams and chunks: it carries the hidden
state from chunk to chunk (zeros at each epoch's start), measures the gradient norm before
clipping, and validates with one forward pass over each whole validation stream. The real
run (``--impl both``, float64) must match it step for step: its losses, its logged
``grad/global_norm`` and ``loss/val``, and its ``best.npz``.

The text is one where memory matters: each unit is a random letter, a filler, and the same
letter again, so the character to predict was seen seven steps back, across the boundary
of the 5-character chunks. Resetting the hidden state at every chunk changes the losses by
far more than rounding (the test shows it), which a first-order Markov text would not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from problems import random_params
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import manual
from compare.model.checkpoint import BEST, load_checkpoint
from compare.model.engines import ADAGRAD_EPS, make_engine
from compare.model.init import init_params
from compare.training.config import TrainConfig
from compare.training.loop import estimate_loss, train, validation_batches

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

GAP = 6  # filler characters between a letter and its copy: the copy is GAP + 1 steps after it
SETTINGS = {
    "hidden_size": 16,
    "seq_length": 5,
    "batch_size": 2,
    "lr": 0.1,
    "clip": 0.1,  # active in about two steps of three: the clipped and unclipped norms differ
    "seed": 3,
    "val_frac": 0.1,
    "max_steps": 300,  # one epoch is 242 steps: the run crosses an epoch boundary (h back to zeros)
    "eval_every": 10,
}


def memory_text(units: int = 300, seed: int = 0) -> str:
    """``units`` times: a random letter of 'abcd', GAP dashes, the same letter, a full stop."""
    letters = np.random.default_rng(seed).choice(list("abcd"), size=units)
    return "".join(letter + "-" * GAP + letter + "." for letter in letters)


def one_pass_validation_loss(params: dict, val_ids: np.ndarray, batch_size: int, seq_length: int) -> float:
    """The validation loss as one forward pass over each validation stream, from zeros.

    The layout is the documented one: as many streams as fit (at most batch_size), each cut
    to a whole number of chunks; every stream has the same length, so the mean over streams
    is the mean over characters.
    """
    streams = max(1, min(batch_size, (len(val_ids) - 1) // (seq_length + 1)))
    chunk = min(seq_length, len(val_ids) - 1)
    stream_length = (len(val_ids) - 1) // streams
    used = stream_length // chunk * chunk
    hidden_size = params["W"].shape[1]
    losses = []
    for stream in range(streams):
        start = stream * stream_length
        inputs = val_ids[start : start + used][None]  # (1, used): the whole stream as one sequence
        targets = val_ids[start + 1 : start + used + 1][None]
        loss, _ = manual.forward(params, inputs, targets, np.zeros((1, 1, 1, hidden_size)))
        losses.append(float(loss))
    return float(np.mean(losses))


@dataclass
class Reference:
    losses: list  # training loss of every step
    norms: list  # the global gradient norm of every step, before clipping
    clipped_norms: list  # the same after clipping
    val: dict  # step -> validation loss


def reference_run(text: str, carry: bool = True, **overrides) -> Reference:
    """The training loop written out: the same settings, data layout and init as the real run."""
    settings = {**SETTINGS, **overrides}
    batch_size, seq_length, clip = settings["batch_size"], settings["seq_length"], settings["clip"]
    chars = sorted(set(text))
    ids = np.array([chars.index(char) for char in text])
    held_out = int(round(len(ids) * settings["val_frac"]))
    train_ids, val_ids = ids[: len(ids) - held_out], ids[len(ids) - held_out :]
    stream_length = (len(train_ids) - 1) // batch_size
    inputs = train_ids[: batch_size * stream_length].reshape(batch_size, stream_length)
    targets = train_ids[1 : batch_size * stream_length + 1].reshape(batch_size, stream_length)
    chunks = stream_length // seq_length
    params = init_params(len(chars), settings["hidden_size"], settings["seed"])
    optimizer = manual.Adagrad(params, lr=settings["lr"], eps=ADAGRAD_EPS)
    reference = Reference([], [], [], {})
    steps = settings["max_steps"]
    for step in range(1, steps + 1):
        index = (step - 1) % chunks
        if index == 0 or not carry:
            h = np.zeros((1, 1, batch_size, settings["hidden_size"]))
        columns = slice(index * seq_length, (index + 1) * seq_length)
        loss, cache = manual.forward(params, inputs[:, columns], targets[:, columns], h)
        grads = manual.backward(cache)
        reference.norms.append(float(np.sqrt(sum(np.sum(grad**2) for grad in grads.values()))))
        for grad in grads.values():
            np.clip(grad, -clip, clip, out=grad)
        reference.clipped_norms.append(float(np.sqrt(sum(np.sum(grad**2) for grad in grads.values()))))
        optimizer.step(grads)
        h = cache.state_last
        reference.losses.append(float(loss))
        if step % settings["eval_every"] == 0 or step == steps:
            reference.val[step] = one_pass_validation_loss(params, val_ids, batch_size, seq_length)
    return reference


@pytest.fixture(scope="module")
def text() -> str:
    return memory_text()


@pytest.fixture(scope="module")
def reference(text) -> Reference:
    return reference_run(text)


@pytest.fixture(scope="module")
def real_run(tmp_path_factory, text):
    """(summary, run directory) of a real --impl both run in float64 with SETTINGS: about 3 s."""
    directory = tmp_path_factory.mktemp("loop")
    data = directory / "memory.txt"
    data.write_text(text)
    config = TrainConfig(
        impl="both",
        data=str(data),
        dtype="float64",
        logdir=str(directory / "runs"),
        run_name="memory",
        log_every=1,
        sample_every=10**6,
        sample_length=10,
        checkpoint_every=10**6,
        **SETTINGS,
    )
    summary = train(config)
    return summary, directory / "runs" / "memory"


def logged(run_dir, impl: str, tag: str) -> dict:
    """step -> value of ``tag`` in the impl's event files (TensorBoard stores float32)."""
    events = EventAccumulator(str(run_dir / impl), size_guidance={"scalars": 0})
    events.Reload()
    return {event.step: event.value for event in events.Scalars(tag)}


TOLERANCE = {"manual": 1e-12, "torch": 1e-10}  # float64 over 300 steps: the same arithmetic; autograd's order


def test_the_loop_carries_the_hidden_state_from_chunk_to_chunk(real_run, reference, text):
    summary, _ = real_run
    for impl, tolerance in TOLERANCE.items():
        losses = summary["impls"][impl]["losses"]
        assert len(losses) == len(reference.losses)
        worst = np.max(np.abs(np.array(losses) - reference.losses))
        assert worst < tolerance, f"{impl}: loss differs from the hand-written loop by {worst:.3e}"
    # The test has teeth: on this text a loop that resets h at every chunk has other losses.
    reset = reference_run(text, carry=False)
    assert np.max(np.abs(np.array(reset.losses) - reference.losses)) > 0.1
    assert np.mean(reset.losses[-50:]) > np.mean(reference.losses[-50:]) + 0.05  # and it learns less


def test_the_logged_gradient_norm_is_the_norm_before_clipping(real_run, reference):
    _, run_dir = real_run
    active = [
        step
        for step in range(1, len(reference.norms) + 1)
        if reference.clipped_norms[step - 1] < 0.9 * reference.norms[step - 1]
    ]
    assert len(active) > 50  # many steps where the clip shrinks the norm by more than 10%
    for impl in TOLERANCE:
        norms = logged(run_dir, impl, "grad/global_norm")
        assert sorted(norms) == list(range(1, len(reference.norms) + 1))
        for step, value in norms.items():
            assert value == pytest.approx(reference.norms[step - 1], rel=1e-6), (impl, step)  # float32 storage


def test_the_logged_validation_loss_is_one_forward_pass_over_each_stream(real_run, reference):
    _, run_dir = real_run
    for impl in TOLERANCE:
        val = logged(run_dir, impl, "loss/val")
        assert sorted(val) == sorted(reference.val)
        for step, value in val.items():
            assert value == pytest.approx(reference.val[step], rel=1e-6), (impl, step)  # float32 storage


def test_best_npz_holds_the_lowest_validation_loss_seen_and_its_weights_give_it(real_run, reference, text):
    _, run_dir = real_run
    chars = sorted(set(text))
    ids = np.array([chars.index(char) for char in text])
    val_ids = ids[len(ids) - int(round(len(ids) * SETTINGS["val_frac"])) :]
    for impl in TOLERANCE:
        val = logged(run_dir, impl, "loss/val")
        steps = sorted(val)
        best_step = min(steps, key=lambda step: val[step])
        # The run must tell "lowest" from "first", "latest" and "lower than the one before".
        assert best_step not in (steps[0], steps[-1])
        assert any(
            val[later] < val[earlier] for earlier, later in zip(steps, steps[1:], strict=False) if later > best_step
        )
        best = load_checkpoint(run_dir / impl / BEST)
        assert best.step == best_step, (
            f"{impl}: best.npz is from step {best.step}, the lowest loss/val from {best_step}"
        )
        assert best.progress.best_val_loss == pytest.approx(min(val.values()), rel=1e-6)  # float32 events
        assert best.progress.best_val_loss == pytest.approx(reference.val[best_step], rel=1e-12, abs=0)
        from_weights = one_pass_validation_loss(
            best.engine.params, val_ids, SETTINGS["batch_size"], SETTINGS["seq_length"]
        )
        assert from_weights == pytest.approx(best.progress.best_val_loss, rel=1e-12, abs=0), impl


@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_estimate_loss_carries_the_state_across_chunks(impl):
    """estimate_loss over chunks of 4 equals one forward pass over each whole stream.

    Weights of std 0.5 make the state matter: starting each chunk from zeros moves the loss
    by far more than float64 rounding.
    """
    rng = np.random.default_rng(7)
    val_ids = rng.integers(0, 6, size=203)
    params = random_params(vocab_size=6, hidden_size=8, seed=1)
    batches = validation_batches(val_ids, batch_size=3, seq_length=4)
    assert batches.inputs.shape == (3, 67) and len(batches) == 16  # 3 streams of 16 chunks
    engine = make_engine(impl, params, lr=0.1, clip=5.0, dtype="float64")
    expected = one_pass_validation_loss(params, val_ids, batch_size=3, seq_length=4)
    assert estimate_loss(engine, batches) == pytest.approx(expected, rel=1e-12, abs=0)
    chunk_by_chunk_from_zeros = np.mean(
        [engine.eval_loss(*batches.get_batch(index), engine.zero_state(3))[0] for index in range(len(batches))]
    )
    assert abs(chunk_by_chunk_from_zeros - expected) > 1e-3  # what a reset state would give instead
