"""Gradient flow through time: how far back the loss at the last step of a chunk still reaches.

For a chunk of T steps and the loss at its last step alone,

    L_T = sum over the B streams of -log p_T[y_T]

the curve is g_k = ||dL_T / dh_{T-k}|| for the lags k = 0..T (h_0, k = T, is the chunk's
initial state; for an LSTM, h only: the cell state s carries the gradient between h's). Each
dL_T/dh_{T-k} is the whole derivative, through every path from h_{T-k} to L_T, and ||.|| the
Frobenius norm over the (B, H) streams and units. Two computations of the same curve:

    manual    the hand-written recursion dstate_{t-1} = step_backward(dstate_t, t), started at
              dstate_T = [V^T (p_T - onehot(y_T)), 0] (``manual.rnn/lstm/gru.step_backward``)
    autograd  torchref's cell stepped over the chunk, retain_grad() on every h_t, one backward of L_T
              (``autograd_flow``: torch is imported there, so training imports this module freely)

With stacked layers it is the top layer's h: the layers below do not depend on it, so its
gradient flows back through the top layer's recurrence alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

import manual
from compare.model.cells import manual_cell, resolve_cell

THRESHOLD = 1e-3  # the lag reported is where g_k first falls below THRESHOLD * g_0


@dataclass
class Chunk:
    """One chunk to measure on: the parameters, the batch and the state it starts from."""

    params: dict[str, np.ndarray]  # in the dtype to measure in
    inputs: np.ndarray  # (B, T) int token ids
    targets: np.ndarray  # (B, T) int token ids, inputs shifted by one
    state0: np.ndarray  # (L, P, B, H) h_0 (and s_0), in the params' dtype
    cell: str


def last_step_hidden_grad(probs_last: np.ndarray, targets_last: np.ndarray, V: np.ndarray) -> np.ndarray:
    """dL_T/dh_T through the output only: V^T (p_T - onehot(y_T)) per stream.

    probs_last: (B, V) p_T; targets_last: (B,) y_T; V: (V, H). Returns (B, H).
    """
    d_logits = probs_last.copy()  # L_T = -sum_s log p_T[y_T]: do_T = p_T - onehot(y_T), per stream
    d_logits[np.arange(len(targets_last)), targets_last] -= 1
    return d_logits @ V


def manual_flow(chunk: Chunk) -> np.ndarray:
    """g_k for k = 0..T by the hand-written recursion, (T + 1,) float64."""
    cell = manual_cell(chunk.cell)  # a built-in cell, or one plugged in that has step_backward (flow_problem)
    _, cache = manual.forward(chunk.params, chunk.inputs, chunk.targets, chunk.state0, cell)
    streams, steps = chunk.inputs.shape
    top = cache.layers[-1].recurrence  # the top layer: the only one h^L's gradient flows through
    step_backward = cell.step_backward
    d_state = np.zeros_like(chunk.state0[-1])  # (P, B, H): dL_T/dstate_T, nothing through a step T + 1
    d_state[0] = last_step_hidden_grad(cache.probs[(steps - 1) * streams :], chunk.targets[:, -1], chunk.params["V"])
    norms = np.empty(steps + 1)
    for lag in range(steps + 1):
        norms[lag] = np.linalg.norm(d_state[0].astype(np.float64))  # g_k = ||dL_T/dh_{T-k}||
        if lag < steps:
            d_state = step_backward(d_state, steps - lag, top)  # through step T - k: dstate_{T-k-1}
    return norms


def autograd_flow(chunk: Chunk) -> np.ndarray:
    """g_k for k = 0..T by autograd through torchref's cell, (T + 1,) float64.

    torchref's own cell, stepped over the chunk as ``torchref.CharRNN.forward`` steps it, but
    with retain_grad() on every h_t of the top layer, so that one backward of L_T leaves
    dL_T/dh_t on each; h_0's gradient is that of the initial state, a leaf.
    """
    import torch  # imported here, not above: compare.train imports this module for the hand-written side
    import torch.nn.functional as F

    import torchref
    from compare.model.engines import TORCH_DTYPES

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


def lag_below(norms: np.ndarray, threshold: float = THRESHOLD) -> int | None:
    """The first lag k with g_k < threshold * g_0; None if the curve stays above it to k = T."""
    below = np.flatnonzero(norms < threshold * norms[0])
    return int(below[0]) if below.size else None


def max_relative_difference(first: np.ndarray, second: np.ndarray) -> float:
    """max_k |first_k - second_k| / |second_k|; lags where both are exactly 0 count as 0, where only second is, inf."""
    gap = np.abs(first - second)
    with np.errstate(divide="ignore", invalid="ignore"):
        relative = np.where(gap == 0, 0.0, gap / np.abs(second))
    return float(relative.max())


class ScalarLogger(Protocol):
    """What log_gradient_flow writes through: compare.training.logger.Logger."""

    def scalar(self, name: str, tag: str, value: float, step: int) -> None: ...


def logged_lags(steps: int) -> list[int]:
    """The lags logged as gradflow/norm_lag_k for a chunk of ``steps``: 0, 1, 2, 5, 10, 20, 50, ... up to T."""
    lags, scale = [], 1
    while scale <= steps:
        lags += [lag for lag in (scale, 2 * scale, 5 * scale) if lag <= steps]
        scale *= 10
    return [0, *lags]


def log_gradient_flow(
    logger: ScalarLogger,
    name: str,
    params: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    cell: str,
    step: int,
) -> None:
    """The hand-written curve of this batch, from a zero state in float64, as TensorBoard scalars.

    params: float64 NumPy parameters (an engine's numpy_params()); inputs, targets: (B, T).
    gradflow/lag_below_1e-3 is the lag of ``lag_below``, T + 1 when the curve stays above the
    threshold over the whole chunk; gradflow/norm_lag_k is g_k / g_0 at a few lags.
    """
    streams, steps = inputs.shape
    layers, hidden_size = manual.model.count_layers(params), params["W"].shape[1]
    state0 = manual.zero_state(manual_cell(cell), layers, streams, hidden_size)
    norms = manual_flow(Chunk(params, inputs, targets, state0, cell))
    lag = lag_below(norms)
    logger.scalar(name, "gradflow/lag_below_1e-3", float(steps + 1 if lag is None else lag), step)
    for k in logged_lags(steps):
        logger.scalar(name, f"gradflow/norm_lag_{k}", float(norms[k] / norms[0]), step)
