"""Vanilla RNN cell for the torch twin: one time step, written out; autograd differentiates it.

    a_t = b + W h_{t-1} + U x_t,   h_t = tanh(a_t)
"""
from __future__ import annotations

import torch

GATES = 1
STATE_PARTS = 1  # state[0] = h


def step(pre: torch.Tensor, W: torch.Tensor, state: torch.Tensor):
    """pre (B, H) = b + U x_t; W (H, H); state (1, B, H). Returns (h_t (B, H), state_t)."""
    h = torch.tanh(pre + state[0] @ W.T)  # h_t = tanh(b + W h_{t-1} + U x_t)
    return h, h.unsqueeze(0)
