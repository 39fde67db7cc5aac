"""The character model as a ``torch.nn.Module``: input lookup, stacked cells, output.

The same equations as ``manual.model``, with the cell written out as one time step
(``torchref.rnn``, ``torchref.lstm``, ``torchref.gru``) and looped over time here;
autograd differentiates it. Never ``nn.RNN``/``nn.LSTM``/``nn.GRU``: the point is to let
autograd differentiate the same hand-written cell that ``manual`` differentiates by hand.

Parameters keep the names of the NumPy dict they are built from: U, W, b for layer 1,
U2, W2, b2 for layer 2, ..., and V, c for the output.
"""

from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from torchref import gru, lstm, rnn

# CELLS, layer_param_names and count_layers are deliberate copies of their twins in
# manual/model.py: manual and torchref import neither each other, so each keeps its own;
# tests/test_twin_helpers.py checks that the two agree.
CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}


def cell_module(cell: str | ModuleType) -> ModuleType:
    """A built-in cell by name, or a cell module the caller resolved (docs/cells.md#writing-a-cell)."""
    return CELLS[cell] if isinstance(cell, str) else cell


def layer_param_names(layer: int) -> dict[str, str]:
    """{'U': 'U', 'W': 'W', 'b': 'b'} for layer 0, {'U': 'U2', ...} for layer 1 (the second)."""
    suffix = "" if layer == 0 else str(layer + 1)
    return {name: name + suffix for name in ("U", "W", "b")}


def count_layers(params: dict[str, np.ndarray]) -> int:
    """L, the number of recurrent layers: one W, W2, ... per layer."""
    return sum(1 for name in params if name.startswith("W"))


class CharRNN(nn.Module):
    """params: dict of NumPy arrays (copied, never shared); cell: 'rnn', 'lstm', 'gru' or a cell module."""

    # Registered by name in __init__ (setattr), with U, b and any deeper layer's U2, W2, b2; declared
    # here so that the type checker knows the ones read as attributes. Annotations only: no class attributes.
    W: nn.Parameter
    V: nn.Parameter
    c: nn.Parameter

    def __init__(
        self,
        params: dict[str, np.ndarray],
        cell: str | ModuleType = "rnn",
        dtype: torch.dtype = torch.float64,
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        self.cell = cell
        self.num_layers = count_layers(params)
        for name, value in params.items():
            tensor = torch.from_numpy(np.asarray(value)).clone()
            setattr(self, name, nn.Parameter(tensor.to(dtype=dtype, device=device)))

    @property
    def hidden_size(self) -> int:
        return self.W.shape[1]

    def zero_state(self, batch_size: int) -> torch.Tensor:
        """(L, P, B, H) zeros, P = 2 for lstm (h and cell state), else 1."""
        parts = cell_module(self.cell).STATE_PARTS
        return self.W.new_zeros(self.num_layers, parts, batch_size, self.hidden_size)

    def forward(self, inputs: torch.Tensor, state0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """inputs: (B, T) long; state0: (L, P, B, H). Returns (logits (B, T, V), state_T (L, P, B, H))."""
        step = cell_module(self.cell).step
        below: torch.Tensor | None = None  # the layer below's hidden states; None under layer 1 (tokens)
        states: list[torch.Tensor] = []
        for layer in range(self.num_layers):
            names = layer_param_names(layer)
            U, W, b = (getattr(self, names[key]) for key in ("U", "W", "b"))
            if below is None:
                x_proj = F.embedding(inputs, U.T) + b  # (B, T, G*H): b + U x_t, a column lookup of U
            else:
                x_proj = below @ U.T + b  # (B, T, G*H): b_l + U_l h_t^{l-1}
            state, hidden_states = state0[layer], []
            # unbind hands out the T steps' (B, G*H) slices at once; its backward stacks their T
            # gradients once, where x_proj[:, t] would scatter each into a zero (B, T, G*H) tensor.
            for x_proj_t in x_proj.unbind(dim=1):
                h, state = step(x_proj_t, W, state)
                hidden_states.append(h)
            below = torch.stack(hidden_states, dim=1)  # (B, T, H)
            states.append(state)
        assert below is not None  # L >= 1 layers ran: below holds the top layer's hidden states
        logits = below @ self.V.T + self.c  # (B, T, V): o_t = c + V h_t
        return logits, torch.stack(states)

    def loss(
        self, inputs: torch.Tensor, targets: torch.Tensor, state0: torch.Tensor, reduction: str = "mean"
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy: the mean in nats per character, or with reduction='sum' the sum over
        the B*T characters (min-char-rnn's loss). Returns (loss, state_T)."""
        logits, state_last = self(inputs, state0)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)
        return loss, state_last

    def numpy_params(self) -> dict[str, np.ndarray]:
        """float64 NumPy copies of every parameter, by name."""
        return {name: param.detach().cpu().double().numpy().copy() for name, param in self.named_parameters()}
