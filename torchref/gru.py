"""GRU cell for the torch twin (PyTorch's variant: the reset gate scales W_n h_{t-1}).

r = sigmoid(b_r + U_r x + W_r h),  z = sigmoid(b_z + U_z x + W_z h)
n = tanh(b_n + U_n x + r * (W_n h)),  h_t = (1 - z) * n + z * h_{t-1}
"""

from __future__ import annotations

import torch

# GATES and STATE_PARTS: a deliberate copy of manual/gru.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 3
STATE_PARTS = 1  # state[0] = h


def step(x_proj: torch.Tensor, W: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_proj (B, 3H) = b + U x_t; W (3H, H); state (1, B, H). Returns (h_t (B, H), state_t)."""
    h = state[0]
    x_r, x_z, x_n = x_proj.chunk(GATES, dim=1)
    h_r, h_z, h_n = (h @ W.T).chunk(GATES, dim=1)
    r = torch.sigmoid(x_r + h_r)
    z = torch.sigmoid(x_z + h_z)
    n = torch.tanh(x_n + r * h_n)
    h = (1 - z) * n + z * h
    return h, h.unsqueeze(0)
