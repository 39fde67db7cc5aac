"""The engine a data-parallel rank trains with: whole batches in, this rank's rows trained.

See compare.training.distributed for how the ranks split the batch and average their gradients.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Protocol, SupportsFloat

import numpy as np

if TYPE_CHECKING:
    import torch

    from compare.model.engines import ManualEngine, StepStats, TorchEngine
    from compare.model.state import EngineState


class RankShare(Protocol):
    """compare.training.distributed.DataParallel (which imports this module), as this one uses it:
    this rank's share of the rows, and the engines' gradient averager (compare.model.engines)."""

    world_size: int

    def rows(self, batch_size: int) -> slice: ...

    def gather_rows(self, state: np.ndarray) -> np.ndarray: ...

    def average_arrays(self, grads: dict[str, np.ndarray], loss: SupportsFloat) -> float: ...

    def average_tensors(self, grads: list[torch.Tensor], loss: SupportsFloat) -> float: ...


class DataParallelEngine:
    """An engine as the training loop sees it in a data-parallel run: it is handed whole batches.

    ``train_step`` trains on this rank's rows and reports the whole batch (the loss averaged
    over the ranks, the norm of the averaged gradient). ``export_state`` gathers every rank's
    rows of the hidden state, so a checkpoint holds all B rows; ``load_state`` keeps this
    rank's. Validation, sampling and the check before saving use the wrapped engine on whole
    batches, exactly as in one process.
    """

    def __init__(self, engine: ManualEngine | TorchEngine, parallel: RankShare) -> None:
        self.engine = engine
        self.parallel = parallel
        self.name = engine.name
        engine.gradient_averager = parallel  # the engines' hook between backward and clipping

    def reset_hidden(self, batch_size: int) -> None:
        self.engine.reset_hidden(batch_size // self.parallel.world_size)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        rows = self.parallel.rows(len(inputs))
        return self.engine.train_step(inputs[rows], targets[rows])

    def export_state(self) -> EngineState:
        state = self.engine.export_state()
        if state.hidden is None:  # before the first step, on every rank alike
            return state
        return replace(state, hidden=self.parallel.gather_rows(state.hidden))

    def load_state(self, state: EngineState) -> None:
        hidden = None if state.hidden is None else state.hidden[:, :, self.parallel.rows(state.hidden.shape[2])]
        self.engine.load_state(replace(state, hidden=hidden))

    def zero_state(self, batch_size: int) -> np.ndarray:
        return self.engine.zero_state(batch_size)

    def eval_loss(self, inputs: np.ndarray, targets: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        return self.engine.eval_loss(inputs, targets, state)

    def step_logits(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.step_logits(tokens, state)

    def numpy_params(self) -> dict[str, np.ndarray]:
        return self.engine.numpy_params()
