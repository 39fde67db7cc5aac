"""The hand-written AdaGrad against torch.optim.Adagrad, counted in float64 ulps.

Why they are not bit-identical everywhere (measured, docs/tolerances.md): torch accumulates
G + g * g with one rounding (a fused multiply-add), NumPy has none and rounds twice; torch's
float64 sqrt (MKL's) is not always the correctly rounded one. The division and the addition
follow torch's order, so those two are the only sources of difference, each at most one ulp.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from problems import random_params

from compare.model.state import OPTIMIZERS
from manual import Adagrad, Adam, RMSprop
from manual.lr_schedule import LRSchedule, ScheduledRate

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

LR, EPS = 0.1, 1e-10  # EPS: torch.optim.Adagrad's default, which both take
U = 2.0**-53  # float64 unit roundoff: one rounding moves a value by at most U relative
# Sizes that take torch's vectorised loops, their remainders, and the scalar path.
SIZES = (1, 3, 7, 8, 100, 10_000)


def ulps(a, b) -> np.ndarray:
    """Element-wise count of float64 steps from a to b (0: bit-identical; +0.0 and -0.0 count as equal)."""

    def ordered(x):  # the float64 bits as an integer that grows with the value, negative values included
        bits = np.asarray(x, dtype=np.float64).view(np.int64)
        return np.where(bits < 0, np.iinfo(np.int64).min - bits, bits)

    return np.abs(ordered(a) - ordered(b))


def step_both(manual_optimizer, torch_optimizer, torch_params, grads):
    """One update of each optimizer with the same gradients (torch gets its own copies)."""
    manual_optimizer.step(grads)
    for name, param in torch_params.items():
        param.grad = torch.from_numpy(grads[name].copy())
    torch_optimizer.step()


def draw_grads(rng, shapes):
    """Entries from 1e-6 to 10 (per entry), a tenth of them exactly zero, as unseen characters give."""
    grads = {}
    for name, shape in shapes.items():
        grad = rng.normal(size=shape) * 10.0 ** rng.integers(-6, 2, size=shape)
        grad[rng.random(shape) < 0.1] = 0.0
        grads[name] = grad
    return grads


@pytest.mark.parametrize("foreach", [None, True], ids=["default", "foreach"])  # torch's CPU default; TorchEngine's
def test_each_step_from_the_same_state_differs_only_by_the_accumulation_and_the_sqrt(foreach):
    rng = np.random.default_rng(0)
    shapes = {f"n{size}": (size,) for size in SIZES}
    torch_params = {
        name: torch.nn.Parameter(torch.from_numpy(rng.normal(size=shape))) for name, shape in shapes.items()
    }
    torch_optimizer = torch.optim.Adagrad(torch_params.values(), lr=LR, eps=EPS, foreach=foreach)
    manual_params = {name: np.zeros(shape) for name, shape in shapes.items()}
    manual_optimizer = Adagrad(manual_params, lr=LR, eps=EPS)

    for step in range(30):
        before = {name: param.detach().numpy().copy() for name, param in torch_params.items()}
        for name, param in torch_params.items():  # the manual optimizer starts from torch's state
            manual_params[name][...] = before[name]
            if step > 0:
                manual_optimizer.accumulators[name][...] = torch_optimizer.state[param]["sum"].numpy()
        grads = draw_grads(rng, shapes)
        step_both(manual_optimizer, torch_optimizer, torch_params, grads)

        for name, param in torch_params.items():
            where = f"step {step}, {name}"
            g_manual = manual_optimizer.accumulators[name]
            g_torch = torch_optimizer.state[param]["sum"]
            # G + g*g rounded once (torch's FMA) or twice (NumPy): the extra rounding of g*g is at most
            # half an ulp of the sum, so the two land at most one float64 apart.
            assert ulps(g_manual, g_torch.numpy()).max() <= 1, where
            # sqrt of G's one-ulp difference moves sqrt(G) by under 0.71 ulp; np.sqrt rounds correctly (<= 0.5
            # ulp off), torch's (MKL) is measured <= 0.53 ulp off: 0.5 + 0.71 + 0.53 < 2, so one float64 apart.
            assert ulps(np.sqrt(g_manual), g_torch.sqrt().numpy()).max() <= 1, where
            std_manual = np.sqrt(g_manual) + EPS  # the manual denominator
            std_torch = (g_torch.sqrt() + EPS).numpy()  # torch's: state_sum.sqrt().add_(eps)
            # Given manual's denominator, torch's own addcdiv_ (as the optimizer calls it) gives manual's
            # parameter to the bit: -lr * g, the quotient and the sum are rounded in the same order.
            expected = torch.from_numpy(before[name]).addcdiv(param.grad, torch.from_numpy(std_manual), value=-LR)
            assert np.array_equal(manual_params[name], expected.numpy()), where
            # So wherever the two denominators agree, the two optimizers agree to the bit.
            same = std_manual == std_torch
            assert np.array_equal(manual_params[name][same], param.detach().numpy()[same]), where


def test_thirty_steps_stay_within_the_rounding_bound():
    rng = np.random.default_rng(0)
    manual_params = random_params(vocab_size=7, hidden_size=5, seed=rng, weight_std=1.0)
    shapes = {name: value.shape for name, value in manual_params.items()}
    torch_params = {name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in manual_params.items()}
    manual_optimizer = Adagrad(manual_params, lr=LR, eps=EPS)
    torch_optimizer = torch.optim.Adagrad(torch_params.values(), lr=LR, eps=EPS)
    bound = {name: np.zeros(shape) for name, shape in shapes.items()}  # largest |theta_manual - theta_torch| so far

    for step in range(1, 31):
        # Gradients of very different sizes (one scale per tensor), some exactly zero, as unseen characters give.
        grads = {name: rng.normal(size=shape) * 10.0 ** rng.integers(-6, 2) for name, shape in shapes.items()}
        grads["U"][:, rng.integers(0, 7)] = 0.0
        step_both(manual_optimizer, torch_optimizer, torch_params, grads)

        for name, param in torch_params.items():
            where = f"step {step}, {name}"
            g_torch = torch_optimizer.state[param]["sum"].numpy()
            theta_torch = param.detach().numpy()
            # Each step adds at most one ulp to the accumulators' difference (the test above), and G only grows.
            assert ulps(manual_optimizer.accumulators[name], g_torch).max() <= step, where
            # G's relative difference (<= 2 * step * U) halves under sqrt; the two sqrts, the two +eps and the two
            # divisions add 6.06 U: the steps differ by (step + 7) U of their size, and each new theta by 2 U more.
            step_size = LR * np.abs(grads[name]) / (np.sqrt(g_torch) + EPS)
            bound[name] += (step + 7) * U * step_size + 2 * U * np.abs(theta_torch)
            assert np.all(np.abs(manual_params[name] - theta_torch) <= bound[name]), where


# RMSProp (char-rnn's alpha 0.95, eps 1e-8) and Adam (torch's betas and eps) against their torch twins.
RMSPROP_LR, ADAM_LR = 2e-3, 1e-3


def torch_state_of(optimizer, param) -> dict[str, np.ndarray]:
    """The running statistics torch keeps for ``param``, named as the manual optimizers name them."""
    state = optimizer.state[param]
    if isinstance(optimizer, torch.optim.RMSprop):
        return {"accumulators": state["square_avg"].numpy()}
    return {"accumulators": state["exp_avg_sq"].numpy(), "moments": state["exp_avg"].numpy()}


@pytest.mark.parametrize("foreach", [None, True], ids=["default", "foreach"])
@pytest.mark.parametrize("kind", ["rmsprop", "adam"])
def test_rmsprop_and_adam_steps_from_the_same_state_differ_only_by_fused_roundings_and_the_sqrt(kind, foreach):
    rng = np.random.default_rng(0)
    shapes = {f"n{size}": (size,) for size in SIZES}
    torch_params = {
        name: torch.nn.Parameter(torch.from_numpy(rng.normal(size=shape))) for name, shape in shapes.items()
    }
    manual_params = {name: np.zeros(shape) for name, shape in shapes.items()}
    if kind == "rmsprop":
        torch_optimizer = torch.optim.RMSprop(
            torch_params.values(), lr=RMSPROP_LR, alpha=0.95, eps=1e-8, foreach=foreach
        )
        manual_optimizer = RMSprop(manual_params, lr=RMSPROP_LR)
    else:
        torch_optimizer = torch.optim.Adam(torch_params.values(), lr=ADAM_LR, foreach=foreach)
        manual_optimizer = Adam(manual_params, lr=ADAM_LR)

    for step in range(30):
        before = {name: param.detach().numpy().copy() for name, param in torch_params.items()}
        previous = {}
        for name, param in torch_params.items():  # the manual optimizer starts from torch's state
            manual_params[name][...] = before[name]
            if step > 0:
                previous[name] = {key: value.copy() for key, value in torch_state_of(torch_optimizer, param).items()}
                for key, value in previous[name].items():
                    getattr(manual_optimizer, key)[name][...] = value
        grads = draw_grads(rng, shapes)
        step_both(manual_optimizer, torch_optimizer, torch_params, grads)

        for name, param in torch_params.items():
            where = f"step {step}, {name}"
            state = torch_state_of(torch_optimizer, param)
            # alpha * v + (1 - alpha) * g*g, with the product rounded once more than torch's FMA: <= 1 float64 apart.
            assert ulps(manual_optimizer.accumulators[name], state["accumulators"]).max() <= 1, where
            v_manual, v_torch = manual_optimizer.accumulators[name], torch.from_numpy(state["accumulators"])
            # As AdaGrad's (the test above): 0.5 + 0.71 + 0.53 ulp < 2, so the roots are one float64 apart.
            assert ulps(np.sqrt(v_manual), v_torch.sqrt().numpy()).max() <= 1, where
            if kind == "rmsprop":
                numerator, value = param.grad, -RMSPROP_LR
                denominator_manual = np.sqrt(v_manual) + 1e-8
                denominator_torch = (v_torch.sqrt() + 1e-8).numpy()
                same = denominator_manual == denominator_torch
            else:
                m_manual, m_torch = manual_optimizer.moments[name], state["moments"]
                m_before = previous[name]["moments"] if step > 0 else np.zeros_like(m_torch)
                # m + w*(g - m): g - m is rounded alike; torch's lerp may fuse w*(g - m) into the sum, NumPy rounds
                # the product (<= U of it) and the sum (<= U of it), torch the sum only: apart by at most that.
                correction = np.abs(0.1 * (grads[name] - m_before))
                assert np.all(np.abs(m_manual - m_torch) <= U * (correction + 2 * np.abs(m_torch))), where
                t = step + 1
                numerator, value = torch.from_numpy(m_manual), -ADAM_LR / (1 - 0.9**t)
                root_correction = (1 - 0.999**t) ** 0.5
                denominator_manual = np.sqrt(v_manual) / root_correction + 1e-8
                denominator_torch = (v_torch.sqrt() / root_correction + 1e-8).numpy()
                same = (denominator_manual == denominator_torch) & (m_manual == m_torch)
            # Given manual's numerator and denominator, torch's own addcdiv_ gives manual's parameter to the bit.
            expected = torch.from_numpy(before[name]).addcdiv(
                numerator, torch.from_numpy(denominator_manual), value=value
            )
            assert np.array_equal(manual_params[name], expected.numpy()), where
            # So wherever the inputs of that last line agree, the two optimizers agree to the bit.
            assert np.array_equal(manual_params[name][same], param.detach().numpy()[same]), where


@pytest.mark.parametrize("kind", ["step", "cosine"])
def test_the_hand_written_schedule_gives_torchs_rates_to_the_bit(kind):
    """torch's schedulers update the rate from the previous one, which rounds differently from the closed form."""
    schedule = LRSchedule(kind, every=7, gamma=0.97, horizon=50)  # 130 updates: many decays, past the cosine's end
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = torch.optim.SGD([param], lr=0.05)
    if kind == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.97)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=50)
    rate = ScheduledRate(schedule, 0.05)
    for update in range(1, 131):
        param.grad = torch.zeros(2)
        optimizer.step()
        scheduler.step()
        assert rate.step() == optimizer.param_groups[0]["lr"], f"after update {update}"
    assert ScheduledRate(schedule, 0.05).restart_at(130) == rate.lr  # a resume's replay reaches the same rate


def test_the_memory_estimate_counts_each_optimizers_arrays():
    from compare.model.init import init_params
    from compare.training.config import TrainConfig, run_memory_needed

    parameters = sum(value.size for value in init_params(30, 16, 0).values())  # P, rnn, V 30, H 16
    needed = {name: run_memory_needed(TrainConfig(hidden_size=16, optimizer=name), 30) for name in OPTIMIZERS}
    float32 = 4  # TrainConfig's default dtype
    assert needed["rmsprop"] == needed["adagrad"]  # one statistic each
    assert needed["adam"] - needed["adagrad"] == parameters * float32  # and Adam's first moment
    assert needed["hf"] - needed["adagrad"] == 4 * parameters * float32  # CG's five vectors, no statistic
