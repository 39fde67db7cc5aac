"""Second order by hand: the Hessian-vector product H v (Pearlmutter's R-operator) and the
Gauss-Newton product G v, through BPTT, for every built-in cell and any number of layers.

For a direction v over all parameters (a dict keyed like them), R{x} is the directional
derivative of any quantity x of the forward or backward pass along v:

    R{x} = d/dr x(theta + r v) at r = 0,     so  R{theta} = v  and  R{dL/dtheta} = H v.

R is linear and obeys the product and chain rules, so applying it to every line of the
forward pass gives the forward R-pass, and to every line of the backward pass the backward
R-pass. For the vanilla cell (the other cells follow the same rules, equation by equation):

    forward                          forward R-pass
    a_t = b + W h_{t-1} + U x_t      R{a_t} = Rb + RW h_{t-1} + W R{h_{t-1}} + RU x_t
    h_t = tanh(a_t)                  R{h_t} = (1 - h_t^2) R{a_t}
    o_t = c + V h_t                  R{o_t} = Rc + RV h_t + V R{h_t}
    p_t = softmax(o_t)               R{p_t} = (diag(p_t) - p_t p_t^T) R{o_t}

    backward (mean loss over N)      backward R-pass
    do_t = (p_t - y_t) / N           R{do_t} = R{p_t} / N
    dh_t = V^T do_t + W^T da_{t+1}   R{dh_t} = V^T R{do_t} + RV^T do_t + W^T R{da_{t+1}} + RW^T da_{t+1}
    da_t = dh_t (1 - h_t^2)          R{da_t} = R{dh_t} (1 - h_t^2) - 2 dh_t h_t R{h_t}
    dW = sum_t da_t h_{t-1}^T        R{dW} = sum_t R{da_t} h_{t-1}^T + da_t R{h_{t-1}}^T     (= (H v)_W)

h_0 is the carried-in state, not a parameter: R{h_0} = 0. Each cell's R-passes take the plain
passes' results (the forward's cache; the backward's d_x_proj and per-step dh_t, from the
cell's own ``recurrence_backward``) and add one product with W per step, as the plain passes
do; the products with RW touch only quantities known before the loop, so they are one
(T*B)-row product each, outside it.

The Gauss-Newton product replaces the loss by its quadratic model in the logits:

    G v = J^T H_L J v,   J = do/dtheta (all T*B logits),   J v = R{o},
    H_L = (diag(p_t) - p_t p_t^T) / N per character (block-diagonal; without / N for the sum),

so G v is the plain backward pass run from dL/do := H_L R{o}. G is positive semidefinite
(H_L is: a covariance), where H need not be.

Arrays are time-major inside, (T, B, ...), and the hidden state a row vector (``W h`` is
``h @ W.T``), as in ``manual.model``. Everything is dtype-generic, complex128 included.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from manual import gru, lstm, model, rnn

CellCache = rnn.RNNCache | lstm.LSTMCache | gru.GRUCache


# ----- the vanilla cell ------------------------------------------------------------------------


def rnn_r_forward(r_x_proj: np.ndarray, r_W: np.ndarray, cache: rnn.RNNCache) -> rnn.RNNCache:
    """R{h_t} for t = 0..T, from R{x_proj_t} = Rb + RU x_t (or + U R{x_t}) and RW.

    r_x_proj: (T, B, H)
    r_W:      (H, H)
    cache:    RNNCache of the forward pass
    Returns the R-cache: an RNNCache whose hidden (T + 1, B, H) holds R{h_0} = 0 .. R{h_T}, W holds RW.
    """
    hidden = cache.hidden
    r_hidden = np.zeros(hidden.shape, dtype=np.result_type(r_x_proj, r_W, hidden))
    r_a_known = r_x_proj + hidden[:-1] @ r_W.T  # R{x_proj_t} + RW h_{t-1}, every t at once
    for t in range(len(r_x_proj)):
        r_a = r_a_known[t] + r_hidden[t] @ cache.W.T  # R{a_t} = R{x_proj_t} + RW h_{t-1} + W R{h_{t-1}}
        r_hidden[t + 1] = (1 - hidden[t + 1] ** 2) * r_a  # R{h_t} = tanh'(a_t) R{a_t}
    return rnn.RNNCache(r_hidden, r_W)


def rnn_r_backward(
    d_hidden: np.ndarray, r_d_hidden: np.ndarray, cache: rnn.RNNCache, r_cache: rnn.RNNCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass and its R-pass.

    d_hidden, r_d_hidden: (T, B, H)  dL/dh_t from the layer above, and its R
    Returns (d_x_proj (T, B, H), d_W (H, H), R{d_x_proj} (T, B, H), R{d_W} (H, H)).
    """
    trace: dict[str, np.ndarray] = {}
    d_a, d_W = rnn.recurrence_backward(d_hidden, cache, trace)  # da_t = dL/dx_proj_t, and dh_t in trace
    hidden, r_hidden = cache.hidden, r_cache.hidden
    slope = 1 - hidden[1:] ** 2  # tanh'(a_t) = 1 - h_t^2
    r_slope = -2 * hidden[1:] * r_hidden[1:]  # R{1 - h_t^2} = -2 h_t R{h_t}
    r_from_r_W = d_a @ r_cache.W  # RW^T da_t, every t at once: step t's share of R{dh_{t-1}}
    r_d_a = np.empty_like(r_d_hidden + r_from_r_W)
    r_d_h_next = np.zeros_like(r_d_a[0])  # into R{dh_T} from step T + 1: none
    for t in reversed(range(len(d_hidden))):
        r_d_h = r_d_hidden[t] + r_d_h_next  # R{dh_t}
        r_d_a[t] = r_d_h * slope[t] + trace["d_h"][t] * r_slope[t]  # R{da_t} = R{dh_t} tanh' + dh_t R{tanh'}
        r_d_h_next = r_d_a[t] @ cache.W + r_from_r_W[t]  # R{dh_{t-1}} from step t: W^T R{da_t} + RW^T da_t
    r_d_W = rows(r_d_a).T @ rows(hidden[:-1]) + rows(d_a).T @ rows(r_hidden[:-1])  # R{dW}
    return d_a, d_W, r_d_a, r_d_W


