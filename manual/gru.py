"""GRU cell: recurrence forward and hand-derived backward (BPTT), over a whole chunk.

(``step_backward`` is one step of that backward alone, for the gradient flow of docs/gradflow.md.)

PyTorch's variant (the reset gate multiplies W_n h_{t-1}, after the product; Cho et al.
2014 apply it before), with no separate recurrent bias. Gates r, z, n stacked in the
rows of U (3H, in), W (3H, H), b (3H,), and x_proj_t = b + U x_t (the caller's input
projection) split the same way into [x_r, x_z, x_n]_t:

    r_t = sigmoid(b_r + W_r h_{t-1} + U_r x_t)
    z_t = sigmoid(b_z + W_z h_{t-1} + U_z x_t)
    n_t = tanh(b_n + U_n x_t + r_t * (W_n h_{t-1}))
    h_t = (1 - z_t) * n_t + z_t * h_{t-1}

x_t is the layer's input (a one-hot token for layer 1, the layer below's h_t above it).
It maps onto ``torch.nn.GRU`` with weight_ih = U, weight_hh = W, bias_ih = b, bias_hh = 0.
The carried state has one part: state[0] = h, (B, H).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual.activations import sigmoid_into

# GATES and STATE_PARTS: a deliberate copy of torchref/gru.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 3
STATE_PARTS = 1  # state[0] = h


@dataclass
class GRUCache:
    gates: np.ndarray  # (T, B, 3H) activated r, z, n
    recurrent_n: np.ndarray  # (T, B, H) W_n h_{t-1}, which r_t multiplies
    hidden: np.ndarray  # (T + 1, B, H) h_0 .. h_T
    W: np.ndarray  # (3H, H)


def recurrence_forward(
    x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, GRUCache]:
    """h_t for t = 1..T, from x_proj_t = b + U x_t and the carried state.

    x_proj:  (T, B, 3H)  b + U x_t
    W:       (3H, H)
    state0:  (1, B, H)   h_0
    Returns (hidden, state_T, cache):
    hidden:  (T, B, H)   h_1 .. h_T
    state_T: (1, B, H)   h_T, the next chunk's state0
    cache:   GRUCache

    Per step: one product for all three gates, one sigmoid over r and z together (adjacent in the
    rows), and every result written in place into the cache.
    """
    steps, streams, _ = x_proj.shape
    size = W.shape[1]
    dtype = np.result_type(x_proj, W, state0)
    gates = np.empty((steps, streams, GATES * size), dtype=dtype)
    recurrent = np.empty((streams, GATES * size), dtype=dtype)  # W h_{t-1} for all three gates, one step's
    recurrent_n = np.empty((steps, streams, size), dtype=dtype)
    hidden = np.empty((steps + 1, streams, size), dtype=dtype)
    hidden[0] = state0[0]
    one_minus_z_times_n = np.empty((streams, size), dtype=dtype)  # (1 - z_t) n_t, one step's
    r, z, n = (gates[:, :, k * size : (k + 1) * size] for k in range(GATES))  # (T, B, H) views of the gates
    r_and_z = gates[:, :, : 2 * size]
    for t in range(steps):
        np.dot(hidden[t], W.T, out=recurrent)  # (B, 3H): W h_{t-1}
        recurrent_n[t] = recurrent[:, 2 * size :]
        np.add(x_proj[t, :, : 2 * size], recurrent[:, : 2 * size], out=r_and_z[t])
        sigmoid_into(r_and_z[t], r_and_z[t])  # r_t, z_t = sigmoid(b + U x_t + W h_{t-1}) of their blocks
        np.multiply(r[t], recurrent_n[t], out=n[t])
        n[t] += x_proj[t, :, 2 * size :]
        np.tanh(n[t], out=n[t])  # n_t = tanh(b_n + U_n x_t + r_t * (W_n h_{t-1}))
        np.subtract(1, z[t], out=one_minus_z_times_n)
        one_minus_z_times_n *= n[t]
        np.multiply(z[t], hidden[t], out=hidden[t + 1])
        hidden[t + 1] += one_minus_z_times_n  # h_t = (1 - z_t) n_t + z_t h_{t-1}
    return hidden[1:], hidden[-1][None], GRUCache(gates, recurrent_n, hidden, W)


def recurrence_backward(
    d_hidden: np.ndarray,
    cache: GRUCache,
    trace: dict[str, np.ndarray] | None = None,
    carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx_proj_t and dL/dW, from dL/dh_t of the layer above.

    d_hidden: (T, B, H)   dL/dh_t from the layer above (the output layer, or U of the next layer)
    cache:    GRUCache
    trace:    optional dict, filled with d_h (T, B, H) and d_carry (T, P, B, H) (docs/cells.md#per-step-gradients-trace)
    carry:    optional (P, B, H), read as dL/dstate_T from beyond the chunk (None: zero) and overwritten with
              dL/dstate_0: how checkpointed BPTT passes the gradient between segments (manual/checkpointed.py)
    Returns (d_x_proj, d_W):
    d_x_proj: (T, B, 3H)  dL/dx_proj_t, per gate
    d_W:      (3H, H)
    """
    steps, streams, size = d_hidden.shape
    gates, hidden = cache.gates, cache.hidden
    r, z, n = (gates[:, :, k * size : (k + 1) * size] for k in range(GATES))  # (T, B, H) views
    d_x_proj = np.empty_like(gates)  # dL/d(b + U x_t), per gate, filled backwards in time
    d_recurrent = np.empty_like(gates)  # dL/d(W h_{t-1}), per gate: differs from d_x_proj in n, by r_t
    d_r, d_z, d_n_pre = (d_x_proj[:, :, k * size : (k + 1) * size] for k in range(GATES))
    d_h = np.empty((streams, size), dtype=d_x_proj.dtype)  # dh_t, one step's
    factor = np.empty((streams, 2 * size), dtype=d_x_proj.dtype)  # one step's factors that do not involve dh_t
    factor_h = factor[:, :size]
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none, the next chunk's
    if carry is not None:
        d_h_next[...] = carry[0]  # into h_T from the segment after this one
    if trace is not None:  # docs/cells.md#per-step-gradients-trace: what gradcheck --diagnose compares per step
        trace["d_h"] = np.zeros(d_hidden.shape, dtype=d_x_proj.dtype)
        trace["d_carry"] = np.zeros((steps, STATE_PARTS, *d_hidden.shape[1:]), dtype=d_x_proj.dtype)
    for t in reversed(range(steps)):
        np.add(d_hidden[t], d_h_next, out=d_h)  # dh_t = from the output (layer above) + from the next step
        if trace is not None:  # dh_t as used, and the carry into h_t that step t + 1 sent
            trace["d_h"][t], trace["d_carry"][t, 0] = d_h, d_h_next
        np.subtract(1, z[t], out=factor_h)
        np.multiply(d_h, factor_h, out=d_n_pre[t])  # h_t = (1 - z_t) n_t + z_t h_{t-1}: dn_t = dh_t (1 - z_t)
        np.square(n[t], out=factor_h)
        np.subtract(1, factor_h, out=factor_h)
        d_n_pre[t] *= factor_h  # dn_pre_t = dn_t (1 - n_t^2): n_t = tanh(n_pre_t), n_pre_t = x_n + r_t (W_n h_{t-1})
        np.multiply(d_n_pre[t], cache.recurrent_n[t], out=d_r[t])  # dr_t = dn_pre_t (W_n h_{t-1})
        np.subtract(hidden[t], n[t], out=factor_h)
        np.multiply(d_h, factor_h, out=d_z[t])  # dz_t = dh_t (h_{t-1} - n_t)
        d_r_and_z = d_x_proj[t, :, : 2 * size]
        d_r_and_z *= gates[t, :, : 2 * size]  # dr_pre_t = (dr_t r_t) (1 - r_t), dz_pre_t likewise: sigmoid' = s (1 - s)
        np.subtract(1, gates[t, :, : 2 * size], out=factor)
        d_r_and_z *= factor
        d_recurrent[t, :, : 2 * size] = d_r_and_z  # x_r, x_z enter unscaled, and so do W_r h, W_z h
        np.multiply(d_n_pre[t], r[t], out=d_recurrent[t, :, 2 * size :])  # r_t scales W_n h_{t-1}
        # dh_{t-1} from step t: directly through z_t h_{t-1}, and W^T d_rec_t
        d_h_next = np.dot(d_recurrent[t], cache.W)
        d_h_next += d_h * z[t]
    if carry is not None:
        carry[0] = d_h_next  # dL/dh_0, for the segment before this one
    rows = steps * streams
    d_W = d_recurrent.reshape(rows, -1).T @ hidden[:-1].reshape(rows, size)  # dW = sum_t d_rec_t h_{t-1}^T
    return d_x_proj, d_W


