"""What a PyTorch user would train instead: the fused ``nn.RNN`` / ``nn.LSTM`` / ``nn.GRU`` module.

    x_t -> nn.Embedding(V, H) -> nn.RNN|LSTM|GRU(H, H) -> nn.Linear(H, V) -> F.cross_entropy

with ``torch.optim.Adagrad`` (foreach, as TorchEngine), the same element-wise clip, and the
hidden state carried from chunk to chunk. It is a benchmark peer, not a twin: the embedding
feeds the cell through its own input matrix (``weight_ih``, G*H x H), a product over all
T*B rows at once that the hand-written cells replace by a column lookup of U. Its weights
are drawn by PyTorch's own initializers (seeded); speed does not depend on their values.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from compare.model.engines import StepStats

FUSED_MODULES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class FusedModel(nn.Module):
    def __init__(self, cell: str, vocab_size: int, hidden_size: int) -> None:
        super().__init__()
        self.cell = cell
        self.embedding = nn.Embedding(vocab_size, hidden_size)
        self.recurrent = FUSED_MODULES[cell](hidden_size, hidden_size, batch_first=True)
        self.output = nn.Linear(hidden_size, vocab_size)

    def forward(self, inputs: torch.Tensor, state: tuple | torch.Tensor) -> tuple[torch.Tensor, tuple | torch.Tensor]:
        """inputs (B, T) long -> (logits (B, T, V), the state after step T)."""
        hidden, state_last = self.recurrent(self.embedding(inputs), state)
        return self.output(hidden), state_last


class FusedEngine:
    """The benchmark's interface of an engine (reset_hidden, train_step) around FusedModel, float32."""

    name = "fused"

    def __init__(self, cell: str, vocab_size: int, hidden_size: int, lr: float, clip: float, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.model = FusedModel(cell, vocab_size, hidden_size)
        self.optimizer = torch.optim.Adagrad(self.model.parameters(), lr=lr, foreach=True)
        self.clip = clip
        self.state: tuple | torch.Tensor | None = None

    def reset_hidden(self, batch_size: int) -> None:
        zeros = torch.zeros(1, batch_size, self.model.recurrent.hidden_size)
        self.state = (zeros, zeros.clone()) if self.model.cell == "lstm" else zeros

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        assert self.state is not None, "reset_hidden() comes before the first train_step()"
        self.optimizer.zero_grad(set_to_none=True)
        logits, state_last = self.model(torch.from_numpy(inputs).long(), self.state)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), torch.from_numpy(targets).long().reshape(-1))
        loss.backward()
        grads = [param.grad for param in self.model.parameters() if param.grad is not None]
        grad_norm = float(torch.nn.utils.get_total_norm(grads))
        torch.nn.utils.clip_grad_value_(self.model.parameters(), self.clip)
        self.optimizer.step()
        if isinstance(state_last, tuple):  # truncated BPTT: keep the values, drop the graph
            self.state = tuple(part.detach() for part in state_last)
        else:
            self.state = state_last.detach()
        return StepStats(float(loss.detach()), grad_norm, 0)