# ----- LSTM (gates i, f, g, o; s the cell state) ---------------------------------------------------


def lstm_gate_slopes(gates: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each gate's derivative through its nonlinearity, and the factor of its R.

    gates: (..., 4H) activated i, f, g, o. Returns (slope, curvature), each (..., 4H):
    sigmoid y: y' = y (1 - y), R{y'} = (1 - 2y) R{y};  tanh g: g' = 1 - g^2, R{g'} = -2g R{g}.
    """
    size = gates.shape[-1] // lstm.GATES
    slope = gates * (1 - gates)
    curvature = 1 - 2 * gates
    g = gates[..., 2 * size : 3 * size]
    slope[..., 2 * size : 3 * size] = 1 - g**2
    curvature[..., 2 * size : 3 * size] = -2 * g
    return slope, curvature


def lstm_r_forward(r_x_proj: np.ndarray, r_W: np.ndarray, cache: lstm.LSTMCache) -> lstm.LSTMCache:
    """R of every cached quantity, from R{x_proj_t} and RW.

    r_x_proj: (T, B, 4H)
    r_W:      (4H, H)
    Returns the R-cache, an LSTMCache: gates (T, B, 4H) R{i, f, g, o}_t; hidden, cells (T + 1, B, H)
    R{h_t}, R{s_t} (zero at t = 0); tanh_cells (T, B, H) R{tanh(s_t)}; W = RW.
    """
    gates, hidden, cells, tanh_cells = cache.gates, cache.hidden, cache.cells, cache.tanh_cells
    dtype = np.result_type(r_x_proj, r_W, gates)
    r_gates = np.empty(gates.shape, dtype=dtype)
    r_hidden = np.zeros(hidden.shape, dtype=dtype)
    r_cells = np.zeros(cells.shape, dtype=dtype)
    r_tanh_cells = np.empty(tanh_cells.shape, dtype=dtype)
    slope, _ = lstm_gate_slopes(gates)
    i, f, g, o = split_gates(gates, lstm.GATES)
    r_i, r_f, r_g, r_o = split_gates(r_gates, lstm.GATES)
    r_a_known = r_x_proj + hidden[:-1] @ r_W.T  # R{x_proj_t} + RW h_{t-1}, every t at once
    for t in range(len(r_x_proj)):
        r_a = r_a_known[t] + r_hidden[t] @ cache.W.T  # R{a_t} = R{x_proj_t} + RW h_{t-1} + W R{h_{t-1}}
        np.multiply(slope[t], r_a, out=r_gates[t])  # R{i_t} = i_t (1 - i_t) R{ai_t}, ..., R{g_t} = (1 - g_t^2) R{ag_t}
        # s_t = f_t s_{t-1} + i_t g_t
        r_cells[t + 1] = r_f[t] * cells[t] + f[t] * r_cells[t] + r_i[t] * g[t] + i[t] * r_g[t]
        r_tanh_cells[t] = (1 - tanh_cells[t] ** 2) * r_cells[t + 1]  # R{tanh(s_t)} = (1 - tanh^2(s_t)) R{s_t}
        r_hidden[t + 1] = r_o[t] * tanh_cells[t] + o[t] * r_tanh_cells[t]  # h_t = o_t tanh(s_t)
    return lstm.LSTMCache(r_gates, r_hidden, r_cells, r_tanh_cells, r_W)


def lstm_r_backward(
    d_hidden: np.ndarray, r_d_hidden: np.ndarray, cache: lstm.LSTMCache, r_cache: lstm.LSTMCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass and its R-pass.

    d_hidden, r_d_hidden: (T, B, H)  dL/dh_t from the layer above, and its R
    Returns (d_x_proj (T, B, 4H), d_W (4H, H), R{d_x_proj} (T, B, 4H), R{d_W} (4H, H)).
    """
    trace: dict[str, np.ndarray] = {}
    d_a, d_W = lstm.recurrence_backward(d_hidden, cache, trace)  # da_t; dh_t and the carry into s_t in trace
    gates, cells, tanh_cells, r_cells, r_tanh = (
        cache.gates,
        cache.cells,
        cache.tanh_cells,
        r_cache.cells,
        r_cache.tanh_cells,
    )
    i, f, g, o = split_gates(gates, lstm.GATES)
    r_i, r_f, r_g, r_o = split_gates(r_cache.gates, lstm.GATES)
    slope, curvature = lstm_gate_slopes(gates)
    r_slope = curvature * r_cache.gates  # R{gate'} for every gate and step
    r_from_r_W = d_a @ r_cache.W  # RW^T da_t, every t at once: step t's share of R{dh_{t-1}}
    r_d_a = np.empty_like(d_a + r_cache.gates)
    r_d_h_next = np.zeros_like(r_d_hidden[0])  # into R{dh_T} from step T + 1: none
    r_d_s_next = np.zeros_like(r_d_hidden[0])  # into R{ds_T}: none
    for t in reversed(range(len(d_hidden))):
        d_h = trace["d_h"][t]
        tanh_slope = 1 - tanh_cells[t] ** 2  # tanh'(s_t)
        d_s = trace["d_carry"][t, 1] + d_h * o[t] * tanh_slope  # ds_t = from step t + 1 + dh_t o_t tanh'(s_t)
        r_d_h = r_d_hidden[t] + r_d_h_next  # R{dh_t}
        r_d_s = (  # R{ds_t}: the product rule on each factor of dh_t o_t (1 - tanh^2(s_t))
            r_d_s_next
            + r_d_h * o[t] * tanh_slope
            + d_h * r_o[t] * tanh_slope
            - 2 * d_h * o[t] * tanh_cells[t] * r_tanh[t]
        )
        # d of the activated gates, [di, df, dg, do] = [ds g, ds s_{t-1}, ds i, dh tanh(s)], and their R
        d_gates = np.concatenate([d_s * g[t], d_s * cells[t], d_s * i[t], d_h * tanh_cells[t]], axis=1)
        r_d_gates = np.concatenate(
            [
                r_d_s * g[t] + d_s * r_g[t],
                r_d_s * cells[t] + d_s * r_cells[t],
                r_d_s * i[t] + d_s * r_i[t],
                r_d_h * tanh_cells[t] + d_h * r_tanh[t],
            ],
            axis=1,
        )
        r_d_a[t] = (
            r_d_gates * slope[t] + d_gates * r_slope[t]
        )  # da = d_gate gate': R{da} = R{d_gate} gate' + d_gate R{gate'}
        r_d_s_next = r_d_s * f[t] + d_s * r_f[t]  # ds_{t-1} from step t = ds_t f_t
        r_d_h_next = r_d_a[t] @ cache.W + r_from_r_W[t]  # R{dh_{t-1}} from step t: W^T R{da_t} + RW^T da_t
    r_d_W = rows(r_d_a).T @ rows(cache.hidden[:-1]) + rows(d_a).T @ rows(r_cache.hidden[:-1])
    return d_a, d_W, r_d_a, r_d_W


