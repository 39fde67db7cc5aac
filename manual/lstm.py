"""LSTM cell: recurrence forward and hand-derived backward (BPTT), over a whole chunk.

(``step_backward`` is one step of that backward alone, for the gradient flow of docs/gradflow.md.)

Gates in PyTorch's order i, f, g, o, stacked in the rows of U (4H, in), W (4H, H), b (4H,):

    a_t = [ai, af, ag, ao]_t = b + W h_{t-1} + U x_t    (x_proj_t = b + U x_t: the caller's input projection)
    i_t = sigmoid(ai)   f_t = sigmoid(af)   g_t = tanh(ag)   o_t = sigmoid(ao)
    s_t = f_t * s_{t-1} + i_t * g_t                     s: the cell state (c is the output bias)
    h_t = o_t * tanh(s_t)

x_t is the layer's input (a one-hot token for layer 1, the layer below's h_t above it).
The carried state has two parts: state[0] = h, state[1] = s, each (B, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual.activations import sigmoid_into

# GATES and STATE_PARTS: a deliberate copy of torchref/lstm.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 4
STATE_PARTS = 2  # state[0] = h, state[1] = s


@dataclass
class LSTMCache:
    gates: np.ndarray  # (T, B, 4H) activated i, f, g, o
    hidden: np.ndarray  # (T + 1, B, H) h_0 .. h_T
    cells: np.ndarray  # (T + 1, B, H) s_0 .. s_T
    tanh_cells: np.ndarray  # (T, B, H) tanh(s_t)
    W: np.ndarray  # (4H, H)


def recurrence_forward(
    x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, LSTMCache]:
    """h_t and s_t for t = 1..T, from x_proj_t = b + U x_t and the carried state.

    x_proj:  (T, B, 4H)  b + U x_t
    W:       (4H, H)
    state0:  (2, B, H)   h_0, s_0
    Returns (hidden, state_T, cache):
    hidden:  (T, B, H)   h_1 .. h_T
    state_T: (2, B, H)   h_T, s_T, the next chunk's state0
    cache:   LSTMCache

    Per step: one product for all four gates, the sigmoid over the whole row (g's block is then
    overwritten by its tanh), and every result written in place into the cache.
    """
    steps, streams, _ = x_proj.shape
    size = W.shape[1]
    dtype = np.result_type(x_proj, W, state0)
    gates = np.empty((steps, streams, GATES * size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    cells = np.empty((steps + 1, streams, size), dtype=dtype)
    tanh_cells = np.empty((steps, streams, size), dtype=dtype)
    hidden[0], cells[0] = state0
    a = np.empty((streams, GATES * size), dtype=dtype)  # a_t, one step's pre-activations
    input_times_g = np.empty((streams, size), dtype=dtype)  # i_t g_t
    i, f, g, o = (gates[:, :, k * size : (k + 1) * size] for k in range(GATES))  # (T, B, H) views of the gates
    a_g = a[:, 2 * size : 3 * size]
    for t in range(steps):
        np.dot(hidden[t], W.T, out=a)
        a += x_proj[t]  # (B, 4H): a_t = b + W h_{t-1} + U x_t
        sigmoid_into(a, gates[t])  # i_t, f_t, o_t = sigmoid(ai, af, ao) (and g's block, overwritten next)
        np.tanh(a_g, out=g[t])  # g_t = tanh(ag)
        np.multiply(f[t], cells[t], out=cells[t + 1])
        np.multiply(i[t], g[t], out=input_times_g)
        cells[t + 1] += input_times_g  # s_t = f_t s_{t-1} + i_t g_t
        np.tanh(cells[t + 1], out=tanh_cells[t])
        np.multiply(o[t], tanh_cells[t], out=hidden[t + 1])  # h_t = o_t tanh(s_t)
    state_last = np.stack([hidden[-1], cells[-1]])
    return hidden[1:], state_last, LSTMCache(gates, hidden, cells, tanh_cells, W)


def recurrence_backward(
    d_hidden: np.ndarray,
    cache: LSTMCache,
    trace: dict[str, np.ndarray] | None = None,
    carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx_proj_t and dL/dW, from dL/dh_t of the layer above.

    d_hidden: (T, B, H)   dL/dh_t from the layer above (the output layer, or U of the next layer)
    cache:    LSTMCache
    trace:    optional dict, filled with d_h (T, B, H) and d_carry (T, P, B, H) (docs/cells.md#per-step-gradients-trace)
    carry:    optional (P, B, H), read as dL/dstate_T from beyond the chunk (None: zero) and overwritten with
              dL/dstate_0: how checkpointed BPTT passes the gradient between segments (manual/checkpointed.py)
    Returns (d_x_proj, d_W):
    d_x_proj: (T, B, 4H)  dL/dx_proj_t = dL/da_t, since a_t = x_proj_t + W h_{t-1}
    d_W:      (4H, H)
    """
    steps, streams, size = d_hidden.shape
    d_x_proj = np.empty_like(cache.gates)  # d_x_proj[t] = da_t = dL/d[ai, af, ag, ao]_t, filled backwards in time
    d_i, d_f, d_g, d_o = (d_x_proj[:, :, k * size : (k + 1) * size] for k in range(GATES))  # (T, B, H) views
    i, f, g, o = (cache.gates[:, :, k * size : (k + 1) * size] for k in range(GATES))
    dtype = d_x_proj.dtype
    d_h = np.empty((streams, size), dtype=dtype)  # dh_t, one step's
    d_s = np.empty((streams, size), dtype=dtype)  # ds_t, one step's
    tanh_grad = np.empty((streams, size), dtype=dtype)  # tanh'(s_t) = 1 - tanh(s_t)^2, one step's
    # the second factor of each gate's derivative, one step's: 1 - s for a sigmoid gate (sigmoid' = s (1 - s)),
    # 1 - g^2 for g (tanh' = 1 - g^2)
    second = np.empty((streams, GATES * size), dtype=dtype)
    second_g = second[:, 2 * size : 3 * size]
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none, the next chunk's
    d_s_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into s_T from step T + 1: none, the next chunk's
    if carry is not None:  # into h_T and s_T from the segment after this one
        d_h_next[...], d_s_next[...] = carry
    if trace is not None:  # docs/cells.md#per-step-gradients-trace: what gradcheck --diagnose compares per step
        trace["d_h"] = np.zeros(d_hidden.shape, dtype=d_x_proj.dtype)
        trace["d_carry"] = np.zeros((steps, STATE_PARTS, *d_hidden.shape[1:]), dtype=d_x_proj.dtype)
    for t in reversed(range(steps)):
        np.add(d_hidden[t], d_h_next, out=d_h)  # dh_t = from the output (layer above) + from the next step
        if trace is not None:  # dh_t as used, and the carries into h_t and s_t that step t + 1 sent
            trace["d_h"][t], trace["d_carry"][t] = d_h, (d_h_next, d_s_next)
        np.multiply(d_h, cache.tanh_cells[t], out=d_o[t])  # h_t = o_t tanh(s_t): do_t = dh_t tanh(s_t)
        np.multiply(d_h, o[t], out=d_s)
        np.square(cache.tanh_cells[t], out=tanh_grad)
        np.subtract(1, tanh_grad, out=tanh_grad)
        d_s *= tanh_grad
        d_s += d_s_next  # ds_t = from the next step + dh_t o_t tanh'(s_t)
        np.multiply(d_s, cache.cells[t], out=d_f[t])  # s_t = f_t s_{t-1} + i_t g_t: df_t = ds_t s_{t-1}
        np.multiply(d_s, g[t], out=d_i[t])  # di_t = ds_t g_t
        np.multiply(d_s, i[t], out=d_g[t])  # dg_t = ds_t i_t
        np.multiply(d_s, f[t], out=d_s_next)  # ds_{t-1} from step t: ds_t f_t
        # through each gate's nonlinearity: dai = (di i) (1 - i), daf and dao alike, dag = dg (1 - g^2)
        d_x_proj[t, :, : 2 * size] *= cache.gates[t, :, : 2 * size]  # (di i), (df f): i and f are adjacent
        d_o[t] *= o[t]
        np.subtract(1, cache.gates[t], out=second)
        np.square(g[t], out=second_g)
        np.subtract(1, second_g, out=second_g)
        d_x_proj[t] *= second
        d_h_next = np.dot(d_x_proj[t], cache.W)  # a_t = ... + W h_{t-1}: dh_{t-1} gets W^T da_t
    if carry is not None:
        carry[0], carry[1] = d_h_next, d_s_next  # dL/dh_0 and dL/ds_0, for the segment before this one
    rows = steps * streams
    d_W = d_x_proj.reshape(rows, -1).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_x_proj, d_W