def step_backward(d_state: np.ndarray, t: int, cache: GRUCache) -> np.ndarray:
    """One step of the recursion above, alone: dL/dstate_{t-1} from dL/dstate_t, through step t only.

    d_state: (1, B, H)  dL/dh_t, all of it (the output at t and the steps after t)
    t:       1..T       the step that made h_t from h_{t-1} (cache.hidden[t] is h_t)
    Returns  (1, B, H)  dL/dh_{t-1}: directly through z_t h_{t-1}, and through W h_{t-1} in r_t, z_t, n_t
    """
    r, z, n = np.split(cache.gates[t - 1], GATES, axis=1)  # r_t, z_t, n_t
    d_h = d_state[0]
    d_n_pre = d_h * (1 - z) * (1 - n**2)  # dn_t = dh_t (1 - z_t), through tanh' = 1 - n_t^2
    d_r_pre = d_n_pre * cache.recurrent_n[t - 1] * r * (1 - r)  # dr_t = dn_pre_t (W_n h_{t-1}), through sigmoid'
    d_z_pre = d_h * (cache.hidden[t - 1] - n) * z * (1 - z)  # dz_t = dh_t (h_{t-1} - n_t), through sigmoid'
    d_recurrent = np.concatenate([d_r_pre, d_z_pre, d_n_pre * r], axis=1)  # dL/d(W h_{t-1}): r_t scales W_n h_{t-1}
    return (d_h * z + d_recurrent @ cache.W)[None]  # dh_{t-1} = dh_t z_t + W^T d_rec_t