# ----- GRU (gates r, z, n; the reset gate scales W_n h_{t-1}) ----------------------------------


def gru_r_forward(r_x_proj: np.ndarray, r_W: np.ndarray, cache: gru.GRUCache) -> gru.GRUCache:
    """R of every cached quantity, from R{x_proj_t} and RW.

    r_x_proj: (T, B, 3H)
    r_W:      (3H, H)
    Returns the R-cache, a GRUCache: gates (T, B, 3H) R{r, z, n}_t; recurrent_n (T, B, H) R{W_n h_{t-1}};
    hidden (T + 1, B, H) R{h_t} (zero at t = 0); W = RW.
    """
    gates, hidden = cache.gates, cache.hidden
    size = cache.W.shape[1]
    dtype = np.result_type(r_x_proj, r_W, gates)
    r_gates = np.empty(gates.shape, dtype=dtype)
    r_recurrent_n = np.empty(cache.recurrent_n.shape, dtype=dtype)
    r_hidden = np.zeros(hidden.shape, dtype=dtype)
    r, z, n = split_gates(gates, gru.GATES)
    r_r, r_z, r_n = split_gates(r_gates, gru.GATES)
    r_recurrent_known = hidden[:-1] @ r_W.T  # RW h_{t-1}, every t at once
    for t in range(len(r_x_proj)):
        r_recurrent = r_recurrent_known[t] + r_hidden[t] @ cache.W.T  # R{W h_{t-1}} = RW h_{t-1} + W R{h_{t-1}}
        r_recurrent_n[t] = r_recurrent[:, 2 * size :]
        rz = gates[t, :, : 2 * size]  # r_t, z_t = sigmoid(x + W h_{t-1}) of their blocks
        r_gates[t, :, : 2 * size] = rz * (1 - rz) * (r_x_proj[t, :, : 2 * size] + r_recurrent[:, : 2 * size])
        # n_t = tanh(x_n + r_t (W_n h_{t-1}))
        r_n_pre = r_x_proj[t, :, 2 * size :] + r_r[t] * cache.recurrent_n[t] + r[t] * r_recurrent_n[t]
        r_n[t] = (1 - n[t] ** 2) * r_n_pre
        # h_t = (1 - z_t) n_t + z_t h_{t-1}
        r_hidden[t + 1] = (1 - z[t]) * r_n[t] + z[t] * r_hidden[t] + r_z[t] * (hidden[t] - n[t])
    return gru.GRUCache(r_gates, r_recurrent_n, r_hidden, r_W)


