"""The character model around a recurrent cell: input lookup, stacked layers, output, loss.

For layers l = 1..L, with the cell's recurrence (``manual.rnn``, ``manual.lstm``, ``manual.gru``):

    layer 1:  x_proj_t = b + U x_t            x_t one-hot: a column lookup of U, never a product;
                                              its gradient a scatter-add into columns, never a one-hot
    layer l:  x_proj_t = b_l + U_l h_t^{l-1}  the layer below's hidden state
              h_t^l = cell(x_proj_t, W_l, state_{t-1}^l)
    o_t = c + V h_t^L,   p_t = softmax(o_t),   L = mean of -log p_t[y_t]   (nats per character)
                                              or, with reduction='sum', their sum over the T*B characters
                                              (min-char-rnn's loss: nats per chunk)

Parameter names: layer 1 keeps the seed notation U, W, b; layer l >= 2 is U{l}, W{l}, b{l}
(U2, W2, b2, ...). A cell with G gate blocks has U (G*H, in), W (G*H, H), b (G*H,), with
in = V for layer 1 and H above it; V (V, H) and c (V,) read out the top layer. For the
vanilla cell (G = 1) and one layer this is exactly a_t = b + W h_{t-1} + U x_t, h_t =
tanh(a_t), o_t = c + V h_t.

The carried state is one array (L, P, B, H): P = 1 part (h) for rnn and gru, 2 for lstm
(h and the cell state s). Rows are time-major (T, B, ...) inside; a hidden state is a row
vector, so ``W h`` is written ``h @ W.T``. Everything that does not depend on the
recurrence is one array operation over all T*B rows; the cell loops over time.
All functions are dtype-generic: float32, float64 and complex128 (for the complex-step check).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from numpy.typing import DTypeLike

from manual import gru, lstm, rnn

# CELLS, layer_param_names and count_layers are deliberate copies of their twins in
# torchref/model.py: manual and torchref import neither each other, so each keeps its own;
# tests/test_twin_helpers.py checks that the two agree.
CELLS = {"rnn": rnn, "lstm": lstm, "gru": gru}
REDUCTIONS = ("mean", "sum")  # of the per-character losses -log p_t[y_t]
# G*H from which dU's scatter adds whole rows in a Python loop: below it, np.add.at's per-entry cost
# over a row is less than a loop iteration's (measured at 25 to 3,200 characters; docs/speed.md)
ROW_SCATTER_MIN = 384


Cell = str | ModuleType  # a built-in cell's name, or the module of a cell plugged in (docs/cells.md)


def cell_module(cell: Cell) -> ModuleType:
    """A built-in cell by name, or a cell module the caller resolved (docs/cells.md#writing-a-cell)."""
    return CELLS[cell] if isinstance(cell, str) else cell


def layer_param_names(layer: int) -> dict[str, str]:
    """{'U': 'U', 'W': 'W', 'b': 'b'} for layer 0, {'U': 'U2', ...} for layer 1 (the second)."""
    suffix = "" if layer == 0 else str(layer + 1)
    return {name: name + suffix for name in ("U", "W", "b")}


def count_layers(params: dict[str, np.ndarray]) -> int:
    """L, the number of recurrent layers: one W, W2, ... per layer."""
    return sum(1 for name in params if name.startswith("W"))


def zero_state(
    cell: Cell, num_layers: int, batch_size: int, hidden_size: int, dtype: DTypeLike = np.float64
) -> np.ndarray:
    """(L, P, B, H) zeros: the state every epoch starts from."""
    return np.zeros((num_layers, cell_module(cell).STATE_PARTS, batch_size, hidden_size), dtype=dtype)


@dataclass
class LayerCache:
    below: np.ndarray | None  # (T, B, H) the layer's input from below; None for layer 1 (tokens)
    recurrence: rnn.RNNCache | lstm.LSTMCache | gru.GRUCache  # the cell's own cache


@dataclass
class Cache:
    """What backward needs from forward. inputs, targets: (T, B) time-major ids;
    top: (T, B, H) the top layer's hidden states; probs: (T * B, V), row t * B + s."""

    cell: Cell
    inputs: np.ndarray
    targets: np.ndarray
    layers: list[LayerCache]
    top: np.ndarray
    probs: np.ndarray
    params: dict[str, np.ndarray]
    state_last: np.ndarray  # (L, P, B, H): carried into the next chunk
    reduction: str = "mean"  # how the loss combined the T*B per-character losses: 'mean' or 'sum'
    mean_over: int | None = None  # the N a 'mean' divides by; None: this chunk's T*B (a segment's is the sequence's)


def run_layers(
    params: dict[str, np.ndarray], inputs_tb: np.ndarray, state0: np.ndarray, cell: Cell
) -> tuple[np.ndarray, np.ndarray, list[LayerCache]]:
    """The recurrent stack over a chunk. inputs_tb: (T, B) ids; state0: (L, P, B, H).
    Returns (top hidden (T, B, H), state_last (L, P, B, H), list of LayerCache)."""
    recurrence = cell_module(cell)
    below: np.ndarray | None = None  # the layer below's hidden states; None under layer 1 (tokens)
    layers: list[LayerCache] = []
    states: list[np.ndarray] = []
    for layer in range(len(state0)):
        names = layer_param_names(layer)
        U, W, b = params[names["U"]], params[names["W"]], params[names["b"]]
        if below is None:
            x_proj = input_lookup(U, b, inputs_tb)  # (T, B, G*H): b + U x_t
        else:
            x_proj = below @ U.T + b  # (T, B, H) @ (H, G*H): b_l + U_l h_t^{l-1}
        hidden, state_last, cache = recurrence.recurrence_forward(x_proj, W, state0[layer])
        layers.append(LayerCache(below, cache))
        states.append(state_last)
        below = hidden
    assert below is not None  # L >= 1 layers ran: below holds the top layer's hidden states
    return below, np.stack(states), layers


def input_lookup(U: np.ndarray, b: np.ndarray, inputs_tb: np.ndarray) -> np.ndarray:
    """x_proj_t = b + U x_t for one-hot x_t: column x_t of U, plus b. U (G*H, V), b (G*H,), inputs_tb (T, B) ids.
    Returns (T, B, G*H), C-contiguous. Each entry is U[g, x_t] + b[g] rounded once, whichever way it is gathered.
    """
    vocab_size = U.shape[1]
    if inputs_tb.size >= vocab_size:
        # Many characters (a training chunk): b + U^T once, V rows, then a row gather, each row contiguous.
        return np.take(U.T + b, inputs_tb, axis=0)
    # Few (sampling, one character a call): gather just the T*B columns, no parameter-sized b + U^T per call.
    columns = np.take(U, inputs_tb, axis=1)  # (G*H, T, B): column x_t of U for every (t, s)
    x_proj = np.ascontiguousarray(columns.transpose(1, 2, 0))  # (T, B, G*H): U x_t
    x_proj += b
    return x_proj


def forward(
    params: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    state0: np.ndarray,
    cell: Cell = "rnn",
    reduction: str = "mean",
) -> tuple[np.number, Cache]:
    """Cross-entropy of a batch: the mean over its T*B characters, or with reduction='sum' their sum.

    inputs, targets: (B, T) int ids, targets shifted by one; state0: (L, P, B, H).
    Returns (loss scalar of the parameters' dtype, cache).
    """
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}; choose from {REDUCTIONS}")
    inputs_tb = np.ascontiguousarray(inputs.T)  # (B, T) -> (T, B)
    targets_tb = np.ascontiguousarray(targets.T)  # (B, T) -> (T, B)
    top, state_last, layers = run_layers(params, inputs_tb, state0, cell)
    steps, streams, hidden_size = top.shape
    logits = top.reshape(steps * streams, hidden_size) @ params["V"].T + params["c"]  # (T*B, V): o_t = c + V h_t
    probs, loss = softmax_cross_entropy(logits, targets_tb.reshape(-1), reduction)
    return loss, Cache(cell, inputs_tb, targets_tb, layers, top, probs, params, state_last, reduction)


