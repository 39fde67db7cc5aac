"""Real-time recurrent learning (RTRL; Williams & Zipser, 1989): the gradient by forward mode, by hand.

One layer of any built-in cell (rnn, lstm, gru). BPTT runs the chunk forward, then backward;
RTRL carries forward, beside the state, its influence: how the carried state depends on the
recurrent parameters theta = (U, W, b),

    M_t = d state_t / d theta         (B, P*H, G*H, ...): per stream, per state entry, per parameter entry

so that each step's loss can be differentiated the moment it arrives, with no backward pass:

    dL_t/dtheta = dL_t/dh_t  M_t[h rows]          (V and c: dL_t/do_t as in BPTT, no influence needed)

Each step the cell maps (state_{t-1}, x_proj_t = b + U x_t, rec_t = W h_{t-1}) to state_t, with three
Jacobians, all (B, P*H, ...):

    A_t = d state_t / d x_proj_t      (B, P*H, G*H)
    R_t = d state_t / d rec_t         (B, P*H, G*H)   equal to A_t except the gru's n block, which r_t scales
    S_t = d state_t / d state_{t-1}   (B, P*H, P*H)   the direct path only (lstm: s_{t-1}; gru: z_t h_{t-1})

and the chain rule gives the influence update (E_h picks h out of the state):

    M_t = J_t M_{t-1} + (the step's own dependence on theta),   J_t = S_t + R_t W E_h
    own dependence:   on b: A_t;   on U[:, v]: A_t x_t[v] (x_t one-hot: column x_t only);
                      on W[g, j]: R_t[:, g] h_{t-1}[j]

The J_t M_{t-1} product is the cost: (P*H)^2 * G*H*(V + H + 1) multiply-adds per stream and step,
O(H^4), and M is O(H^3) numbers per stream; BPTT is O(H^2) per step and O(T*H) memory.

The influence is carried out of a chunk with the state, so a stream of chunks gets the gradient of
its whole loss, never truncated at a chunk boundary (BPTT over the concatenated stream).
Parameters and shapes as in ``manual.model`` (U (G*H, V), W (G*H, H), b (G*H,), V (V, H), c (V,)).
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from manual import gru, lstm, rnn
from manual.model import REDUCTIONS, Cell, cell_module, softmax_cross_entropy

RECURRENT = ("U", "W", "b")  # the parameters the influence covers


def zero_influence(params: dict[str, np.ndarray], cell: Cell, batch_size: int) -> dict[str, np.ndarray]:
    """M_0 = 0: a state given as a constant (the first chunk of a stream).

    Returns {"U": (B, P*H, G*H, V), "W": (B, P*H, G*H, H), "b": (B, P*H, G*H)}.
    """
    parts = cell_module(cell).STATE_PARTS
    gate_rows, size = params["W"].shape
    state_rows = parts * size
    return {
        name: np.zeros((batch_size, state_rows, *params[name].shape), dtype=params[name].dtype) for name in RECURRENT
    }


def diagonal(values: np.ndarray) -> np.ndarray:
    """(B, H) -> (B, H, H): diag(values) per stream, the Jacobian of an element-wise product."""
    return values[:, :, None] * np.eye(values.shape[1], dtype=values.dtype)


def rnn_jacobians(cache: rnn.RNNCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A_t, R_t, S_t of one rnn step (cache of a one-step recurrence_forward). Shapes (B, H, H) each.

    h_t = tanh(x_proj_t + W h_{t-1}):  dh_t/dx_proj_t = dh_t/drec_t = diag(1 - h_t^2); no direct path.
    """
    h = cache.hidden[1]  # (B, H)
    tanh_grad = diagonal(1 - h**2)
    return tanh_grad, tanh_grad, np.zeros_like(tanh_grad)


