"""One training-step interface over both implementations.

``ManualEngine`` drives ``manual`` (hand-written gradients, hand-written AdaGrad);
``TorchEngine`` drives ``torchref`` (autograd, ``torch.optim.Adagrad``). ``optimizer`` swaps
AdaGrad for RMSProp (char-rnn's: ``manual.RMSprop``, ``torch.optim.RMSprop``), Adam
(``manual.Adam``, ``torch.optim.Adam``) or Hessian-free (Martens 2010: ``manual.HessianFree`` on the
hand-written Gauss-Newton product, ``torchref.HessianFree`` on torch.func's), whose step also needs the
minibatch itself: ``hessian_free_problem`` in each engine gives it that. Both take the
same NumPy parameter dict and the same integer batches, clip element-wise after
backward and before the update (then, with ``clip_norm``, by the global norm, as
``torch.nn.utils.clip_grad_norm_``), and carry the hidden state from chunk to chunk.

Two options shape the update, both defaulting to PyTorch's conventions: ``loss_reduction``
'mean' (the gradient of the mean over the T*B characters) or 'sum' (of their sum, min-char-rnn's
objective: T*B times larger, so the clip bites as it does there), and ``eps_placement``
'outside' (sqrt(G) + eps, ``torch.optim.Adagrad``) or 'inside' (sqrt(G + eps), min-char-rnn's;
torch: ``torchref.AdagradEpsInside``). Whatever the step minimizes, StepStats.loss and
``eval_loss`` report the mean: nats per character.

A third, ``gradient``, picks how the gradient is computed (docs/forward.md): 'bptt' (reverse mode,
truncated at each chunk's start: the state is carried, its dependence on the weights is not) or
'rtrl' (forward mode: manual by RTRL, ``manual.rtrl``; torch by ``torch.func.jacfwd``, ``torchref.forward``),
which carries the influence d state / d(U, W, b) with the state, so no chunk boundary cuts the gradient.
The influence starts at zero with the state (each epoch, each resume): it is not checkpointed.

``segment_length`` k > 0 trains by checkpointed BPTT (docs/memory.md): the forward keeps the state every
k steps and the backward recomputes each segment (manual.checkpointed; torchref.checkpointed, which runs
torch.utils.checkpoint); the gradients are the plain ones within rounding. 0: plain BPTT.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, SupportsFloat

import numpy as np
import torch

import manual
import torchref
from compare.model.cells import CellPair, cell_pair
from compare.model.state import OPTIMIZERS, EngineState
from manual import checkpointed as manual_checkpointed
from manual import hessian, rtrl
from manual.lr_schedule import LRSchedule, ScheduledRate
from torchref import checkpointed as torch_checkpointed
from torchref import forward, second

IMPLEMENTATIONS = ("manual", "torch")
GRADIENTS = ("bptt", "rtrl")  # reverse mode, truncated at each chunk; forward mode, carried (docs/forward.md)
NUMPY_DTYPES = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}
ADAGRAD_EPS = 1e-10  # torch.optim.Adagrad's default, added outside the square root
# What torch calls each statistic EngineState carries, per optimizer
TORCH_STATE_KEYS = {
    "adagrad": {"accumulators": "sum"},
    "rmsprop": {"accumulators": "square_avg"},
    "adam": {"accumulators": "exp_avg_sq", "moments": "exp_avg"},
}
# HF's step asks of the minibatch: L(theta) of the loss minimized, v -> G v at theta, and L at the parameters
# as they are when called (after the update): same inputs, targets and carried state
HessianFreeProblem = tuple[float, Callable[[dict[str, Any]], dict[str, Any]], Callable[[], float]]


@dataclass
class StepStats:
    """What one training step reports."""

    loss: float  # mean cross-entropy of the batch, nats per character, before the update (also under 'sum')
    grad_norm: float  # global L2 norm of all five gradients of the loss minimized (mean or sum), before clipping
    clipped: int  # how many gradient entries the clip changed


class Engine(Protocol):
    """What the training loop, validation, sampling and checkpoints ask of an engine.

    ManualEngine and TorchEngine below, and compare.training.parallel.DataParallelEngine
    around either one. Every array crosses as NumPy (float64 where a docstring says so), whatever
    the engine computes in.
    """

    name: str

    def reset_hidden(self, batch_size: int) -> None: ...

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats: ...

    def zero_state(self, batch_size: int) -> np.ndarray: ...

    def eval_loss(self, inputs: np.ndarray, targets: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]: ...

    def step_logits(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]: ...

    def numpy_params(self) -> dict[str, np.ndarray]: ...

    def export_state(self) -> EngineState: ...

    def load_state(self, state: EngineState) -> None: ...


class GradientAverager(Protocol):
    """The hook between backward and clipping in a data-parallel run: compare.training.parallel.DataParallel."""

    def average_arrays(self, grads: dict[str, np.ndarray], loss: SupportsFloat) -> float: ...

    def average_tensors(self, grads: list[torch.Tensor], loss: SupportsFloat) -> float: ...


def global_norm(grads: dict[str, np.ndarray]) -> float:
    """The 2-norm of every entry of ``grads`` together."""
    # np.vdot(g, g) is the sum of squares in one BLAS call (float32 sums in float32, as torch's norm does),
    # one per parameter, summed in float64: one call over the whole buffer would round differently
    return float(np.sqrt(sum(float(np.vdot(g, g).real) for g in grads.values())))


class ManualEngine:
    name = "manual"

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        clip: float,
        dtype: str = "float32",
        cell: str | CellPair = "rnn",
        eps: float = ADAGRAD_EPS,
        *,
        loss_reduction: str = "mean",
        eps_placement: str = "outside",
        gradient: str = "bptt",
        segment_length: int = 0,
        optimizer: str = "adagrad",
        clip_norm: float = 0.0,
        lr_schedule: LRSchedule | None = None,
    ) -> None:
        self.gradient = gradient
        self.influence: dict[str, np.ndarray] | None = None  # --grad rtrl: d hidden / d(U, W, b), carried
        self.dtype = NUMPY_DTYPES[dtype]
        self.segment_length = segment_length  # checkpointed BPTT every k steps; 0: plain
        self.dtype_name = dtype
        self.pair = cell_pair(cell)  # resolved once: the train command hands the pair down
        self.cell = self.pair.name
        self.loss_reduction = loss_reduction
        self.recurrence = self.pair.manual  # the module manual.forward runs: built-in or plugged in
        # parameters, gradients and accumulators each in one flat buffer: the norm, the clip and the
        # update are whole-buffer passes (manual.flat), the same numbers in fewer calls
        self.params = manual.flat.FlatArrays.copy_of(params, self.dtype)
        self.grads = self.params.zeros_like()  # backward writes into it, every step
        self.optimizer: manual.Adagrad | manual.RMSprop | manual.Adam | manual.HessianFree
        if optimizer == "adagrad":
            self.optimizer = manual.Adagrad(self.params, lr=lr, eps=eps, eps_placement=eps_placement)
        elif optimizer == "rmsprop":
            self.optimizer = manual.RMSprop(self.params, lr=lr)
        elif optimizer == "adam":
            self.optimizer = manual.Adam(self.params, lr=lr)
        elif optimizer == "hf":
            check_hessian_free(gradient, segment_length, lr_schedule)
            self.optimizer = manual.HessianFree(self.params, lr=lr)
        else:
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")
        self.updates = 0  # optimizer steps taken; torch's optimizer counts them as 'step'
        # the learning rate of the next update, by hand (None: --lr throughout)
        self.rate = None if lr_schedule is None or lr_schedule.kind == "constant" else ScheduledRate(lr_schedule, lr)
        self.clip = clip
        self.clip_norm = clip_norm  # > 0: scale the gradients down to this global 2-norm (after the clip)
        self.hidden: np.ndarray | None = None  # (L, P, B, H) state carried from chunk to chunk
        # data-parallel runs: averages over the ranks (compare.training.parallel)
        self.gradient_averager: GradientAverager | None = None

    def zero_state(self, batch_size: int) -> np.ndarray:
        """(L, P, B, H) float64 zeros: where every epoch, validation pass and sample starts."""
        hidden_size = self.params["W"].shape[1]
        return manual.zero_state(self.recurrence, manual.model.count_layers(self.params), batch_size, hidden_size)

    def reset_hidden(self, batch_size: int) -> None:
        self.hidden = self.zero_state(batch_size).astype(self.dtype)
        self.influence = None  # a fresh state is a constant

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        assert self.hidden is not None, "reset_hidden() or load_state() comes before the first train_step()"
        self.pair.check_sizes(self.recurrence, inputs.shape, self.params["W"].shape[1], self.dtype_name)
        state0 = self.hidden
        loss, grads, self.hidden = self.loss_and_grads(inputs, targets)
        mean_loss: SupportsFloat = loss if self.loss_reduction == "mean" else loss / inputs.size  # per character
        if self.gradient_averager is not None:  # before clipping: every rank clips the same averaged gradient
            mean_loss = self.gradient_averager.average_arrays(grads, mean_loss)
        problem = self.hessian_free_problem(inputs, targets, state0) if self.hessian_free else None
        return self.clip_and_update(mean_loss, grads, problem)

    @property
    def hessian_free(self) -> bool:
        return isinstance(self.optimizer, manual.HessianFree)

    def hessian_free_problem(self, inputs: np.ndarray, targets: np.ndarray, state0: np.ndarray) -> HessianFreeProblem:
        """HF's view of the minibatch (see HessianFreeProblem): G v from the forward cache at theta
        (manual.hessian), run again here: one forward, against HF's dozen products with G."""
        # the cell by name: manual.hessian's R-passes are keyed by the built-in cells' names
        loss, cache = manual.forward(self.params, inputs, targets, state0, self.cell, self.loss_reduction)

        def loss_after() -> float:
            return float(manual.forward(self.params, inputs, targets, state0, self.cell, self.loss_reduction)[0])

        return float(loss), partial(hessian.gauss_newton_vector_product, cache), loss_after

    def loss_and_grads(
        self, inputs: np.ndarray, targets: np.ndarray
    ) -> tuple[np.number, dict[str, np.ndarray], np.ndarray]:
        """(loss, gradients, state_T) from the carried state: by RTRL (--grad rtrl), or plain or checkpointed BPTT."""
        assert self.hidden is not None
        if self.gradient == "rtrl":
            loss, grads, state_last, self.influence = rtrl.chunk(
                self.params,
                inputs,
                targets,
                self.hidden,
                self.carried_influence(len(inputs)),
                self.recurrence,
                self.loss_reduction,
            )
            return loss, grads, state_last
        if self.segment_length:
            loss, state_last, segments = manual_checkpointed.forward(
                self.params, inputs, targets, self.hidden, self.recurrence, self.loss_reduction, self.segment_length
            )
            return loss, manual_checkpointed.backward(segments), state_last
        loss, cache = manual.forward(self.params, inputs, targets, self.hidden, self.recurrence, self.loss_reduction)
        return loss, manual.backward(cache, out=self.grads), cache.state_last

    def carried_influence(self, batch_size: int) -> dict[str, np.ndarray]:
        """--grad rtrl: the influence the next chunk starts from (zero after a reset)."""
        if self.influence is None:
            self.influence = rtrl.zero_influence(self.params, self.recurrence, batch_size)
        return self.influence

    def clip_and_update(
        self, loss: SupportsFloat, grads: dict[str, np.ndarray], problem: HessianFreeProblem | None = None
    ) -> StepStats:
        """Measure and clip ``grads`` in place, then take one optimizer step.

        grads: a dict like the parameters, or (from train_step) ``self.grads``, whose one flat buffer
        makes the clip and the update a few calls in all instead of a few per parameter.
        problem: the minibatch, for Hessian-free's step (None for the other optimizers).
        """
        grad_norm = global_norm(grads)
        clipped = 0
        if self.clip > 0:
            clip_targets = list(grads.values())
            if isinstance(grads, manual.flat.FlatArrays) and grads.in_buffer():
                clip_targets = [grads.buffer]
            for grad in clip_targets:
                # Two cheap reductions decide; the count and the clip run only when an entry is out of range.
                if grad.max() > self.clip or grad.min() < -self.clip:
                    clipped += int(np.count_nonzero(np.abs(grad) > self.clip))
                    np.clip(grad, -self.clip, self.clip, out=grad)
        if self.clip_norm > 0:  # after the element-wise clip, as calling clip_grad_norm_ after it does
            manual.flat.clip_to_norm(grads, self.clip_norm, global_norm(grads) if clipped else grad_norm)
        if isinstance(self.optimizer, manual.HessianFree):
            assert problem is not None, "Hessian-free's step needs the minibatch"
            self.optimizer.step(grads, *problem)
        else:
            self.optimizer.step(grads)
        self.updates += 1
        if self.rate is not None:
            self.optimizer.lr = self.rate.step()
        return StepStats(float(loss), grad_norm, clipped)

    def eval_loss(self, inputs: np.ndarray, targets: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        """Loss without an update. state (L, P, B, H) float64. Returns (loss, state_T float64)."""
        self.pair.check_sizes(self.recurrence, inputs.shape, self.params["W"].shape[1], self.dtype_name)
        loss, cache = manual.forward(self.params, inputs, targets, state.astype(self.dtype), self.recurrence)
        return float(loss), cache.state_last.astype(np.float64)

    def step_logits(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """tokens (B,), state (L, P, B, H) float64 -> (logits (B, V) float64, state float64)."""
        self.pair.check_sizes(self.recurrence, np.shape(tokens), self.params["W"].shape[1], self.dtype_name)
        logits, state_next = manual.step(self.params, tokens, state.astype(self.dtype), self.recurrence)
        return logits.astype(np.float64), state_next.astype(np.float64)

    def numpy_params(self) -> dict[str, np.ndarray]:
        return {name: value.astype(np.float64) for name, value in self.params.items()}

    def export_state(self) -> EngineState:
        """float64 copies of everything training continues from (see compare.model.checkpoint)."""
        hidden = None if self.hidden is None else self.hidden.astype(np.float64)
        if isinstance(self.optimizer, manual.HessianFree):
            return EngineState(self.numpy_params(), {}, self.updates, hidden, damping=self.optimizer.damping)
        accumulators = {name: value.astype(np.float64) for name, value in self.optimizer.accumulators.items()}
        moments = None
        if isinstance(self.optimizer, manual.Adam):
            moments = {name: value.astype(np.float64) for name, value in self.optimizer.moments.items()}
        return EngineState(self.numpy_params(), accumulators, self.updates, hidden, moments)

    def load_state(self, state: EngineState) -> None:
        """Continue from ``state``, whichever implementation exported it."""
        for name in self.params:
            self.params[name][...] = state.params[name]  # in place: the optimizer holds this same dict
        if isinstance(self.optimizer, manual.HessianFree):
            assert state.damping is not None, "a Hessian-free run's state holds its damping"
            self.optimizer.damping = state.damping
        else:
            for name in self.params:
                self.optimizer.accumulators[name][...] = state.accumulators[name]
        if isinstance(self.optimizer, manual.Adam):
            assert state.moments is not None, "an Adam run's state holds its first moments"
            for name in self.params:
                self.optimizer.moments[name][...] = state.moments[name]
            self.optimizer.steps = state.updates  # t of the bias correction
        self.updates = state.updates
        if self.rate is not None:
            self.optimizer.lr = self.rate.restart_at(state.updates)
        self.hidden = None if state.hidden is None else np.array(state.hidden, dtype=self.dtype)
        self.influence = None  # not checkpointed: the resumed state is a constant


class TorchEngine:
    name = "torch"

    def __init__(
        self,
        params: dict[str, np.ndarray],
        lr: float,
        clip: float,
        dtype: str = "float32",
        cell: str | CellPair = "rnn",
        eps: float = ADAGRAD_EPS,
        device: str = "cpu",
        *,
        loss_reduction: str = "mean",
        eps_placement: str = "outside",
        gradient: str = "bptt",
        segment_length: int = 0,
        optimizer: str = "adagrad",
        clip_norm: float = 0.0,
        lr_schedule: LRSchedule | None = None,
    ) -> None:
        self.gradient = gradient
        self.influence: dict[str, torch.Tensor] | None = None  # --grad rtrl: d hidden / d(U, W, b), carried
        self.device = torch.device(device)
        self.segment_length = segment_length  # checkpointed BPTT every k steps; 0: plain
        self.pair = cell_pair(cell)  # resolved once: the train command hands the pair down
        self.cell, self.dtype_name = self.pair.name, dtype
        self.twin = self.pair.torch  # the module whose step the model runs: built-in or plugged in
        self.model = torchref.CharRNN(params, cell=self.twin, dtype=TORCH_DTYPES[dtype], device=self.device)
        self.loss_reduction = loss_reduction
        self.optimizer_name = optimizer
        self.optimizer: torch.optim.Optimizer | torchref.HessianFree
        if optimizer == "hf":
            check_hessian_free(gradient, segment_length, lr_schedule)
            self.optimizer = torchref.HessianFree(dict(self.model.named_parameters()), lr=lr)
        elif optimizer == "rmsprop":  # char-rnn's decay and eps (torch's defaults are 0.99 and 1e-8)
            self.optimizer = torch.optim.RMSprop(
                self.model.parameters(), lr=lr, alpha=manual.rmsprop.ALPHA, eps=manual.rmsprop.EPS, foreach=True
            )
        elif optimizer == "adam":  # torch's betas and eps
            self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, foreach=True)
        elif optimizer != "adagrad":
            raise ValueError(f"unknown optimizer {optimizer!r}; choose from {OPTIMIZERS}")
        elif eps_placement == "inside":
            self.optimizer = torchref.AdagradEpsInside(self.model.parameters(), lr=lr, eps=eps)
        elif eps_placement == "outside":
            # foreach: one call updates every parameter (the same arithmetic as the per-tensor loop,
            # which is torch's default on the CPU), so small models do not pay five times the overhead.
            self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=lr, eps=eps, foreach=True)
        else:
            raise ValueError(f"unknown eps placement {eps_placement!r}; choose from ('outside', 'inside')")
        self.clip = clip
        self.clip_norm = clip_norm  # > 0: scale the gradients down to this global 2-norm (after the clip)
        self.lr_schedule = lr_schedule
        self.updates = 0  # optimizer steps taken (torch.optim's optimizers count them too, as 'step')
        self.scheduler = None if self.hessian_free else torch_scheduler(self.torch_optimizer, lr_schedule)
        self.hidden: torch.Tensor | None = None  # (L, P, B, H) state carried from chunk to chunk
        # data-parallel runs: averages over the ranks (compare.training.parallel)
        self.gradient_averager: GradientAverager | None = None

    def _tensor(self, array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
        return torch.as_tensor(array, dtype=dtype, device=self.device)

    @property
    def hessian_free(self) -> bool:
        return isinstance(self.optimizer, torchref.HessianFree)

    @property
    def torch_optimizer(self) -> torch.optim.Optimizer:
        """The torch.optim optimizer of every --optimizer but hf."""
        assert isinstance(self.optimizer, torch.optim.Optimizer), "Hessian-free is not a torch.optim optimizer"
        return self.optimizer

    def hessian_free_problem(
        self, inputs: torch.Tensor, targets: torch.Tensor, state0: torch.Tensor, loss: float
    ) -> HessianFreeProblem:
        """HF's view of the minibatch (see HessianFreeProblem): G v by torch.func (torchref.second)."""

        def gauss_newton(vector: dict[str, Any]) -> dict[str, Any]:
            return second.gauss_newton_vector_product(self.model, inputs, targets, state0, vector, self.loss_reduction)

        @torch.no_grad()
        def loss_after() -> float:
            return float(self.model.loss(inputs, targets, state0, self.loss_reduction)[0])

        return loss, gauss_newton, loss_after

    def zero_state(self, batch_size: int) -> np.ndarray:
        """(L, P, B, H) float64 zeros: where every epoch, validation pass and sample starts."""
        return self.model.zero_state(batch_size).double().cpu().numpy()

    def reset_hidden(self, batch_size: int) -> None:
        self.hidden = self.model.zero_state(batch_size)
        self.influence = None  # a fresh state is a constant

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        assert self.hidden is not None, "reset_hidden() or load_state() comes before the first train_step()"
        self.pair.check_sizes(self.twin, inputs.shape, self.model.hidden_size, self.dtype_name)
        self.model.zero_grad(set_to_none=True)
        state0 = self.hidden
        batch = (self._tensor(inputs, torch.long), self._tensor(targets, torch.long))
        if self.gradient == "rtrl":
            loss, state_last = self.forward_mode_gradient(*batch)
        elif self.segment_length:
            loss, state_last = torch_checkpointed.loss(
                self.model, *batch, self.hidden, self.segment_length, self.loss_reduction
            )
            loss.backward()
        else:
            loss, state_last = self.model.loss(*batch, self.hidden, self.loss_reduction)
            loss.backward()
        grads = filled_grads(self.model)
        mean_loss: SupportsFloat = loss.detach() if self.loss_reduction == "mean" else loss.detach() / inputs.size
        if self.gradient_averager is not None:  # the same explicit all-reduce as manual (compare.training.parallel)
            mean_loss = self.gradient_averager.average_tensors(grads, mean_loss)
        grad_norm = float(torch.nn.utils.get_total_norm(grads))
        clipped = 0
        if self.clip > 0:
            for grad in grads:
                # As in ManualEngine: two cheap reductions decide, and only a gradient with an entry
                # out of range is counted and clipped (what clip_grad_value_ does to every one).
                if grad.max() > self.clip or grad.min() < -self.clip:
                    clipped += int((grad.abs() > self.clip).sum())
                    grad.clamp_(-self.clip, self.clip)
        if self.clip_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.clip_norm, foreach=True)
        if isinstance(self.optimizer, torchref.HessianFree):
            named_grads = dict(zip(self.optimizer.params, grads, strict=True))  # the parameters' order
            self.optimizer.step(named_grads, *self.hessian_free_problem(*batch, state0, float(loss.detach())))
        else:
            self.optimizer.step()
        self.updates += 1
        if self.scheduler is not None:
            self.scheduler.step()
        self.hidden = state_last.detach()  # truncated BPTT: keep the value, drop the graph
        return StepStats(float(mean_loss), grad_norm, clipped)

    def forward_mode_gradient(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """--grad rtrl: every parameter's .grad by forward mode (jacfwd), the influence carried; (loss, state_T)."""
        assert self.hidden is not None
        function = forward.loss_function(self.model, inputs, targets, self.hidden, self.influence, self.loss_reduction)
        at = forward.params_of(self.model)
        grads, influence = forward.forward_gradient(function, at)
        self.influence = {name: influence[name] for name in rtrl.RECURRENT}  # V and c never reach the state
        for name, param in self.model.named_parameters():
            param.grad = grads[name]
        with torch.no_grad():
            return function(at)

    @torch.no_grad()
    def eval_loss(self, inputs: np.ndarray, targets: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        self.pair.check_sizes(self.twin, inputs.shape, self.model.hidden_size, self.dtype_name)
        state_tensor = self._tensor(state, self.model.W.dtype)
        loss, state_last = self.model.loss(
            self._tensor(inputs, torch.long), self._tensor(targets, torch.long), state_tensor
        )
        return float(loss), state_last.double().cpu().numpy()

    @torch.no_grad()
    def step_logits(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.pair.check_sizes(self.twin, np.shape(tokens), self.model.hidden_size, self.dtype_name)
        inputs = self._tensor(np.asarray(tokens).reshape(-1, 1), torch.long)  # (B,) -> (B, 1)
        logits, state_next = self.model(inputs, self._tensor(state, self.model.W.dtype))
        return logits[:, 0].double().cpu().numpy(), state_next.double().cpu().numpy()

    def numpy_params(self) -> dict[str, np.ndarray]:
        return self.model.numpy_params()

    def export_state(self) -> EngineState:
        """float64 copies of everything training continues from (see compare.model.checkpoint)."""
        named = dict(self.model.named_parameters())
        hidden = None if self.hidden is None else self.hidden.double().cpu().numpy().copy()
        if isinstance(self.optimizer, torchref.HessianFree):
            params = self.model.numpy_params()
            return EngineState(params, {}, self.updates, hidden, damping=self.optimizer.damping)
        statistics: dict[str, dict[str, np.ndarray]] = {}
        for kind, key in TORCH_STATE_KEYS[self.optimizer_name].items():
            statistics[kind] = {name: self.optimizer_state(param, key) for name, param in named.items()}
        updates = int(self.optimizer.state[named["U"]].get("step", 0))  # the same count for every parameter
        params = self.model.numpy_params()
        return EngineState(params, statistics["accumulators"], updates, hidden, statistics.get("moments"))

    def optimizer_state(self, param: torch.nn.Parameter, key: str) -> np.ndarray:
        """torch's ``state[param][key]`` as float64 NumPy; zeros before RMSProp's or Adam's first step creates it."""
        state = self.torch_optimizer.state[param]
        if key not in state:
            return np.zeros(param.shape)
        return state[key].double().cpu().numpy().copy()

    @torch.no_grad()
    def load_state(self, state: EngineState) -> None:
        """Continue from ``state``, whichever implementation exported it."""
        statistics = {"accumulators": state.accumulators, "moments": state.moments}
        for name, param in self.model.named_parameters():
            param.copy_(self._tensor(state.params[name]))  # copy_ casts to the model's dtype
            if isinstance(self.optimizer, torchref.HessianFree):
                continue
            torch_state = self.optimizer.state[param]
            if self.optimizer_name != "adagrad":  # torch creates RMSProp's and Adam's state at their first step
                # as torch's own _init_group makes it, so that it skips that: a 0-d float 'step' (float64 only when
                # that is torch's default dtype: float32 counts exactly to 2^24 steps, as torch's own does)
                scalar_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
                torch_state["step"] = torch.tensor(0.0, dtype=scalar_dtype)
            for kind, key in TORCH_STATE_KEYS[self.optimizer_name].items():
                values = statistics[kind]
                assert values is not None, f"a {self.optimizer_name} run's state holds its {kind}"
                torch_state[key] = self._tensor(values[name], param.dtype).clone()
            torch_state["step"].fill_(state.updates)
        if isinstance(self.optimizer, torchref.HessianFree):
            assert state.damping is not None, "a Hessian-free run's state holds its damping"
            self.optimizer.damping = state.damping
        self.updates = state.updates
        self.influence = None  # not checkpointed: the resumed state is a constant
        if self.scheduler is not None:  # torch's own rates, replayed from the start as training reached them
            for group in self.torch_optimizer.param_groups:
                group["lr"] = group["initial_lr"]
            scheduler = torch_scheduler(self.torch_optimizer, self.lr_schedule)
            assert scheduler is not None  # the schedule is not constant: there was one
            with warnings.catch_warnings():  # the replay steps the scheduler without the optimizer, on purpose
                warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler")
                for _ in range(state.updates):
                    scheduler.step()
            self.scheduler = scheduler
        if state.hidden is None:
            self.hidden = None
        else:
            self.hidden = self._tensor(state.hidden, self.model.W.dtype).clone()  # never share the caller's array


def check_hessian_free(gradient: str, segment_length: int, lr_schedule: LRSchedule | None) -> None:
    """Hessian-free's G v is written on plain BPTT's forward cache, and its step size is lr times CG's d."""
    if gradient != "bptt" or segment_length:
        raise ValueError("Hessian-free needs plain BPTT (gradient 'bptt', segment_length 0)")
    if lr_schedule is not None and lr_schedule.kind != "constant":
        raise ValueError("Hessian-free takes a constant lr (its damping adapts the step)")


def torch_scheduler(
    optimizer: torch.optim.Optimizer, schedule: LRSchedule | None
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """torch's scheduler for ``schedule`` (stepped once per update), or None for a constant rate."""
    if schedule is None or schedule.kind == "constant":
        return None
    if schedule.kind == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=schedule.every, gamma=schedule.gamma)
    if schedule.kind == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=schedule.horizon)
    raise ValueError(f"unknown schedule {schedule.kind!r}")


def filled_grads(model: torch.nn.Module) -> list[torch.Tensor]:
    """Every parameter's gradient, in ``model.parameters()`` order, as backward has just left them.

    Every parameter enters the loss, so backward gives each one a gradient.
    """
    grads = []
    for param in model.parameters():
        assert param.grad is not None, "backward left a parameter without a gradient"
        grads.append(param.grad)
    return grads


def make_engine(
    impl: str,
    params: dict[str, np.ndarray],
    lr: float,
    clip: float,
    dtype: str,
    cell: str | CellPair = "rnn",
    eps: float = ADAGRAD_EPS,
    device: str = "cpu",
    *,
    loss_reduction: str = "mean",
    eps_placement: str = "outside",
    gradient: str = "bptt",
    segment_length: int = 0,
    optimizer: str = "adagrad",
    clip_norm: float = 0.0,
    lr_schedule: LRSchedule | None = None,
) -> ManualEngine | TorchEngine:
    """A fresh engine for ``impl`` ('manual' or 'torch') starting from copies of ``params``.

    ``device`` places the torch implementation ('cpu', 'cuda', 'cuda:1'); manual always runs on the CPU.
    ``loss_reduction`` ('mean', 'sum'), ``eps_placement`` ('outside', 'inside'; AdaGrad's) and ``optimizer``
    ('adagrad', 'rmsprop', 'adam', 'hf'; ``eps`` is AdaGrad's, the others take their fixed defaults): see the module
    docstring. ``clip_norm`` > 0 scales the (clipped) gradients down to that global 2-norm, as
    ``torch.nn.utils.clip_grad_norm_``. ``lr_schedule`` (counted in updates) changes the rate after each update,
    by hand (manual.lr_schedule) or by ``torch.optim.lr_scheduler``.
    ``gradient`` ('bptt', 'rtrl') and ``segment_length`` (checkpointed BPTT; 0: plain): see the module docstring.
    """
    options: dict[str, Any] = {
        "loss_reduction": loss_reduction,
        "eps_placement": eps_placement,
        "gradient": gradient,
        "segment_length": segment_length,
        "optimizer": optimizer,
        "clip_norm": clip_norm,
        "lr_schedule": lr_schedule,
    }
    if impl == "manual":
        return ManualEngine(params, lr, clip, dtype, cell, eps, **options)
    if impl == "torch":
        return TorchEngine(params, lr, clip, dtype, cell, eps, device, **options)
    raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLEMENTATIONS}")
