"""GRU cell: recurrence forward and hand-derived backward, over a whole chunk.

PyTorch's variant (the reset gate multiplies W_n h_{t-1}, after the product; Cho et al.
2014 apply it before), with no separate recurrent bias. Gates r, z, n stacked in the
rows of U (3H, in), W (3H, H), b (3H,):

    r_t = sigmoid(b_r + W_r h_{t-1} + U_r x_t)
    z_t = sigmoid(b_z + W_z h_{t-1} + U_z x_t)
    n_t = tanh(b_n + U_n x_t + r_t * (W_n h_{t-1}))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

It maps onto ``torch.nn.GRU`` with weight_ih = U, weight_hh = W, bias_ih = b, bias_hh = 0.
The carried state has one part: state[0] = h, (B, H).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual.activations import sigmoid

GATES = 3
STATE_PARTS = 1


@dataclass
class GRUCache:
    gates: np.ndarray  # (T, B, 3H) activated r, z, n
    recurrent_n: np.ndarray  # (T, B, H) W_n h_{t-1}, which r_t multiplies
    hidden: np.ndarray  # (T + 1, B, H) h_0 .. h_T
    W: np.ndarray


def recurrence_forward(input_proj: np.ndarray, W: np.ndarray, state0: np.ndarray):
    """input_proj: (T, B, 3H) = b + U x_t; W: (3H, H); state0: (1, B, H).
    Returns (hidden (T, B, H), state_T (1, B, H), cache)."""
    steps, streams, _ = input_proj.shape
    size = W.shape[1]
    dtype = np.result_type(input_proj, W, state0)
    gates = np.empty((steps, streams, GATES * size), dtype=dtype)
    recurrent_n = np.empty((steps, streams, size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    hidden[0] = state0[0]
    for t in range(steps):
        recurrent = hidden[t] @ W.T  # (B, 3H): W h_{t-1} for all three gates
        x_r, x_z, x_n = np.split(input_proj[t], GATES, axis=1)
        h_r, h_z, recurrent_n[t] = np.split(recurrent, GATES, axis=1)
        r = sigmoid(x_r + h_r)
        z = sigmoid(x_z + h_z)
        n = np.tanh(x_n + r * recurrent_n[t])
        gates[t] = np.concatenate([r, z, n], axis=1)
        hidden[t + 1] = (1 - z) * n + z * hidden[t]  # h_t = (1 - z_t) n_t + z_t h_{t-1}
    return hidden[1:], hidden[-1][None], GRUCache(gates, recurrent_n, hidden, W)


def recurrence_backward(d_hidden: np.ndarray, cache: GRUCache):
    """d_hidden: (T, B, H) dL/dh_t from the layers above.
    Returns (d_input_proj (T, B, 3H), d_W (3H, H))."""
    steps, streams, size = d_hidden.shape
    d_input = np.empty_like(cache.gates)  # dL/d(b + U x_t), per gate
    d_recurrent = np.empty_like(cache.gates)  # dL/d(W h_{t-1}), per gate
    d_h_next = np.zeros((streams, size), dtype=d_input.dtype)
    for t in reversed(range(steps)):
        r, z, n = np.split(cache.gates[t], GATES, axis=1)
        h_prev = cache.hidden[t]
        d_h = d_hidden[t] + d_h_next  # h_t feeds the layer above and step t + 1
        d_n = d_h * (1 - z)  # h_t = (1 - z_t) n_t + z_t h_{t-1}
        d_z = d_h * (h_prev - n)
        d_n_pre = d_n * (1 - n ** 2)  # n_t = tanh(x_n + r_t W_n h): tanh' = 1 - n^2
        d_r = d_n_pre * cache.recurrent_n[t]
        d_r_pre = d_r * r * (1 - r)  # sigmoid' = s (1 - s)
        d_z_pre = d_z * z * (1 - z)
        d_input[t] = np.concatenate([d_r_pre, d_z_pre, d_n_pre], axis=1)
        d_recurrent[t] = np.concatenate([d_r_pre, d_z_pre, d_n_pre * r], axis=1)  # r_t scales W_n h
        d_h_next = d_h * z + d_recurrent[t] @ cache.W  # direct path z_t h_{t-1}, and through W
    rows = steps * streams
    d_W = d_recurrent.reshape(rows, -1).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t d_rec_t h_{t-1}^T
    return d_input, d_W
