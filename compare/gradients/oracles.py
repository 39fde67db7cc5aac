"""The oracles of the gradient check: the ways to get dL/dtheta, the losses they differentiate, the errors between them.

Four ways to get dL/dtheta for one entry theta of any parameter (U, W, V, b, c, U2, ...):

    manual          hand-written BPTT (``manual.backward``)
    autograd        PyTorch autograd through ``torchref.CharRNN``
    central         (L(theta + h) - L(theta - h)) / 2h          truncation error O(h^2),
                                                                 cancellation error O(u L / h)
    complex step    Im L(theta + i h) / h                       no subtraction: rounding only

and the relative error used by the original write-up,

    |ga - gn| / max(eps, |ga| + |gn|).

For the diagnosis (compare.gradients.diagnose), every oracle on one problem as whole gradients:

    manual        the hand-written backward (``manual.backward``, or a variant of it a test plants)
    autograd      PyTorch autograd through the twin (``torchref.CharRNN`` with the cell's ``step``)
    complex step  Im L(theta + ih) / h of the manual forward in complex128, when the forward is analytic
    central       centred differences of the manual loss: the fallback when the complex step is unusable
    gradcheck     ``torch.autograd.gradcheck`` on the twin: is autograd itself a trustworthy reference?

Errors between two whole gradients are norm-wise, |a - b| / max(tiny, |a| + |b|) over a whole array
or block, so that entries that are almost zero on both sides cannot dominate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import SupportsFloat

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import manual
import torchref
from compare.model.cells import CellPair, cell_pair

TABLE_PARAMS = ("b", "c", "U", "W", "V")  # the original Table 1's row order; deeper layers follow


def table_order(names: Collection[str]) -> list[str]:
    """Table 1's rows first (b, c, U, W, V), then each deeper layer's b, U, W (b2, U2, W2, ...)."""
    extra = sorted((name for name in names if name not in TABLE_PARAMS), key=lambda name: (int(name[1:]), name))
    return [name for name in TABLE_PARAMS if name in names] + extra


@dataclass
class Problem:
    """One forward/backward pass: the same parameters, batch and initial state for every method."""

    params: dict[str, np.ndarray]  # float64, see compare.model.init.param_shapes
    inputs: np.ndarray  # (B, T) int token ids
    targets: np.ndarray  # (B, T) int token ids, inputs shifted by one
    state0: np.ndarray  # (L, P, B, H) initial state (zero in the original)
    cell: str | CellPair = "rnn"  # a --cell value, or both sides of a cell already resolved


def relative_error(analytic: np.ndarray, numerical: np.ndarray, eps: float) -> np.ndarray:
    """|ga - gn| / max(eps, |ga| + |gn|), entry by entry.

    eps only matters where both gradients are (almost) zero, e.g. the columns of U
    for characters that are not in the batch: there both are exactly 0 and so is the error.
    """
    return np.abs(analytic - numerical) / np.maximum(eps, np.abs(analytic) + np.abs(numerical))


def at_entries(arrays: dict[str, np.ndarray], entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Pick the checked entries: name -> 1-D array of arrays[name].flat[entries[name]]."""
    return {name: arrays[name].reshape(-1)[indices] for name, indices in entries.items()}


def nudged(params: dict[str, np.ndarray], name: str, flat_index: int, delta: complex) -> dict[str, np.ndarray]:
    """A copy of params with one entry moved by delta (real or imaginary); params unchanged."""
    moved = dict(params)
    moved[name] = params[name].copy()
    moved[name].reshape(-1)[flat_index] += delta
    return moved


