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

from manual import Adagrad

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
