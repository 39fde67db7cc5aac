"""The autograd side of the gradient-flow curve (compare.gradients.flow has the definitions).

torchref's own cell, stepped over the chunk as ``torchref.CharRNN.forward`` steps it, but
with retain_grad() on every h_t of the top layer, so that one backward of L_T leaves
dL_T/dh_t on each; h_0's gradient is that of the initial state, a leaf.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import torchref
from compare.gradients.flow import Chunk
from compare.model.cells import resolve_cell

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def autograd_flow(chunk: Chunk) -> np.ndarray:
    """g_k for k = 0..T by autograd through torchref's cell, (T + 1,) float64."""
    dtype = TORCH_DTYPES[str(chunk.params["V"].dtype)]
    twin = resolve_cell(chunk.cell).torch
    model = torchref.CharRNN(chunk.params, cell=twin, dtype=dtype)
    step = twin.step
    inputs = torch.from_numpy(chunk.inputs).long()
    state0 = torch.from_numpy(chunk.state0).to(dtype).requires_grad_(True)  # a leaf: its grad is dL_T/dh_0
    below: torch.Tensor | None = None  # the layer below's hidden states; None under layer 1 (tokens)
    hidden: list[torch.Tensor] = []
    for layer in range(model.num_layers):
        names = torchref.model.layer_param_names(layer)
        U, W, b = (getattr(model, names[key]) for key in ("U", "W", "b"))
        x_proj = F.embedding(inputs, U.T) + b if below is None else below @ U.T + b  # (B, T, G*H)
        state, hidden = state0[layer], []
        for x_proj_t in x_proj.unbind(dim=1):
            h, state = step(x_proj_t, W, state)
            h.retain_grad()  # h_t is not a leaf: keep its gradient, dL_T/dh_t
            hidden.append(h)
        below = torch.stack(hidden, dim=1)
    logits_last = hidden[-1] @ model.V.T + model.c  # (B, V): o_T = c + V h_T
    loss = F.cross_entropy(logits_last, torch.from_numpy(chunk.targets[:, -1]).long(), reduction="sum")
    loss.backward()
    assert state0.grad is not None  # state0 requires grad and h_0 enters h_1
    grads = [state0.grad[-1, 0], *(h.grad for h in hidden)]  # dL_T/dh_0 .. dL_T/dh_T
    steps = len(hidden)
    norms = np.empty(steps + 1)
    for lag in range(steps + 1):
        grad = grads[steps - lag]
        assert grad is not None  # every h_t reaches h_T, so backward filled each retained grad
        norms[lag] = float(torch.linalg.norm(grad.double()))
    return norms
