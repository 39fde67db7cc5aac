"""Vanilla RNN cell for the torch twin: one time step, written out; autograd differentiates it.

a_t = b + W h_{t-1} + U x_t,   h_t = tanh(a_t)
"""

from __future__ import annotations

import torch

# GATES and STATE_PARTS: a deliberate copy of manual/rnn.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 1
STATE_PARTS = 1  # state[0] = h


def step(x_proj: torch.Tensor, W: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_proj (B, H) = b + U x_t; W (H, H); state (1, B, H). Returns (h_t (B, H), state_t)."""
    h_prev = state.squeeze(0)  # (1, B, H) -> (B, H): a view both ways, where state[0]'s backward fills a zero tensor
    h = torch.tanh(torch.addmm(x_proj, h_prev, W.T))  # h_t = tanh(b + W h_{t-1} + U x_t); addmm(x, h, W^T) = x + h W^T
    return h, h.unsqueeze(0)
