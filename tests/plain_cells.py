"""The LSTM and GRU recurrences in their plain form: one expression per equation, with temporaries.

``manual/lstm.py`` and ``manual/gru.py`` compute the same operations in place, on whole gate rows,
with fewer NumPy calls per step (docs/speed.md). tests/test_plain_cells.py asserts that the two give
the same numbers bit for bit, so this readable form stays the definition the fast one must match.
"""

from __future__ import annotations

import numpy as np

from manual.activations import sigmoid
from manual.gru import GRUCache
from manual.lstm import LSTMCache

LSTM_GATES = 4
GRU_GATES = 3


def lstm_forward(x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """h_t and s_t for t = 1..T, from x_proj_t = b + U x_t and the carried state.

    x_proj:  (T, B, 4H)  b + U x_t
    W:       (4H, H)
    state0:  (2, B, H)   h_0, s_0
    Returns (hidden, state_T, cache):
    hidden:  (T, B, H)   h_1 .. h_T
    state_T: (2, B, H)   h_T, s_T, the next chunk's state0
    cache:   LSTMCache
    """
    steps, streams, _ = x_proj.shape
    size = W.shape[1]
    dtype = np.result_type(x_proj, W, state0)
    gates = np.empty((steps, streams, LSTM_GATES * size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    cells = np.empty((steps + 1, streams, size), dtype=dtype)
    tanh_cells = np.empty((steps, streams, size), dtype=dtype)
    hidden[0], cells[0] = state0
    for t in range(steps):
        a = x_proj[t] + hidden[t] @ W.T  # (B, 4H): a_t = b + W h_{t-1} + U x_t
        i, f, g, o = np.split(a, LSTM_GATES, axis=1)
        gates[t] = np.concatenate([sigmoid(i), sigmoid(f), np.tanh(g), sigmoid(o)], axis=1)
        i, f, g, o = np.split(gates[t], LSTM_GATES, axis=1)
        cells[t + 1] = f * cells[t] + i * g  # s_t = f_t s_{t-1} + i_t g_t
        tanh_cells[t] = np.tanh(cells[t + 1])
        hidden[t + 1] = o * tanh_cells[t]  # h_t = o_t tanh(s_t)
    state_last = np.stack([hidden[-1], cells[-1]])
    return hidden[1:], state_last, LSTMCache(gates, hidden, cells, tanh_cells, W)


def lstm_backward(d_hidden: np.ndarray, cache: LSTMCache) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx_proj_t and dL/dW, from dL/dh_t of the layer above.

    d_hidden: (T, B, H)   dL/dh_t from the layer above (the output layer, or U of the next layer)
    cache:    LSTMCache
    Returns (d_x_proj, d_W):
    d_x_proj: (T, B, 4H)  dL/dx_proj_t = dL/da_t, since a_t = x_proj_t + W h_{t-1}
    d_W:      (4H, H)
    """
    steps, streams, size = d_hidden.shape
    d_x_proj = np.empty_like(cache.gates)  # d_x_proj[t] = da_t = dL/d[ai, af, ag, ao]_t, filled backwards in time
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none, the next chunk's
    d_s_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into s_T from step T + 1: none, the next chunk's
    for t in reversed(range(steps)):
        i, f, g, o = np.split(cache.gates[t], LSTM_GATES, axis=1)  # i_t, f_t, g_t, o_t
        d_h = d_hidden[t] + d_h_next  # dh_t = from the output (layer above) + from the next step
        d_o = d_h * cache.tanh_cells[t]  # h_t = o_t tanh(s_t): do_t = dh_t tanh(s_t)
        d_s = d_s_next + d_h * o * (1 - cache.tanh_cells[t] ** 2)  # ds_t = from the next step + dh_t o_t tanh'(s_t)
        d_f = d_s * cache.cells[t]  # s_t = f_t s_{t-1} + i_t g_t: df_t = ds_t s_{t-1}
        d_i = d_s * g  # di_t = ds_t g_t
        d_g = d_s * i  # dg_t = ds_t i_t
        d_s_next = d_s * f  # ds_{t-1} from step t: ds_t f_t
        d_x_proj[t] = np.concatenate(
            [
                d_i * i * (1 - i),
                d_f * f * (1 - f),  # dai, daf: sigmoid' = s (1 - s)
                d_g * (1 - g**2),
                d_o * o * (1 - o),
            ],
            axis=1,
        )  # dag: tanh' = 1 - tanh^2; dao
        d_h_next = d_x_proj[t] @ cache.W  # a_t = ... + W h_{t-1}: dh_{t-1} gets W^T da_t
    rows = steps * streams
    d_W = d_x_proj.reshape(rows, -1).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_x_proj, d_W


def gru_forward(x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray) -> tuple[np.ndarray, np.ndarray, GRUCache]:
    """h_t for t = 1..T, from x_proj_t = b + U x_t and the carried state.

    x_proj:  (T, B, 3H)  b + U x_t
    W:       (3H, H)
    state0:  (1, B, H)   h_0
    Returns (hidden, state_T, cache):
    hidden:  (T, B, H)   h_1 .. h_T
    state_T: (1, B, H)   h_T, the next chunk's state0
    cache:   GRUCache
    """
    steps, streams, _ = x_proj.shape
    size = W.shape[1]
    dtype = np.result_type(x_proj, W, state0)
    gates = np.empty((steps, streams, GRU_GATES * size), dtype=dtype)
    recurrent_n = np.empty((steps, streams, size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    hidden[0] = state0[0]
    for t in range(steps):
        recurrent = hidden[t] @ W.T  # (B, 3H): W h_{t-1} for all three gates
        x_r, x_z, x_n = np.split(x_proj[t], GRU_GATES, axis=1)
        h_r, h_z, recurrent_n[t] = np.split(recurrent, GRU_GATES, axis=1)
        r = sigmoid(x_r + h_r)  # r_t = sigmoid(b_r + U_r x_t + W_r h_{t-1})
        z = sigmoid(x_z + h_z)  # z_t = sigmoid(b_z + U_z x_t + W_z h_{t-1})
        n = np.tanh(x_n + r * recurrent_n[t])  # n_t = tanh(b_n + U_n x_t + r_t * (W_n h_{t-1}))
        gates[t] = np.concatenate([r, z, n], axis=1)
        hidden[t + 1] = (1 - z) * n + z * hidden[t]  # h_t = (1 - z_t) n_t + z_t h_{t-1}
    return hidden[1:], hidden[-1][None], GRUCache(gates, recurrent_n, hidden, W)


def gru_backward(d_hidden: np.ndarray, cache: GRUCache) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx_proj_t and dL/dW, from dL/dh_t of the layer above.

    d_hidden: (T, B, H)   dL/dh_t from the layer above (the output layer, or U of the next layer)
    cache:    GRUCache
    Returns (d_x_proj, d_W):
    d_x_proj: (T, B, 3H)  dL/dx_proj_t, per gate
    d_W:      (3H, H)
    """
    steps, streams, size = d_hidden.shape
    d_x_proj = np.empty_like(cache.gates)  # dL/d(b + U x_t), per gate, filled backwards in time
    d_recurrent = np.empty_like(cache.gates)  # dL/d(W h_{t-1}), per gate: differs from d_x_proj in n, by r_t
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none, the next chunk's
    for t in reversed(range(steps)):
        r, z, n = np.split(cache.gates[t], GRU_GATES, axis=1)  # r_t, z_t, n_t
        h_prev = cache.hidden[t]  # h_{t-1}
        d_h = d_hidden[t] + d_h_next  # dh_t = from the output (layer above) + from the next step
        d_n = d_h * (1 - z)  # h_t = (1 - z_t) n_t + z_t h_{t-1}: dn_t = dh_t (1 - z_t)
        d_z = d_h * (h_prev - n)  # dz_t = dh_t (h_{t-1} - n_t)
        d_n_pre = d_n * (1 - n**2)  # n_t = tanh(n_pre_t), n_pre_t = x_n + r_t (W_n h_{t-1}): tanh' = 1 - n_t^2
        d_r = d_n_pre * cache.recurrent_n[t]  # dr_t = dn_pre_t (W_n h_{t-1})
        d_r_pre = d_r * r * (1 - r)  # r_t = sigmoid(r_pre_t), r_pre_t = x_r + W_r h_{t-1}: sigmoid' = s (1 - s)
        d_z_pre = d_z * z * (1 - z)  # z_t = sigmoid(z_pre_t), z_pre_t = x_z + W_z h_{t-1}
        d_x_proj[t] = np.concatenate([d_r_pre, d_z_pre, d_n_pre], axis=1)  # x_r, x_z, x_n enter unscaled
        d_recurrent[t] = np.concatenate([d_r_pre, d_z_pre, d_n_pre * r], axis=1)  # r_t scales W_n h_{t-1}
        d_h_next = d_h * z + d_recurrent[t] @ cache.W  # dh_{t-1} from step t: direct z_t h_{t-1}, and W^T d_rec_t
    rows = steps * streams
    d_W = d_recurrent.reshape(rows, -1).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t d_rec_t h_{t-1}^T
    return d_x_proj, d_W
