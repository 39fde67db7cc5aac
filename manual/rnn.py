"""Vanilla RNN cell: recurrence forward and hand-derived backward (BPTT), over a whole chunk.

(``step_backward`` is one step of that backward alone, for the gradient flow of docs/gradflow.md.)

    a_t = b + W h_{t-1} + U x_t        (x_proj_t = b + U x_t: the caller's input projection)
    h_t = tanh(a_t)

U (H, in), W (H, H), b (H,): one gate block; x_t is the layer's input (a one-hot token for
layer 1, the layer below's h_t above it). The carried state has one part: state[0] = h.
``manual.model`` computes x_proj for all t at once and puts the output layer and the loss
around the cell.

This cell alone is tuned for NumPy's per-call overhead (np.dot for @, ``out=`` buffers, a
contiguous W^T, tanh' for all t in one call): the speed targets of ``compare.bench`` are set
on it at batch 1, where a step is microseconds of arithmetic and the calls are the cost. The
gated cells, timed but held to no target, stay in the plain form.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# GATES and STATE_PARTS: a deliberate copy of torchref/rnn.py's, since manual and torchref
# import neither each other; tests/test_twin_helpers.py checks that the two agree.
GATES = 1
STATE_PARTS = 1  # state[0] = h


@dataclass
class RNNCache:
    hidden: np.ndarray  # (T + 1, B, H): hidden[0] is h_0, hidden[t] is h_t
    W: np.ndarray  # (H, H)


def recurrence_forward(
    x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray
) -> tuple[np.ndarray, np.ndarray, RNNCache]:
    """h_t for t = 1..T, from x_proj_t = b + U x_t and the carried state.

    x_proj:  (T, B, H)   b + U x_t
    W:       (H, H)
    state0:  (1, B, H)   h_0
    Returns (hidden, state_T, cache):
    hidden:  (T, B, H)   h_1 .. h_T
    state_T: (1, B, H)   h_T, the next chunk's state0
    cache:   RNNCache
    """
    steps, streams, size = x_proj.shape
    hidden = np.empty((steps + 1, streams, size), dtype=np.result_type(x_proj, W, state0))
    hidden[0] = state0[0]
    W_T = np.ascontiguousarray(W.T)  # W^T copied row-major once: BLAS multiplies by it faster than by a transposed view
    for t in range(steps):
        # h_t = tanh(b + W h_{t-1} + U x_t), written straight into its row of ``hidden``;
        # np.dot is the same product as @, with less overhead per call.
        np.tanh(x_proj[t] + np.dot(hidden[t], W_T), out=hidden[t + 1])
    return hidden[1:], hidden[-1][None], RNNCache(hidden, W)


def recurrence_backward(
    d_hidden: np.ndarray,
    cache: RNNCache,
    trace: dict[str, np.ndarray] | None = None,
    carry: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """dL/dx_proj_t and dL/dW, from dL/dh_t of the layer above.

    d_hidden: (T, B, H)  dL/dh_t from the layer above (the output layer, or U of the next layer)
    cache:    RNNCache
    trace:    optional dict, filled with d_h (T, B, H) and d_carry (T, P, B, H) (docs/cells.md#per-step-gradients-trace)
    carry:    optional (P, B, H), read as dL/dstate_T from beyond the chunk (None: zero) and overwritten with
              dL/dstate_0: how checkpointed BPTT passes the gradient between segments (manual/checkpointed.py)
    Returns (d_x_proj, d_W):
    d_x_proj: (T, B, H)  dL/dx_proj_t = dL/da_t, since a_t = x_proj_t + W h_{t-1}
    d_W:      (H, H)
    """
    steps, streams, size = d_hidden.shape
    tanh_grad = np.square(cache.hidden[1:])  # h_t^2 for all t: h_t = tanh(a_t), so
    np.subtract(1, tanh_grad, out=tanh_grad)  # tanh'(a_t) = 1 - h_t^2, in the same buffer
    d_x_proj = np.empty_like(d_hidden)  # d_x_proj[t] = da_t, filled backwards in time
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)  # into h_T from step T + 1: none, the next chunk's
    if carry is not None:
        d_h_next[...] = carry[0]  # into h_T from the segment after this one
    if trace is not None:  # docs/cells.md#per-step-gradients-trace: what gradcheck --diagnose compares per step
        trace["d_h"] = np.zeros(d_hidden.shape, dtype=d_x_proj.dtype)
        trace["d_carry"] = np.zeros((steps, STATE_PARTS, *d_hidden.shape[1:]), dtype=d_x_proj.dtype)
    for t in reversed(range(steps)):
        d_h = d_hidden[t] + d_h_next  # dh_t = from the output (layer above) + from the next step
        if trace is not None:  # dh_t as used, and the carry into h_t that step t + 1 sent
            trace["d_h"][t], trace["d_carry"][t, 0] = d_h, d_h_next
        np.multiply(d_h, tanh_grad[t], out=d_x_proj[t])  # da_t = dh_t * tanh'(a_t)
        d_h_next = np.dot(d_x_proj[t], cache.W)  # a_t = ... + W h_{t-1}: dh_{t-1} gets W^T da_t
    if carry is not None:
        carry[0] = d_h_next  # dL/dh_0, for the segment before this one
    rows = steps * streams
    d_W = d_x_proj.reshape(rows, size).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_x_proj, d_W


def step_backward(d_state: np.ndarray, t: int, cache: RNNCache) -> np.ndarray:
    """One step of the recursion above, alone: dL/dstate_{t-1} from dL/dstate_t, through step t only.

    d_state: (1, B, H)  dL/dh_t, all of it (the output at t and the steps after t)
    t:       1..T       the step that made h_t from h_{t-1} (cache.hidden[t] is h_t)
    Returns  (1, B, H)  dL/dh_{t-1} through a_t = b + W h_{t-1} + U x_t: W^T (dh_t * (1 - h_t^2))
    """
    d_a = d_state[0] * (1 - cache.hidden[t] ** 2)  # da_t = dh_t * tanh'(a_t)
    return (d_a @ cache.W)[None]  # dh_{t-1} = W^T da_t