def softmax_log_likelihood(logits: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row-wise softmax and log p_t[y_t]. logits: (N, V); targets: (N,) int. Returns (probs (N, V), (N,)).

    The row max is subtracted first so exp never overflows; for complex input the
    max of the real part is used, which leaves the result analytic.
    """
    shifted = logits - logits.real.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    probs = exp / sum_exp[:, None]
    rows = np.arange(len(targets))
    log_likelihood = shifted[rows, targets] - np.log(sum_exp)  # log p_t[y_t]
    return probs, log_likelihood


def softmax_cross_entropy(
    logits: np.ndarray, targets: np.ndarray, reduction: str = "mean"
) -> tuple[np.ndarray, np.number]:
    """Row-wise softmax and the mean (or, with reduction='sum', the sum) negative log-likelihood.

    logits: (N, V); targets: (N,) int. Returns (probs (N, V), loss scalar).
    """
    probs, log_likelihood = softmax_log_likelihood(logits, targets)
    if reduction == "sum":
        return probs, -log_likelihood.sum()  # L = sum_t -log p_t[y_t]
    return probs, -log_likelihood.mean()  # L = (1/N) sum_t -log p_t[y_t]


def input_lookup_grad(d_x_proj_rows: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """dU of the layer-1 lookup x_proj_t = b + U x_t: dU = sum_t dx_proj_t x_t^T, x_t one-hot.

    d_x_proj_rows: (T*B, G*H); tokens: (T*B,) ids. Returns dU (G*H, V), C-contiguous.
    Row t adds dx_proj_t into column x_t: a scatter-add, O(T*B*G*H) work and no (T*B, V) one-hot,
    every occurrence of a repeated token added (a plain ``dU[:, x] += ...`` would keep only the last),
    in row order t = 0, 1, ... Either route below makes the same additions in that order.
    """
    gate_rows = d_x_proj_rows.shape[1]
    if gate_rows >= ROW_SCATTER_MIN:
        # long rows: one contiguous add per character into row x_t of dU^T
        d_U_T = np.zeros((vocab_size, gate_rows), dtype=d_x_proj_rows.dtype)
        for row, token in zip(d_x_proj_rows, tokens.tolist(), strict=True):
            d_U_T[token] += row
        return np.ascontiguousarray(d_U_T.T)
    # short rows: np.add.at in one call; its fast loop needs a 1-D index and 1-D values, so the scatter
    # goes through dU's flat view, where entry (g, x) of dU sits at position g * V + x
    d_U = np.zeros((gate_rows, vocab_size), dtype=d_x_proj_rows.dtype)
    positions = tokens[:, None] + vocab_size * np.arange(gate_rows)  # (T*B, G*H): flat position of (g, x_t)
    np.add.at(d_U.reshape(-1), positions.reshape(-1), d_x_proj_rows.reshape(-1))
    return d_U


def new_gradients(cache: Cache) -> dict[str, np.ndarray]:
    """Empty arrays for every gradient, in the order backward computes them: V, c, then W, b, U of each layer
    from the top down."""
    dtype = np.result_type(cache.probs, *cache.params.values())
    order = ["V", "c"]
    for layer in reversed(range(len(cache.layers))):
        order += [layer_param_names(layer)[key] for key in ("W", "b", "U")]
    return {name: np.empty(cache.params[name].shape, dtype) for name in order}


def backward(
    cache: Cache, out: dict[str, np.ndarray] | None = None, carry: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Gradients of the loss forward computed (mean or sum, ``cache.reduction``) with respect to
    every parameter (same names and shapes).

    out: arrays to write the gradients into (name -> C-contiguous array of the parameter's shape and
    dtype, e.g. the views of one flat buffer, manual.flat.FlatArrays); None allocates new ones. Returns out.
    carry: optional (L, P, B, H), read as dL/dstate_last from beyond the chunk and overwritten with dL/dstate0
    (each cell's recurrence_backward, layer by layer): checkpointed BPTT's segments (manual/checkpointed.py).
    No clipping here: clipping belongs to the training step, and clipping inside
    backward would make the gradient disagree with finite differences.
    """
    return backward_from_logits(cache, logits_gradient(cache), out, carry)


def logits_gradient(cache: Cache) -> np.ndarray:
    """dL/do_t for every row: (T*B, V), row t * B + s for stream s."""
    rows = cache.probs.shape[0]  # N = T*B
    d_logits = cache.probs.copy()  # dL/do_t = p_t - onehot(y_t) for the sum, divided by N for the mean
    d_logits[np.arange(rows), cache.targets.reshape(-1)] -= 1
    if cache.reduction == "mean":
        d_logits /= rows if cache.mean_over is None else cache.mean_over
    return d_logits


def backward_from_logits(
    cache: Cache, d_logits: np.ndarray, out: dict[str, np.ndarray] | None = None, carry: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """J^T d_logits: the backward pass from any d_logits (T*B, V) = d(scalar)/do_t, through the output layer and
    the stack, to every parameter. ``backward`` starts it from the loss's; manual.hessian's Gauss-Newton product
    from H_L J v. out, carry: as for ``backward``. Returns out."""
    params = cache.params
    grads = new_gradients(cache) if out is None else out
    steps, streams, hidden_size = cache.top.shape
    rows = steps * streams
    top_rows = cache.top.reshape(rows, hidden_size)  # (T*B, H)

    np.matmul(d_logits.T, top_rows, out=grads["V"])  # o_t = c + V h_t  =>  dV = sum_t do_t h_t^T
    np.sum(d_logits, axis=0, out=grads["c"])  # dc = sum_t do_t
    d_hidden = (d_logits @ params["V"]).reshape(steps, streams, hidden_size)  # dL/dh_t^L through o_t

    recurrence = cell_module(cache.cell)
    for layer in reversed(range(len(cache.layers))):
        names = layer_param_names(layer)
        below = cache.layers[layer].below
        if carry is None:
            d_x_proj, d_W = recurrence.recurrence_backward(d_hidden, cache.layers[layer].recurrence)
        else:
            d_x_proj, d_W = recurrence.recurrence_backward(d_hidden, cache.layers[layer].recurrence, carry=carry[layer])
        grads[names["W"]][...] = d_W
        d_x_proj_rows = d_x_proj.reshape(rows, -1)  # (T*B, G*H)
        np.sum(d_x_proj_rows, axis=0, out=grads[names["b"]])  # x_proj_t = b + U x_t: db = sum_t dx_proj_t
        if below is None:
            d_U = grads[names["U"]]
            d_U[...] = input_lookup_grad(d_x_proj_rows, cache.inputs.reshape(-1), d_U.shape[1])
        else:
            # dU_l = sum_t dx_proj_t h_t^{l-1 T}
            np.matmul(d_x_proj_rows.T, below.reshape(rows, hidden_size), out=grads[names["U"]])
            d_hidden = d_x_proj @ params[names["U"]]  # x_proj_t = ... + U_l h_t^{l-1}: into the layer below
    return grads


def step(
    params: dict[str, np.ndarray], tokens: np.ndarray, state: np.ndarray, cell: Cell = "rnn"
) -> tuple[np.ndarray, np.ndarray]:
    """One time step without loss, for sampling. tokens: (B,) ids; state: (L, P, B, H).
    Returns (logits (B, V), state (L, P, B, H))."""
    top, state_last, _ = run_layers(params, np.asarray(tokens)[None], state, cell)  # (B,) -> (1, B)
    return top[0] @ params["V"].T + params["c"], state_last
