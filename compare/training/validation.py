"""The validation loss: every held-out chunk, the hidden state carried from chunk to chunk."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from compare.data.corpus import StreamBatches

if TYPE_CHECKING:
    from compare.model.checkpoint import RunProgress
    from compare.model.engines import Engine


def validation_batches(val_tokens: np.ndarray, batch_size: int, seq_length: int) -> StreamBatches:
    """Validation chunks laid out like training, shrunk when the held-out text is short."""
    streams = max(1, min(batch_size, (len(val_tokens) - 1) // (seq_length + 1)))
    return StreamBatches(val_tokens, streams, min(seq_length, len(val_tokens) - 1))


def estimate_loss(engine: Engine, batches: StreamBatches) -> float:
    """Mean loss over every validation chunk, hidden state carried from chunk to chunk."""
    h = engine.zero_state(batches.inputs.shape[0])
    losses = []
    for index in range(len(batches)):
        loss, h = engine.eval_loss(*batches.get_batch(index), h)
        losses.append(loss)
    return float(np.mean(losses))


def validate(engine: Engine, batches: StreamBatches, progress: RunProgress) -> bool:
    """Measure the validation loss into ``progress`` (a RunProgress); True if it is the best so far."""
    progress.val_loss = estimate_loss(engine, batches)
    improved = progress.best_val_loss is None or progress.val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss = progress.val_loss
    return improved
