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
    W_T = np.ascontiguousarray(W.T)  # W^T copied row-major once: BLAS multiplies by it faster than by a transposed view
    for t in range(steps):
        # h_t = tanh(b + W h_{t-1} + U x_t), written straight into its row of ``hidden``.
        # np.dot is the same product as @, with less overhead per call: this loop runs T
        # times per chunk, and with one stream its calls, not its arithmetic, are the cost.
        np.tanh(pre[t] + np.dot(hidden[t], W_T), out=hidden[t + 1])
    return hidden[1:], hidden[-1][None], RNNCache(hidden, W)


def recurrence_backward(d_hidden: np.ndarray, cache: RNNCache):
    """d_hidden: (T, B, H) dL/dh_t from the layer above (the output layer, or U of the next layer).
    Returns (d_pre (T, B, H) = dL/da_t, d_W (H, H))."""
    steps, streams, size = d_hidden.shape
    tanh_grad = np.square(cache.hidden[1:])  # (T, B, H): h_t = tanh(a_t), so tanh'(a_t) = 1 - h_t^2,
    np.subtract(1, tanh_grad, out=tanh_grad)  # for every t at once, in one buffer
    d_pre = np.empty_like(d_hidden)  # dL/da_t, filled backwards in time
    d_h = d_hidden[-1]  # dL/dh_T: the last h_t feeds only the layer above (a_{T+1} is the next chunk's)
    for t in reversed(range(steps)):
        np.multiply(d_h, tanh_grad[t], out=d_pre[t])  # da_t = dh_t * tanh'(a_t)
        if t > 0:  # dh_0 is not needed: h_0 came from the previous chunk, which truncated BPTT leaves alone
            d_h = d_hidden[t - 1] + np.dot(d_pre[t], cache.W)  # h_{t-1} feeds o_{t-1} and a_t = ... + W h_{t-1}
    rows = steps * streams
    d_W = d_pre.reshape(rows, size).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_pre, d_W