def lstm_jacobians(cache: lstm.LSTMCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A_t, R_t (B, 2H, 4H) and S_t (B, 2H, 2H) of one lstm step; state rows [h; s], gate columns [i, f, g, o].

    s_t = f s_{t-1} + i g:  ds/dai = g i(1-i),  ds/daf = s_{t-1} f(1-f),  ds/dag = i (1-g^2),  ds/dao = 0
    h_t = o tanh(s_t):      dh/da  = o tanh'(s_t) ds/da,  plus dh/dao = tanh(s_t) o(1-o)
    direct:                 ds_t/ds_{t-1} = f,  dh_t/ds_{t-1} = o tanh'(s_t) f;  h_{t-1} enters only through W
    """
    i, f, g, o = np.split(cache.gates[0], lstm.GATES, axis=1)  # (B, H) each
    s_prev, tanh_s = cache.cells[0], cache.tanh_cells[0]
    through_s = o * (1 - tanh_s**2)  # dh_t/ds_t
    d_s = [g * i * (1 - i), s_prev * f * (1 - f), i * (1 - g**2), np.zeros_like(o)]  # ds_t/da per gate block
    d_h = [through_s * block for block in d_s]
    d_h[3] = tanh_s * o * (1 - o)
    A = np.block([[diagonal(block) for block in d_h], [diagonal(block) for block in d_s]])  # [[dh/da], [ds/da]]
    zero = np.zeros_like(diagonal(f))
    S = np.block([[zero, diagonal(through_s * f)], [zero, diagonal(f)]])  # [[dh/dh_{t-1}, dh/ds_{t-1}], [ds/...]]
    return A, A, S


def gru_jacobians(cache: gru.GRUCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A_t, R_t (B, H, 3H) and S_t (B, H, H) of one gru step; gate columns [r, z, n].

    h_t = (1 - z) n + z h_{t-1},  n = tanh(x_n + r rec_n):
    dh/dx_r = (1-z)(1-n^2) rec_n r(1-r),  dh/dx_z = (h_{t-1} - n) z(1-z),  dh/dx_n = (1-z)(1-n^2)
    dh/drec = the same, but dh/drec_n = (1-z)(1-n^2) r;   direct: dh_t/dh_{t-1} = z
    """
    r, z, n = np.split(cache.gates[0], gru.GATES, axis=1)  # (B, H) each
    h_prev, rec_n = cache.hidden[0], cache.recurrent_n[0]
    d_n_pre = (1 - z) * (1 - n**2)  # dh_t / d(x_n + r rec_n)
    d_r_pre = d_n_pre * rec_n * r * (1 - r)
    d_z_pre = (h_prev - n) * z * (1 - z)
    A = np.block([diagonal(d_r_pre), diagonal(d_z_pre), diagonal(d_n_pre)])
    R = np.block([diagonal(d_r_pre), diagonal(d_z_pre), diagonal(d_n_pre * r)])
    return A, R, diagonal(z)


Jacobians = tuple[np.ndarray, np.ndarray, np.ndarray]  # (A_t, R_t, S_t)
JACOBIANS: dict[ModuleType, Callable[[Any], Jacobians]] = {rnn: rnn_jacobians, lstm: lstm_jacobians, gru: gru_jacobians}


def cell_step(
    recurrence: ModuleType, x_proj_t: np.ndarray, W: np.ndarray, state: np.ndarray
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """One step of the cell, by the cell's own forward, and that step's Jacobians.

    x_proj_t: (B, G*H); W: (G*H, H); state: (P, B, H).
    Returns (state_t (P, B, H), (A_t, R_t, S_t)), shapes as in the module docstring.
    """
    _, state_t, cache = recurrence.recurrence_forward(x_proj_t[None], W, state)
    return state_t, JACOBIANS[recurrence](cache)


def influence_step(
    influence: dict[str, np.ndarray],
    jacobians: tuple[np.ndarray, np.ndarray, np.ndarray],
    W: np.ndarray,
    tokens: np.ndarray,
    h_prev: np.ndarray,
) -> dict[str, np.ndarray]:
    """M_t from M_{t-1}: the forward-mode chain rule through one step.

    influence: M_{t-1}, {"U": (B, P*H, G*H, V), "W": (B, P*H, G*H, H), "b": (B, P*H, G*H)}
    jacobians: (A_t, R_t, S_t); W: (G*H, H); tokens: (B,) ids x_t; h_prev: (B, H) h_{t-1}
    Returns M_t, the same shapes (new arrays).
    """
    A, R, S = jacobians
    streams, state_rows, _ = A.shape
    size = W.shape[1]
    J = S.copy()  # J_t = S_t + R_t W E_h: state_{t-1} reaches state_t directly and through rec_t = W h_{t-1}
    J[:, :, :size] += R @ W
    # M_t = J_t M_{t-1}: one (P*H, P*H) @ (P*H, everything else) product per stream: the O(H^4) of RTRL
    new = {name: (J @ M.reshape(streams, state_rows, -1)).reshape(M.shape) for name, M in influence.items()}
    new["b"] += A  # x_proj_t = b + U x_t: d x_proj_t / d b = I
    new["U"][np.arange(streams), :, :, tokens] += A  # d x_proj_t / d U[:, v] = x_t[v]: column x_t only
    new["W"] += R[..., None] * h_prev[:, None, None, :]  # d rec_t / d W[g, j] = h_{t-1}[j] in row g
    return new


def chunk(
    params: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    state0: np.ndarray,
    influence0: dict[str, np.ndarray],
    cell: Cell = "rnn",
    reduction: str = "mean",
) -> tuple[np.number, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """The loss of a chunk and its gradient by RTRL, each step's loss differentiated as it arrives.

    inputs, targets: (B, T) ids; state0: (1, P, B, H) one layer's carried state;
    influence0: M_0 (zero_influence's shapes), d state0 / d theta carried from the chunks before.
    reduction: 'mean' over the T*B characters or 'sum', as manual.model.forward.
    Returns (loss, grads {U, W, b, V, c}, state_T (1, P, B, H), M_T): the gradient is of this chunk's
    loss with respect to the parameters, through the states of every chunk before it (via influence0).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}; choose from {REDUCTIONS}")
    if len(state0) != 1:
        raise ValueError(f"RTRL here is for one layer; the state has {len(state0)}")
    recurrence = cell_module(cell)
    U, W, b, V, c = (params[name] for name in ("U", "W", "b", "V", "c"))
    streams, steps = inputs.shape
    size = W.shape[1]
    scale = 1 / (steps * streams) if reduction == "mean" else 1.0
    dtype = np.result_type(*params.values(), state0)
    grads = {name: np.zeros(params[name].shape, dtype=dtype) for name in ("U", "W", "b", "V", "c")}
    state, influence, loss = state0[0], influence0, dtype.type(0)
    for t in range(steps):
        tokens = inputs[:, t]
        x_proj_t = U[:, tokens].T + b  # (B, G*H): b + U x_t, a column lookup
        h_prev = state[0]
        state, jacobians = cell_step(recurrence, x_proj_t, W, state)
        influence = influence_step(influence, jacobians, W, tokens, h_prev)
        h = state[0]  # (B, H)
        # the step's loss, as it arrives: o_t = c + V h_t, -log softmax(o_t)[y_t]
        probs, step_loss = softmax_cross_entropy(h @ V.T + c, targets[:, t], "sum")
        loss += step_loss * scale
        d_logits = probs
        d_logits[np.arange(streams), targets[:, t]] -= 1
        d_logits *= scale  # dL/do_t = (p_t - onehot(y_t)) / N for the mean
        grads["V"] += d_logits.T @ h  # dV += do_t h_t^T
        grads["c"] += d_logits.sum(axis=0)  # dc += do_t
        d_h = d_logits @ V  # (B, H): dL_t/dh_t
        for name in RECURRENT:  # dL_t/dtheta = dL_t/dh_t M_t[h rows], summed over the streams
            grads[name] += np.tensordot(d_h, influence[name][:, :size], axes=([0, 1], [0, 1]))
    return loss, grads, state[None], influence


def stream(
    params: dict[str, np.ndarray],
    chunks: list[tuple[np.ndarray, np.ndarray]],
    state0: np.ndarray,
    cell: Cell = "rnn",
    reduction: str = "sum",
) -> tuple[np.number, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray]]:
    """Several chunks in a row, state and influence carried across each boundary.

    chunks: [(inputs (B, T_k), targets (B, T_k)), ...]; state0: (1, P, B, H).
    Returns (sum of the chunks' losses, sum of their gradients, state at the end, influence at the end):
    with reduction='sum', the loss and the exact gradient of the whole stream.
    """
    influence = zero_influence(params, cell, state0.shape[2])
    state, total, grads = state0, None, None
    for inputs, targets in chunks:
        loss, chunk_grads, state, influence = chunk(params, inputs, targets, state, influence, cell, reduction)
        total = loss if total is None else total + loss
        grads = chunk_grads if grads is None else {name: grads[name] + chunk_grads[name] for name in grads}
    assert total is not None and grads is not None, "a stream of at least one chunk"
    return total, grads, state, influence
