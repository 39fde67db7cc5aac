"""--impl both: the implementation error, measured on identical inputs, apart from the chaos.

Two trajectories that start from the same weights drift apart: AdaGrad's first step moves each
weight by about lr * g / (|g| + eps), so a rounding difference in a tiny gradient becomes a
difference of lr in a weight, and the training dynamics amplify it from there. That drift
(``chaos/*``) says nothing about whether the two implementations compute the same thing.

The implementation error is measured here instead, on the *same* weights, state and batch:
the manual engine's current parameters and hidden state go through both the hand-written
forward/backward and autograd (torchref), and the two losses and gradients are compared:

    agree/loss          log10 |L_manual - L_torch| / |L_torch|
    agree/grad_rel_max  log10 max over parameters of max|g_manual - g_torch| / max|g_torch|
    agree/grad_rel/<P>  the same for one parameter P (U, W, V, b, c, ...)

In float64 these stay at rounding level (about 1e-15) for the whole run while the chaos grows.
A difference of exactly 0 (bit-identical) is logged a decade below the dtype's unit roundoff
(exact_floor): -8.2 in float32, -17.0 in float64, just under the rounding-level band, not far below it.

A Verdict judges one such difference against AGREEMENT_BOUND, the dtype's bound: gradcheck, gradflow and
train --impl both end with its line, and exit with code 1 when the difference is beyond it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

import manual

if TYPE_CHECKING:
    from compare.model.engines import Engine

# How far manual and autograd may be apart on identical inputs, relative (relative_difference): float64's
# rounding, ~1e-15 measured, with room for longer chunks; float32's (u = 6e-8) summed over a chunk, ~1e-6
# measured. A wrong term in a backward is off by the size of the gradient itself (docs/tolerances.md#verdicts).
AGREEMENT_BOUND = {"float64": 1e-12, "float32": 1e-4}
VERDICT_DOC = "docs/tolerances.md#verdicts"

# torch is imported inside AgreementProbe: the training loop imports this module before the
# corpus is read, and a bad --data must fail in a second, before torch is loaded.


@dataclass
class Agreement:
    """Relative differences (not log10) between manual and autograd on the same inputs."""

    loss: float  # |L_manual - L_torch| / |L_torch|
    grads: dict[str, float]  # parameter name -> max|g_manual - g_torch| / max|g_torch|

    @property
    def grad_rel_max(self) -> float:
        return max(self.grads.values())

    def verdict(self, dtype: str, when: str = "") -> Verdict:
        """The largest of the loss's and the gradients' differences, judged; ``when`` is added to where it is."""
        differences = {"the loss": self.loss, **{f"dL/d{name}": value for name, value in self.grads.items()}}
        where = max(differences, key=lambda name: severity(differences[name]))
        return Verdict(differences[where], f"{where}{when}", dtype)


@dataclass
class Verdict:
    """Manual against autograd, judged: the largest relative difference found, what it is of, and the dtype."""

    difference: float  # relative_difference of the worst array; NaN (a NaN in either) is within no bound
    where: str  # what differs most: 'dL/dW', 'the loss', 'the rnn curve, init', ...
    dtype: str  # 'float32' or 'float64': it sets the bound

    @property
    def bound(self) -> float:
        return AGREEMENT_BOUND[self.dtype]

    @property
    def agree(self) -> bool:
        return self.difference <= self.bound  # False for NaN

    def as_json(self) -> dict[str, Any]:
        """What a command's --json file holds of it."""
        found = {"agree": self.agree, "largest_relative_difference": self.difference, "where": self.where}
        return {**found, "bound": self.bound, "dtype": self.dtype}

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> Verdict:
        return cls(record["largest_relative_difference"], record["where"], record["dtype"])

    @property
    def exit_code(self) -> int:
        """0 when manual and autograd agree, 1 when the check found them apart (2 stays for bad input)."""
        return 0 if self.agree else 1

    def line(self) -> str:
        """The one line a command ends with."""
        found = f"the largest relative difference is {self.difference:.1e} ({self.where})"
        if self.agree:
            return (
                f"verdict: manual and autograd agree: {found}, within {self.bound:g}, the {self.dtype} bound "
                f"({VERDICT_DOC})"
            )
        return (
            f"verdict: manual and autograd DISAGREE: {found}, beyond {self.bound:g}, the {self.dtype} bound "
            f"({VERDICT_DOC}); exit code 1"
        )


def severity(difference: float) -> float:
    """How bad a relative difference is, for max(): NaN is the worst of all."""
    return math.inf if math.isnan(difference) else difference


def worst(first: Verdict | None, second: Verdict) -> Verdict:
    """Of two verdicts the one with the larger difference (the first on a tie: the earlier measurement)."""
    return second if first is None or severity(second.difference) > severity(first.difference) else first


def exact_floor(dtype: str) -> float:
    """What an exact 0 is logged as: log10 of the dtype's unit roundoff (eps / 2), less one decade."""
    return math.log10(float(np.finfo(dtype).eps) / 2) - 1


def log10_or_floor(value: float, dtype: str) -> float:
    """log10(value), or exact_floor(dtype) for 0: TensorBoard cannot draw -inf."""
    return math.log10(value) if value > 0 else exact_floor(dtype)


