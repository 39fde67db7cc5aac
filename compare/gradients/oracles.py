"""Every oracle on one problem, as whole gradients: for the diagnosis (compare.gradients.diagnose).

    manual        the hand-written backward (``manual.backward``, or a variant of it a test plants)
    autograd      PyTorch autograd through the twin (``torchref.CharRNN`` with the cell's ``step``)
    complex step  Im L(theta + ih) / h of the manual forward in complex128, when the forward is analytic
    central       centred differences of the manual loss: the fallback when the complex step is unusable
    gradcheck     ``torch.autograd.gradcheck`` on the twin: is autograd itself a trustworthy reference?

Errors between two gradients are norm-wise, |a - b| / max(tiny, |a| + |b|) over a whole array
or block, so that entries that are almost zero on both sides cannot dominate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import manual
import torchref
from compare.gradients.methods import (
    Problem,
    TorchLoss,
    central_differences,
    complex_step,
    manual_loss_function,
    torch_single_thread,
)
from compare.model.cells import cell_pair

TINY = 1e-300  # the floor of an error's denominator: reached only where both gradients are exactly zero
CENTRAL_STEP = 1e-5  # truncation O(h^2) ~ 1e-10 against cancellation ~ 1e-16 / h ~ 1e-11, in float64
COMPLEX_STEP = 1e-30
# Two oracles agree below this: centred differences reach ~1e-9 norm-wise on small problems with weights of
# std 0.5 (the truncation and cancellation above), an analytic complex step ~1e-15; non-analyticity is >1e-4.
ORACLES_AGREE = 1e-6

Backward = Callable[[manual.Cache], dict[str, np.ndarray]]


def norm_error(a: np.ndarray, b: np.ndarray) -> float:
    """|a - b| / max(tiny, |a| + |b|), Frobenius norms."""
    return float(np.linalg.norm(a - b) / max(TINY, float(np.linalg.norm(a) + np.linalg.norm(b))))


def worst_error(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return max(norm_error(a[name], b[name]) for name in a)


@dataclass
class Oracles:
    manual: dict[str, np.ndarray]  # every parameter's gradient, full arrays
    autograd: dict[str, np.ndarray]
    central: dict[str, np.ndarray]
    complex: dict[str, np.ndarray] | None  # None when the complex128 forward raised
    complex_failure: str | None  # why the complex128 forward raised
    twin_gradcheck: bool  # torch.autograd.gradcheck on the twin passed

    @property
    def complex_usable(self) -> bool:
        """The complex step is an oracle only for an analytic forward: then it is at least as close to autograd
        as centred differences are (to rounding, where they carry truncation and cancellation error; for tiny
        weights that can exceed ORACLES_AGREE). A non-analytic forward puts it far from both."""
        if self.complex is None:
            return False
        return worst_error(self.complex, self.autograd) <= max(ORACLES_AGREE, worst_error(self.central, self.autograd))

    @property
    def numerical(self) -> dict[str, np.ndarray]:
        """The numerical reference: the complex step when it is usable, else centred differences."""
        return self.complex if self.complex is not None and self.complex_usable else self.central


def full(estimates: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Flat estimates at every entry, back in the parameters' shapes."""
    return {name: estimates[name].reshape(params[name].shape) for name in params}


def twin_gradcheck(problem: Problem) -> bool:
    """torch.autograd.gradcheck of the twin's loss with respect to every parameter (float64)."""
    model = torchref.CharRNN(problem.params, cell=cell_pair(problem.cell).torch, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]
    inputs, targets = torch.from_numpy(problem.inputs).long(), torch.from_numpy(problem.targets).long()
    state0 = torch.from_numpy(problem.state0)

    def loss_of(*tensors: torch.Tensor) -> torch.Tensor:
        logits, _ = torch.func.functional_call(model, dict(zip(names, tensors, strict=True)), (inputs, state0))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    leaves = tuple(param.detach().clone().requires_grad_() for param in model.parameters())
    # gradcheck's own default tolerances (atol 1e-5, rtol 1e-3) with its eps 1e-6: a coarse check that autograd
    # differentiates the twin; the fine comparisons are the norm-wise ones against the other oracles.
    return bool(torch.autograd.gradcheck(loss_of, leaves, raise_exception=False))


def run_oracles(problem: Problem, backward: Backward = manual.backward) -> Oracles:
    """Every oracle on the problem, at every entry of every parameter (for small problems only)."""
    recurrence = cell_pair(problem.cell).manual
    _, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, recurrence)
    entries = {name: np.arange(value.size) for name, value in problem.params.items()}
    # seconds for the small problems this is meant for, a minute at gradcheck's defaults: a bar on a terminal
    progress = tqdm(total=3, desc="oracles", unit="oracle", disable=None, leave=False, file=sys.stderr)
    central = central_differences(manual_loss_function(problem), problem.params, entries, CENTRAL_STEP)
    progress.update()
    complex_estimates: dict[str, np.ndarray] | None = None
    failure = None
    try:
        with np.errstate(all="ignore"):  # a non-analytic forward may warn (casting complex to real): judged below
            complex_estimates = full(complex_step(problem, entries, COMPLEX_STEP), problem.params)
    except Exception as error:  # any failure of the complex128 forward means: no complex step here
        failure = f"{type(error).__name__}: {error}"
    progress.update()
    with torch_single_thread():
        autograd = TorchLoss(problem).gradient()
        passed = twin_gradcheck(problem)
    progress.update()
    progress.close()
    return Oracles(backward(cache), autograd, full(central, problem.params), complex_estimates, failure, passed)
