"""Vanilla RNN cell: recurrence forward and hand-derived backward (BPTT), over a whole chunk.

    a_t = b + W h_{t-1} + U x_t        (the caller passes b + U x_t for every t: ``pre``)
    h_t = tanh(a_t)

U (H, in), W (H, H), b (H,): one gate block. The carried state has one part: state[0] = h.
``manual.model`` puts the input lookup, the output layer and the loss around it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GATES = 1
STATE_PARTS = 1


@dataclass
class RNNCache:
    hidden: np.ndarray  # (T + 1, B, H): hidden[0] is h_0, hidden[t] is h_t
    W: np.ndarray


def recurrence_forward(pre: np.ndarray, W: np.ndarray, state0: np.ndarray):
    """pre: (T, B, H) = b + U x_t; W: (H, H); state0: (1, B, H).
    Returns (hidden (T, B, H), state_T (1, B, H), cache)."""
    steps, streams, size = pre.shape
    hidden = np.empty((steps + 1, streams, size), dtype=np.result_type(pre, W, state0))
    hidden[0] = state0[0]
    for t in range(steps):
        hidden[t + 1] = np.tanh(pre[t] + hidden[t] @ W.T)  # h_t = tanh(b + W h_{t-1} + U x_t)
    return hidden[1:], hidden[-1][None], RNNCache(hidden, W)


def recurrence_backward(d_hidden: np.ndarray, cache: RNNCache):
    """d_hidden: (T, B, H) dL/dh_t from the layer above (the output layer, or U of the next layer).
    Returns (d_pre (T, B, H) = dL/da_t, d_W (H, H))."""
    steps, streams, size = d_hidden.shape
    d_pre = np.empty_like(d_hidden)  # dL/da_t, filled backwards in time
    d_h_next = np.zeros((streams, size), dtype=d_hidden.dtype)
    for t in reversed(range(steps)):
        d_h = d_hidden[t] + d_h_next  # h_t feeds o_t (or the layer above) and a_{t+1}
        d_pre[t] = d_h * (1 - cache.hidden[t + 1] ** 2)  # h_t = tanh(a_t): tanh' = 1 - h_t^2
        d_h_next = d_pre[t] @ cache.W  # a_t = ... + W h_{t-1}  =>  dh_{t-1} += W^T da_t
    rows = steps * streams
    d_W = d_pre.reshape(rows, size).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_pre, d_W
