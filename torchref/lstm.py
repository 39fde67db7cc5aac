"""LSTM cell for the torch twin: one time step, written out; autograd differentiates it.

Gates in PyTorch's order i, f, g, o; s is the cell state (c is the output bias):
    [ai, af, ag, ao] = b + U x_t + W h_{t-1}
    s_t = sigmoid(af) * s_{t-1} + sigmoid(ai) * tanh(ag),   h_t = sigmoid(ao) * tanh(s_t)
"""

from __future__ import annotations

import torch

# GATES and STATE_PARTS: a deliberate copy of manual/lstm.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 4
STATE_PARTS = 2  # state[0] = h, state[1] = s


def step(x_proj: torch.Tensor, W: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_proj (B, 4H) = b + U x_t; W (4H, H); state (2, B, H). Returns (h_t (B, H), state_t)."""
    h, s = state
    i, f, g, o = (x_proj + h @ W.T).chunk(GATES, dim=1)
    s = torch.sigmoid(f) * s + torch.sigmoid(i) * torch.tanh(g)
    h = torch.sigmoid(o) * torch.tanh(s)
    return h, torch.stack([h, s])