def step_backward(d_state: np.ndarray, t: int, cache: LSTMCache) -> np.ndarray:
    """One step of the recursion above, alone: dL/dstate_{t-1} from dL/dstate_t, through step t only.

    d_state: (2, B, H)  [dL/dh_t (all of it), dL/ds_t through the steps after t only (f_{t+1} s_t)]
    t:       1..T       the step that made (h_t, s_t) from (h_{t-1}, s_{t-1}) (cache.hidden[t] is h_t)
    Returns  (2, B, H)  [dL/dh_{t-1} through a_t = b + W h_{t-1} + U x_t, dL/ds_{t-1} through s_t = f_t s_{t-1} + ...]
    """
    i, f, g, o = np.split(cache.gates[t - 1], GATES, axis=1)  # i_t, f_t, g_t, o_t
    d_h, d_s_after = d_state
    tanh_s = cache.tanh_cells[t - 1]  # tanh(s_t)
    d_s = d_s_after + d_h * o * (1 - tanh_s**2)  # ds_t = from step t + 1 + dh_t o_t tanh'(s_t)
    d_a = np.concatenate(
        [
            d_s * g * i * (1 - i),  # dai_t = ds_t g_t sigmoid'(ai_t)
            d_s * cache.cells[t - 1] * f * (1 - f),  # daf_t = ds_t s_{t-1} sigmoid'(af_t)
            d_s * i * (1 - g**2),  # dag_t = ds_t i_t tanh'(ag_t)
            d_h * tanh_s * o * (1 - o),  # dao_t = dh_t tanh(s_t) sigmoid'(ao_t)
        ],
        axis=1,
    )
    return np.stack([d_a @ cache.W, d_s * f])  # dh_{t-1} = W^T da_t; ds_{t-1} = ds_t f_t
