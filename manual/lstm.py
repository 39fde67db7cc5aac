"""LSTM cell: recurrence forward and hand-derived backward, over a whole chunk.

Gates in PyTorch's order i, f, g, o, stacked in the rows of U (4H, in), W (4H, H), b (4H,):

    [ai, af, ag, ao]_t = b + W h_{t-1} + U x_t        (the caller passes b + U x_t for all t)
    i_t = sigmoid(ai)   f_t = sigmoid(af)   g_t = tanh(ag)   o_t = sigmoid(ao)
    s_t = f_t * s_{t-1} + i_t * g_t                     s: the cell state (c is the output bias)
    h_t = o_t * tanh(s_t)

The carried state has two parts: state[0] = h, state[1] = s, each (B, H).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual.activations import sigmoid

GATES = 4
STATE_PARTS = 2


@dataclass
class LSTMCache:
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    hidden: np.ndarray  # (T + 1, B, H) h_0 .. h_T
    cells: np.ndarray  # (T + 1, B, H) s_0 .. s_T
    tanh_cells: np.ndarray  # (T, B, H) tanh(s_t)
    W: np.ndarray


def recurrence_forward(input_proj: np.ndarray, W: np.ndarray, state0: np.ndarray):
    """input_proj: (T, B, 4H) = b + U x_t; W: (4H, H); state0: (2, B, H).
    Returns (hidden (T, B, H), state_T (2, B, H), cache)."""
    steps, streams, _ = input_proj.shape
    size = W.shape[1]
    dtype = np.result_type(input_proj, W, state0)
    gates = np.empty((steps, streams, GATES * size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    cells = np.empty((steps + 1, streams, size), dtype=dtype)
    tanh_cells = np.empty((steps, streams, size), dtype=dtype)
    hidden[0], cells[0] = state0
    for t in range(steps):
        pre = input_proj[t] + hidden[t] @ W.T  # (B, 4H): b + W h_{t-1} + U x_t
        i, f, g, o = np.split(pre, GATES, axis=1)
        gates[t] = np.concatenate([sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)], axis=1)
        i, f, g, o = np.split(gates[t], GATES, axis=1)
        cells[t + 1] = f * cells[t] + i * g  # s_t = f_t s_{t-1} + i_t g_t
        tanh_cells[t] = np.tanh(cells[t + 1])
        hidden[t + 1] = o * tanh_cells[t]  # h_t = o_t tanh(s_t)
    state_last = np.stack([hidden[-1], cells[-1]])
    return hidden[1:], state_last, LSTMCache(gates, hidden, cells, tanh_cells, W)


def recurrence_backward(d_hidden: np.ndarray, cache: LSTMCache):
    """d_hidden: (T, B, H) dL/dh_t from the layers above.
    Returns (d_input_proj (T, B, 4H), d_W (4H, H))."""
    steps, streams, size = d_hidden.shape
    d_pre = np.empty_like(cache.gates)  # dL/d[ai, af, ag, ao]_t
    d_h_next = np.zeros((streams, size), dtype=d_pre.dtype)
    d_s_next = np.zeros((streams, size), dtype=d_pre.dtype)
    for t in reversed(range(steps)):
        i, f, g, o = np.split(cache.gates[t], GATES, axis=1)
        d_h = d_hidden[t] + d_h_next  # h_t feeds the layer above and step t + 1
        d_o = d_h * cache.tanh_cells[t]  # h_t = o_t tanh(s_t)
        d_s = d_s_next + d_h * o * (1 - cache.tanh_cells[t] ** 2)
        d_f = d_s * cache.cells[t]  # s_t = f_t s_{t-1} + i_t g_t
        d_i = d_s * g
        d_g = d_s * i
        d_s_next = d_s * f
        d_pre[t] = np.concatenate([d_i * i * (1 - i), d_f * f * (1 - f),  # sigmoid' = s (1 - s)
                                   d_g * (1 - g ** 2), d_o * o * (1 - o)], axis=1)  # tanh' = 1 - tanh^2
        d_h_next = d_pre[t] @ cache.W  # pre_t = ... + W h_{t-1}
    rows = steps * streams
    d_W = d_pre.reshape(rows, -1).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t d_pre_t h_{t-1}^T
    return d_pre, d_W
