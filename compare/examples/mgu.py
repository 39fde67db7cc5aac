"""Minimal gated unit (Zhou et al. 2016): a cell plugged in with ``--cell compare.examples.mgu``.

One module holds both implementations (docs/cells.md#writing-a-cell): the NumPy recurrence
with its hand-written backward (recurrence_forward, recurrence_backward) and the one torch
step that autograd differentiates (step); the optional trace and step_backward are for the per-step
diagnosis and for gradflow. Gates f, n stacked in the rows of U (2H, in),
W (2H, H), b (2H,); x_proj_t = b + U x_t (the caller's input projection) splits into [x_f, x_n]_t:

    f_t = sigmoid(b_f + W_f h_{t-1} + U_f x_t)
    n_t = tanh(b_n + W_n (f_t * h_{t-1}) + U_n x_t)
    h_t = (1 - f_t) * h_{t-1} + f_t * n_t

The carried state has one part: state[0] = h, (B, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from manual.activations import sigmoid

GATES = 2
GATE_NAMES = ("f", "n")  # optional: how gradcheck --diagnose names the gate blocks
STATE_PARTS = 1  # state[0] = h


@dataclass
class MGUCache:
    gates: np.ndarray  # (T, B, 2H) activated f, n
    gated: np.ndarray  # (T, B, H) f_t * h_{t-1}, which W_n multiplies
    hidden: np.ndarray  # (T + 1, B, H) h_0 .. h_T
    W: np.ndarray  # (2H, H)


def recurrence_forward(
    x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, MGUCache]:
    """x_proj (T, B, 2H), W (2H, H), state0 (1, B, H) -> (h_1..h_T (T, B, H), state_T (1, B, H), cache)."""
    steps, streams, _ = x_proj.shape
    size = W.shape[1]
    W_f, W_n = np.split(W, GATES, axis=0)  # (H, H) each
    dtype = np.result_type(x_proj, W, state0)
    gates = np.empty((steps, streams, GATES * size), dtype=dtype)
    gated = np.empty((steps, streams, size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    hidden[0] = state0[0]
    for t in range(steps):
        x_f, x_n = np.split(x_proj[t], GATES, axis=1)
        f = sigmoid(x_f + hidden[t] @ W_f.T)  # f_t = sigmoid(b_f + U_f x_t + W_f h_{t-1})
        gated[t] = f * hidden[t]  # f_t * h_{t-1}
        n = np.tanh(x_n + gated[t] @ W_n.T)  # n_t = tanh(b_n + U_n x_t + W_n (f_t * h_{t-1}))
        gates[t] = np.concatenate([f, n], axis=1)
        hidden[t + 1] = (1 - f) * hidden[t] + f * n  # h_t = (1 - f_t) h_{t-1} + f_t n_t
    return hidden[1:], hidden[-1][None], MGUCache(gates, gated, hidden, W)


def recurrence_backward(
    d_hidden: np.ndarray, cache: MGUCache, trace: dict[str, np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """d_hidden (T, B, H) dL/dh_t from above -> (d_x_proj (T, B, 2H) dL/dx_proj_t, d_W (2H, H))."""
    steps, streams, size = d_hidden.shape
    W_f, W_n = np.split(cache.W, GATES, axis=0)
    d_x_proj = np.empty_like(cache.gates)  # dL/d(b + U x_t) per gate = dL/d(pre-activation), filled backwards
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none
    if trace is not None:  # docs/cells.md#per-step-gradients-trace: what gradcheck --diagnose compares per step
        trace["d_h"] = np.zeros(d_hidden.shape, dtype=d_x_proj.dtype)
        trace["d_carry"] = np.zeros((steps, STATE_PARTS, *d_hidden.shape[1:]), dtype=d_x_proj.dtype)
    for t in reversed(range(steps)):
        f, n = np.split(cache.gates[t], GATES, axis=1)
        h_prev = cache.hidden[t]  # h_{t-1}
        d_h = d_hidden[t] + d_h_next  # dh_t = from the output (layer above) + from the next step
        if trace is not None:  # optional: dh_t as used, and the carry into h_t that step t + 1 sent
            trace["d_h"][t], trace["d_carry"][t, 0] = d_h, d_h_next
        d_n_pre = d_h * f * (1 - n**2)  # h_t = ... + f_t n_t, n_t = tanh(n_pre_t): tanh' = 1 - n_t^2
        d_gated = d_n_pre @ W_n  # n_pre_t = ... + W_n (f_t h_{t-1}): d(f_t h_{t-1}) = W_n^T dn_pre_t
        d_f = d_h * (n - h_prev) + d_gated * h_prev  # f_t enters h_t directly and through f_t h_{t-1}
        d_f_pre = d_f * f * (1 - f)  # f_t = sigmoid(f_pre_t): sigmoid' = f (1 - f)
        d_x_proj[t] = np.concatenate([d_f_pre, d_n_pre], axis=1)
        # dh_{t-1}: directly (1 - f_t), through f_t h_{t-1} into n_pre, and through W_f h_{t-1} into f_pre
        d_h_next = d_h * (1 - f) + d_gated * f + d_f_pre @ W_f
    rows = steps * streams
    d_f_rows, d_n_rows = np.split(d_x_proj.reshape(rows, -1), GATES, axis=1)
    d_W_f = d_f_rows.T @ cache.hidden[:-1].reshape(rows, size)  # dW_f = sum_t df_pre_t h_{t-1}^T
    d_W_n = d_n_rows.T @ cache.gated.reshape(rows, size)  # dW_n = sum_t dn_pre_t (f_t h_{t-1})^T
    return d_x_proj, np.concatenate([d_W_f, d_W_n], axis=0)


def step_backward(d_state: np.ndarray, t: int, cache: MGUCache) -> np.ndarray:
    """Optional, for gradflow: d_state (1, B, H) dL/dh_t, all of it; t in 1..T -> dL/dh_{t-1} through step t alone."""
    f, n = np.split(cache.gates[t - 1], GATES, axis=1)  # f_t, n_t
    W_f, W_n = np.split(cache.W, GATES, axis=0)
    h_prev, d_h = cache.hidden[t - 1], d_state[0]  # h_{t-1}, dh_t
    d_n_pre = d_h * f * (1 - n**2)
    d_gated = d_n_pre @ W_n
    d_f_pre = (d_h * (n - h_prev) + d_gated * h_prev) * f * (1 - f)
    return (d_h * (1 - f) + d_gated * f + d_f_pre @ W_f)[None]  # the three ways h_{t-1} enters step t, as above


def step(x_proj: torch.Tensor, W: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x_proj (B, 2H) = b + U x_t; W (2H, H); state (1, B, H). Returns (h_t (B, H), state_t (1, B, H))."""
    h = state[0]
    x_f, x_n = x_proj.chunk(GATES, dim=1)
    W_f, W_n = W.chunk(GATES, dim=0)
    f = torch.sigmoid(x_f + h @ W_f.T)
    n = torch.tanh(x_n + (f * h) @ W_n.T)
    h = (1 - f) * h + f * n
    return h, h.unsqueeze(0)