@contextmanager
def torch_single_thread() -> Iterator[None]:
    """Run torch on one thread for the duration, then restore the caller's setting.

    The tensors here hold a few hundred numbers: a thread pool cannot speed them up, and
    waking it for each of the ~50 small ops of a forward pass made the loop about ten
    times slower on a busy two-core machine.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# ----- losses as functions of the parameters ---------------------------------------------


def manual_loss_function(problem: Problem) -> Callable[[dict[str, np.ndarray]], np.number]:
    """params -> loss of ``manual.forward``; complex params give a complex loss."""

    recurrence = cell_pair(problem.cell).manual

    def loss_of(params: dict[str, np.ndarray]) -> np.number:
        loss, _ = manual.forward(params, problem.inputs, problem.targets, problem.state0, recurrence)
        return loss

    return loss_of


class TorchLoss:
    """The float64 torch model's loss on the problem's batch, and its autograd gradient."""

    def __init__(self, problem: Problem):
        self.model = torchref.CharRNN(problem.params, cell=cell_pair(problem.cell).torch, dtype=torch.float64)
        self.params = problem.params
        self.inputs = torch.from_numpy(problem.inputs).long()
        self.targets = torch.from_numpy(problem.targets).long()
        self.state0 = torch.from_numpy(problem.state0).double()

    def __call__(self, params: dict[str, np.ndarray]) -> float:
        """Loss at ``params`` (copied into the model, which is one module reused for speed)."""
        with torch.no_grad():
            self.load(params)
            loss, _ = self.model.loss(self.inputs, self.targets, self.state0)
        return float(loss)

    def gradient(self) -> dict[str, np.ndarray]:
        """Autograd gradients at the problem's parameters, as float64 NumPy arrays."""
        with torch.no_grad():
            self.load(self.params)
        self.model.zero_grad(set_to_none=True)
        loss, _ = self.model.loss(self.inputs, self.targets, self.state0)
        loss.backward()
        grads = {}
        for name, param in self.model.named_parameters():
            assert param.grad is not None  # every parameter enters the loss, so backward gave each a gradient
            grads[name] = param.grad.numpy().copy()
        return grads

    def load(self, params: dict[str, np.ndarray]) -> None:
        for name, param in self.model.named_parameters():
            param.copy_(torch.from_numpy(params[name]))


# ----- gradient estimates at the checked entries -----------------------------------------


def manual_gradient(problem: Problem, entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hand-written BPTT gradients at the checked entries."""
    recurrence = cell_pair(problem.cell).manual
    _, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, recurrence)
    return at_entries(manual.backward(cache), entries)


def autograd_gradient(problem: Problem, entries: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """PyTorch autograd gradients at the checked entries."""
    return at_entries(TorchLoss(problem).gradient(), entries)


def central_differences(
    loss_of: Callable[[dict[str, np.ndarray]], SupportsFloat],
    params: dict[str, np.ndarray],
    entries: dict[str, np.ndarray],
    step: float,
) -> dict[str, np.ndarray]:
    """(L(theta + h) - L(theta - h)) / 2h for every checked entry, one entry at a time."""
    estimates: dict[str, np.ndarray] = {}
    for name, indices in entries.items():
        estimates[name] = np.array(
            [
                (float(loss_of(nudged(params, name, i, step))) - float(loss_of(nudged(params, name, i, -step))))
                / (2 * step)
                for i in indices
            ]
        )
    return estimates


def complex_step(problem: Problem, entries: dict[str, np.ndarray], step: float) -> dict[str, np.ndarray]:
    """Im L(theta + i h) / h for every checked entry, on the manual forward pass in complex128.

    L(theta + ih) = L(theta) + ih L'(theta) - h^2 L''(theta)/2 - ..., so the imaginary part
    is h L'(theta) up to O(h^3): with h = 1e-30 the truncation error is far below rounding,
    and as nothing is subtracted there is no cancellation either.
    """
    loss_of = manual_loss_function(problem)
    complex_params = {name: value.astype(np.complex128) for name, value in problem.params.items()}
    estimates: dict[str, np.ndarray] = {}
    for name, indices in entries.items():
        estimates[name] = np.array([loss_of(nudged(complex_params, name, i, 1j * step)).imag / step for i in indices])
    return estimates


# ----- summary ---------------------------------------------------------------------------


def summarize(errors: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    """name -> {"max", "avg"} of the relative errors, in Table 1's order, plus "All".

    "All": max is the largest error of any entry (the max of the rows' maxima, as in the
    original); avg is the mean over every checked entry pooled, so large matrices weigh
    more than small vectors (the original left this cell empty).
    """
    names = table_order(errors)
    summary = {name: {"max": float(np.max(errors[name])), "avg": float(np.mean(errors[name]))} for name in names}
    pooled = np.concatenate([errors[name] for name in names])
    summary["All"] = {"max": float(np.max(pooled)), "avg": float(np.mean(pooled))}
    return summary


def compare_gradients(
    analytic: dict[str, np.ndarray], numerical: dict[str, np.ndarray], eps: float
) -> dict[str, dict[str, float]]:
    """Relative errors of two gradient estimates, summarized per parameter."""
    return summarize({name: relative_error(analytic[name], numerical[name], eps) for name in analytic})


# ----- every oracle on one problem, as whole gradients: for gradcheck --diagnose -------------------


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