def relative_difference(mine: np.ndarray, reference: np.ndarray) -> float:
    """max|mine - reference| / max|reference| (0 when both are 0): a norm-wise relative error,
    which stays meaningful where single entries of the reference are 0."""
    scale = float(np.max(np.abs(reference)))
    difference = float(np.max(np.abs(mine - reference)))
    return difference / scale if scale > 0 else difference


class AgreementProbe:
    """An autograd twin of the manual engine that is fed the manual engine's own weights and state.

    It has no optimizer and never trains: each measure() copies the weights in, so the torch
    engine of the run (which follows its own trajectory) is left untouched.
    """

    def __init__(self, engine: Engine) -> None:
        import torchref
        from compare.model.engines import TORCH_DTYPES, ManualEngine
        from compare.training.parallel import DataParallelEngine

        # Under torchrun the manual engine sits inside a DataParallelEngine and holds this rank's rows of the state.
        self.share = engine.parallel if isinstance(engine, DataParallelEngine) else None
        inner = engine.engine if isinstance(engine, DataParallelEngine) else engine
        assert isinstance(inner, ManualEngine), "the probe follows the manual engine of --impl both"
        self.engine = inner
        self.dtype = np.dtype(inner.dtype).name  # 'float32' or 'float64'
        torch_dtype = TORCH_DTYPES[np.dtype(inner.dtype).name]
        self.model = torchref.CharRNN(inner.params, cell=inner.pair.torch, dtype=torch_dtype)

    def measure(self, inputs: np.ndarray, targets: np.ndarray) -> Agreement:
        """Both losses and gradients on the manual engine's current weights and hidden state.

        inputs, targets: (B, T) ids, the batch the next train_step will take. Call before it.
        """
        import torch

        if self.share is not None:  # this rank's rows, the ones its hidden state belongs to
            rows = self.share.rows(len(inputs))
            inputs, targets = inputs[rows], targets[rows]
        engine = self.engine
        assert engine.hidden is not None, "the engine has a hidden state once training has started"
        if engine.gradient == "rtrl":
            return self.measure_forward_mode(inputs, targets)
        # the hand-written side, exactly as ManualEngine.train_step computes it (before clipping)
        reduction = engine.loss_reduction  # the loss the run minimizes: the mean, or the sum (--preset original)
        manual_loss, cache = manual.forward(engine.params, inputs, targets, engine.hidden, engine.recurrence, reduction)
        manual_grads = manual.backward(cache)
        # the autograd side, on the same weights and the same state
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(torch.from_numpy(engine.params[name]))
        self.model.zero_grad(set_to_none=True)
        state = torch.from_numpy(engine.hidden).to(self.model.W.dtype)
        torch_loss, _ = self.model.loss(
            torch.from_numpy(inputs).long(), torch.from_numpy(targets).long(), state, reduction
        )
        torch_loss.backward()
        grads = {}
        for name, param in self.model.named_parameters():
            assert param.grad is not None, "every parameter enters the loss"
            grads[name] = relative_difference(manual_grads[name], param.grad.numpy())
        loss = relative_difference(np.asarray(manual_loss), torch_loss.detach().numpy())
        return Agreement(loss, grads)

    def measure_forward_mode(self, inputs: np.ndarray, targets: np.ndarray) -> Agreement:
        """--grad rtrl: RTRL by hand against forward-mode autograd, on the same weights, state and influence."""
        import torch

        from manual import rtrl
        from torchref import forward

        engine = self.engine
        assert engine.hidden is not None
        influence = engine.carried_influence(len(inputs))
        reduction = engine.loss_reduction
        manual_loss, manual_grads, _, _ = rtrl.chunk(
            engine.params, inputs, targets, engine.hidden, influence, engine.recurrence, reduction
        )
        with torch.no_grad():
            for name, param in self.model.named_parameters():
                param.copy_(torch.from_numpy(engine.params[name]))
        parts = engine.hidden.shape[1]
        function = forward.loss_function(
            self.model,
            torch.from_numpy(inputs).long(),
            torch.from_numpy(targets).long(),
            torch.from_numpy(engine.hidden),
            {name: torch.from_numpy(torch_layout(M, parts)) for name, M in influence.items()},
            reduction,
        )
        at = forward.params_of(self.model)
        torch_grads, _ = forward.forward_gradient(function, at)
        with torch.no_grad():
            torch_loss, _ = function(at)
        grads = {name: relative_difference(manual_grads[name], torch_grads[name].numpy()) for name in manual_grads}
        return Agreement(relative_difference(np.asarray(manual_loss), torch_loss.numpy()), grads)


def torch_layout(influence: np.ndarray, parts: int) -> np.ndarray:
    """RTRL's influence (B, P*H, *shape) as torchref.forward's d state / d theta, (1, P, B, H, *shape)."""
    streams, rows = influence.shape[:2]
    by_part = influence.reshape(streams, parts, rows // parts, *influence.shape[2:])
    return np.ascontiguousarray(np.swapaxes(by_part, 0, 1))[None]
