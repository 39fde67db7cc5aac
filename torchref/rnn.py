"""Vanilla character RNN as a ``torch.nn.Module``, written out as a loop over time.

    a_t = b + W h_{t-1} + U x_t,   h_t = tanh(a_t),   o_t = c + V h_t,   p_t = softmax(o_t)

Parameters are named U (H, V), W (H, H), V (V, H), b (H,), c (V,), exactly as in
``manual``. Never ``nn.RNN`` here: the point is to let autograd differentiate the
same hand-written cell that ``manual`` differentiates by hand.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PARAM_NAMES = ("U", "W", "V", "b", "c")


class CharRNN(nn.Module):
    """params: dict of NumPy arrays (copied, never shared); dtype and device of the tensors."""

    def __init__(self, params: dict, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"):
        super().__init__()
        for name in PARAM_NAMES:
            value = torch.from_numpy(np.asarray(params[name])).clone()
            setattr(self, name, nn.Parameter(value.to(dtype=dtype, device=device)))

    @property
    def hidden_size(self) -> int:
        return self.W.shape[0]

    def forward(self, inputs: torch.Tensor, h0: torch.Tensor):
        """inputs: (B, T) long; h0: (B, H). Returns (logits (B, T, V), h_T (B, H))."""
        input_proj = F.embedding(inputs, self.U.T)  # (B, T, H): U x_t, a column lookup of U
        h = h0
        hidden_states = []
        for t in range(inputs.shape[1]):
            h = torch.tanh(self.b + h @ self.W.T + input_proj[:, t])  # h_t = tanh(b + W h_{t-1} + U x_t)
            hidden_states.append(h)
        hidden = torch.stack(hidden_states, dim=1)  # (B, T, H)
        logits = hidden @ self.V.T + self.c  # (B, T, V): o_t = c + V h_t
        return logits, h

    def loss(self, inputs: torch.Tensor, targets: torch.Tensor, h0: torch.Tensor):
        """Mean cross-entropy in nats per character. Returns (loss, h_T)."""
        logits, h_last = self(inputs, h0)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
        return loss, h_last

    def numpy_params(self) -> dict:
        """float64 NumPy copies of U, W, V, b, c."""
        return {name: getattr(self, name).detach().cpu().double().numpy().copy() for name in PARAM_NAMES}