def gru_r_backward(
    d_hidden: np.ndarray, r_d_hidden: np.ndarray, cache: gru.GRUCache, r_cache: gru.GRUCache
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The backward pass and its R-pass.

    d_hidden, r_d_hidden: (T, B, H)  dL/dh_t from the layer above, and its R
    Returns (d_x_proj (T, B, 3H), d_W (3H, H), R{d_x_proj} (T, B, 3H), R{d_W} (3H, H)).
    """
    trace: dict[str, np.ndarray] = {}
    d_x_proj, d_W = gru.recurrence_backward(d_hidden, cache, trace)  # [dr_pre, dz_pre, dn_pre]_t; dh_t in trace
    gates, hidden, r_hidden = cache.gates, cache.hidden, r_cache.hidden
    size = cache.W.shape[1]
    r, z, n = split_gates(gates, gru.GATES)
    r_r, r_z, r_n = split_gates(r_cache.gates, gru.GATES)
    d_n_pre = d_x_proj[:, :, 2 * size :]
    d_recurrent = d_x_proj.copy()  # dL/d(W h_{t-1}): as d_x_proj, but r_t scales W_n h_{t-1}
    d_recurrent[:, :, 2 * size :] *= r
    r_from_r_W = d_recurrent @ r_cache.W  # RW^T d_rec_t, every t at once: step t's share of R{dh_{t-1}}
    r_d_x_proj = np.empty_like(d_x_proj + r_cache.gates)
    r_d_recurrent = np.empty_like(r_d_x_proj)
    r_d_h_next = np.zeros_like(r_d_hidden[0])  # into R{dh_T} from step T + 1: none
    for t in reversed(range(len(d_hidden))):
        d_h = trace["d_h"][t]
        r_d_h = r_d_hidden[t] + r_d_h_next  # R{dh_t}
        d_n = d_h * (1 - z[t])  # dn_t = dh_t (1 - z_t)
        r_d_n = r_d_h * (1 - z[t]) - d_h * r_z[t]
        r_d_n_pre = r_d_n * (1 - n[t] ** 2) - 2 * d_n * n[t] * r_n[t]  # dn_pre_t = dn_t (1 - n_t^2)
        d_r = d_n_pre[t] * cache.recurrent_n[t]  # dr_t = dn_pre_t (W_n h_{t-1})
        r_d_r = r_d_n_pre * cache.recurrent_n[t] + d_n_pre[t] * r_cache.recurrent_n[t]
        d_z = d_h * (hidden[t] - n[t])  # dz_t = dh_t (h_{t-1} - n_t)
        r_d_z = r_d_h * (hidden[t] - n[t]) + d_h * (r_hidden[t] - r_n[t])
        # through the sigmoids: d_pre = d y (1 - y), R{d_pre} = R{d} y (1 - y) + d (1 - 2y) R{y}
        r_d_r_pre = r_d_r * r[t] * (1 - r[t]) + d_r * (1 - 2 * r[t]) * r_r[t]
        r_d_z_pre = r_d_z * z[t] * (1 - z[t]) + d_z * (1 - 2 * z[t]) * r_z[t]
        r_d_x_proj[t] = np.concatenate([r_d_r_pre, r_d_z_pre, r_d_n_pre], axis=1)
        # d_rec's n block is dn_pre_t r_t
        r_d_recurrent[t] = np.concatenate([r_d_r_pre, r_d_z_pre, r_d_n_pre * r[t] + d_n_pre[t] * r_r[t]], axis=1)
        # dh_{t-1} from step t = W^T d_rec_t + dh_t z_t
        r_d_h_next = r_d_recurrent[t] @ cache.W + r_from_r_W[t] + r_d_h * z[t] + d_h * r_z[t]
    r_d_W = rows(r_d_recurrent).T @ rows(hidden[:-1]) + rows(d_recurrent).T @ rows(r_hidden[:-1])
    return d_x_proj, d_W, r_d_x_proj, r_d_W


RForward = Callable[[np.ndarray, np.ndarray, CellCache], CellCache]
RBackward = Callable[[np.ndarray, np.ndarray, CellCache, CellCache], tuple[np.ndarray, ...]]
R_PASSES: dict[str, tuple[RForward, RBackward]] = {
    "rnn": (rnn_r_forward, rnn_r_backward),  # type: ignore[dict-item]  # each pair takes its own cell's caches
    "lstm": (lstm_r_forward, lstm_r_backward),  # type: ignore[dict-item]
    "gru": (gru_r_forward, gru_r_backward),  # type: ignore[dict-item]
}


def split_gates(gates: np.ndarray, count: int) -> list[np.ndarray]:
    """The gate blocks of (..., G*H) as G views (..., H)."""
    size = gates.shape[-1] // count
    return [gates[..., k * size : (k + 1) * size] for k in range(count)]


def rows(array: np.ndarray) -> np.ndarray:
    """(T, B, X) -> (T*B, X): one row per character, for the sums over t as one product."""
    return array.reshape(-1, array.shape[-1])


# ----- the model: lookup, stack, output, loss --------------------------------------------------


@dataclass
class RPass:
    """The forward R-pass: r_logits (T*B, V) R{o_t} = J v, and each layer's R-cache (R{h_t} in .hidden)."""

    r_logits: np.ndarray
    layers: list[CellCache]


def r_passes(cell: model.Cell) -> tuple[RForward, RBackward]:
    """The R-passes of a built-in cell; a plugged-in cell has none written."""
    if not isinstance(cell, str) or cell not in R_PASSES:
        raise ValueError(f"Hessian-vector products are written for the built-in cells {sorted(R_PASSES)}, not {cell!r}")
    return R_PASSES[cell]


def r_forward(cache: model.Cache, vector: dict[str, np.ndarray]) -> RPass:
    """R{o_t} = J v and every layer's R-cache, from the forward pass's cache and the direction v (keyed like params)."""
    r_forward_cell, _ = r_passes(cache.cell)
    params = cache.params
    r_below: np.ndarray | None = None  # R{h_t} of the layer below
    layers: list[CellCache] = []
    for layer, layer_cache in enumerate(cache.layers):
        names = model.layer_param_names(layer)
        U, r_U, r_b = params[names["U"]], vector[names["U"]], vector[names["b"]]
        if layer_cache.below is None:
            r_x_proj = model.input_lookup(r_U, r_b, cache.inputs)  # R{b + U x_t} = Rb + RU x_t, x_t one-hot
        else:
            assert r_below is not None  # the layer below ran first
            r_x_proj = r_b + layer_cache.below @ r_U.T + r_below @ U.T  # Rb + RU h_t^{l-1} + U R{h_t^{l-1}}
        r_cache = r_forward_cell(r_x_proj, vector[names["W"]], layer_cache.recurrence)
        layers.append(r_cache)
        r_below = r_cache.hidden[1:]
    assert r_below is not None
    top, r_top = rows(cache.top), rows(r_below)
    r_logits = vector["c"] + top @ vector["V"].T + r_top @ params["V"].T  # R{o_t} = Rc + RV h_t + V R{h_t}
    return RPass(r_logits, layers)


def loss_hessian_times(cache: model.Cache, r_logits: np.ndarray) -> np.ndarray:
    """H_L R{o} = R{dL/do}: per character (diag(p_t) - p_t p_t^T) R{o_t}, divided by N for the mean loss.

    r_logits: (T*B, V). Returns (T*B, V).
    """
    probs = cache.probs
    r_d_logits = probs * (r_logits - np.sum(probs * r_logits, axis=1, keepdims=True))  # p * Ro - p (p^T Ro)
    if cache.reduction == "mean":
        r_d_logits /= len(probs)
    return r_d_logits


def hessian_vector_product(cache: model.Cache, vector: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """H v: the R-operator of the gradient, R{dL/dtheta}, for every parameter (same names and shapes).

    cache: ``manual.forward``'s, at theta; vector: v, keyed like the parameters.
    """
    _, r_backward_cell = r_passes(cache.cell)
    params = cache.params
    r_pass = r_forward(cache, vector)
    steps, streams, hidden_size = cache.top.shape
    top, r_top = rows(cache.top), rows(r_pass.layers[-1].hidden[1:])

    d_logits = model.logits_gradient(cache)  # do_t = (p_t - onehot(y_t)) / N
    r_d_logits = loss_hessian_times(cache, r_pass.r_logits)  # R{do_t} = R{p_t} / N

    product: dict[str, np.ndarray] = {}
    product["V"] = r_d_logits.T @ top + d_logits.T @ r_top  # dV = sum_t do_t h_t^T
    product["c"] = r_d_logits.sum(axis=0)  # dc = sum_t do_t
    d_hidden = (d_logits @ params["V"]).reshape(steps, streams, hidden_size)  # dh_t^L = V^T do_t
    r_d_hidden = (r_d_logits @ params["V"] + d_logits @ vector["V"]).reshape(d_hidden.shape)
    for layer in reversed(range(len(cache.layers))):
        names = model.layer_param_names(layer)
        layer_cache = cache.layers[layer]
        d_x_proj, _, r_d_x_proj, r_d_W = r_backward_cell(
            d_hidden, r_d_hidden, layer_cache.recurrence, r_pass.layers[layer]
        )
        product[names["W"]] = r_d_W
        product[names["b"]] = rows(r_d_x_proj).sum(axis=0)  # db = sum_t dx_proj_t
        if layer_cache.below is None:  # dU = sum_t dx_proj_t x_t^T, x_t one-hot: a scatter-add, and so is its R
            product[names["U"]] = model.input_lookup_grad(
                rows(r_d_x_proj), cache.inputs.reshape(-1), params[names["U"]].shape[1]
            )
        else:
            r_below = r_pass.layers[layer - 1].hidden[1:]
            U, r_U = params[names["U"]], vector[names["U"]]
            # dU_l = sum_t dx_proj_t h_t^{l-1 T}; dh_t^{l-1} = U_l^T dx_proj_t
            product[names["U"]] = rows(r_d_x_proj).T @ rows(layer_cache.below) + rows(d_x_proj).T @ rows(r_below)
            r_d_hidden = r_d_x_proj @ U + d_x_proj @ r_U
            d_hidden = d_x_proj @ U
    return {name: product[name] for name in params}


def gauss_newton_vector_product(cache: model.Cache, vector: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """G v = J^T H_L J v for every parameter (same names and shapes): the forward R-pass gives J v = R{o},
    the loss's Hessian multiplies it, and the plain backward pass from there is the J^T.

    cache: ``manual.forward``'s, at theta; vector: v, keyed like the parameters.
    """
    r_pass = r_forward(cache, vector)
    grads = model.backward_from_logits(cache, loss_hessian_times(cache, r_pass.r_logits))
    return {name: grads[name] for name in cache.params}
