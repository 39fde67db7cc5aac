"""Checkpointed BPTT by autograd: ``torch.utils.checkpoint`` over the same segments as manual/checkpointed.py.

Each segment [t0, t0 + k) runs under ``checkpoint(..., use_reentrant=False)``: autograd keeps the segment's
inputs (its carried-in state) and nothing it saved inside; the backward pass reruns the segment's forward to
get them back. The segments' losses are summed per character, then divided once by the T*B characters
for the mean, so the gradient is the plain loss's (within rounding: the sum is grouped by segment).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from torchref.model import CharRNN


def segment_loss(
    model: CharRNN, inputs: torch.Tensor, targets: torch.Tensor, state0: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The summed cross-entropy of one segment (B, k), and its last state (L, P, B, H)."""
    logits, state_last = model(inputs, state0)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction="sum"), state_last


def loss(
    model: CharRNN,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state0: torch.Tensor,
    segment_length: int,
    reduction: str = "mean",
) -> tuple[torch.Tensor, torch.Tensor]:
    """CharRNN.loss with every k-step segment checkpointed. inputs, targets: (B, T). Returns (loss, state_T)."""
    if segment_length < 1:
        raise ValueError(f"segment_length must be at least 1, got {segment_length}")
    total, state = None, state0
    for t0 in range(0, inputs.shape[1], segment_length):
        t1 = t0 + segment_length
        part, state = checkpoint(segment_loss, model, inputs[:, t0:t1], targets[:, t0:t1], state, use_reentrant=False)
        total = part if total is None else total + part
    assert total is not None  # T >= 1: at least one segment
    return (total / inputs.numel() if reduction == "mean" else total), state
