"""char-rnn's rule for a run that has diverged, and the check that keeps it out of every checkpoint."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from compare.cli.errors import TrainingFailed

if TYPE_CHECKING:
    from compare.model.engines import Engine
    from compare.training.run import Run


class TrainingDiverged(TrainingFailed):
    """The loss became NaN/Inf or exceeded three times its initial value (char-rnn's rule)."""


def diverged(loss: float, initial_loss: float) -> bool:
    """NaN or Inf, or more than three times the loss training started from."""
    return not math.isfinite(loss) or loss > 3 * initial_loss


def divergence(run: Run, impl: str, what: str, loss: float, step: int) -> TrainingDiverged:
    """The error for a diverged run: which step, which loss, what was kept, what to change."""
    initial_loss = run.initial_loss
    size = "is not finite" if not math.isfinite(loss) else f"is above 3 x the initial loss {initial_loss:.4g}"
    return TrainingDiverged(
        f"training diverged at step {step}: {impl} {what} {loss:.4g} {size}; "
        f"{run.kept_checkpoint(impl)}; start again with a lower --lr (now {run.config.lr:g}) "
        f"or --clip (now {run.config.clip:g})"
    )


def check_before_saving(run: Run, engine: Engine, step: int) -> None:
    """Refuse to save weights that have diverged.

    A checkpoint holds the weights *after* this step's update, which no training loss has
    measured yet. The loss the next step will see (its batch, from the hidden state it will
    start from) measures them, so the update that blows up is never saved over the last
    good checkpoint.
    """
    next_index = step % len(run.batches)  # the batch of step + 1
    state = engine.export_state().hidden if next_index else None  # a new epoch starts from zeros
    if state is None:
        state = engine.zero_state(run.config.batch_size)
    loss, _ = engine.eval_loss(*run.batches.get_batch(next_index), state)
    if diverged(loss, run.initial_loss):
        raise divergence(run, engine.name, "loss after this step's update", loss, step)
