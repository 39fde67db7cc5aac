"""Vanilla character RNN: forward pass and hand-derived backward pass (BPTT).

The model, in the notation of the Deep Learning book (section 10.2):

    a_t = b + W h_{t-1} + U x_t          x_t one-hot, so U x_t is a column of U
    h_t = tanh(a_t)
    o_t = c + V h_t
    p_t = softmax(o_t)
    L   = mean over all t and streams of -log p_t[y_t]       (nats per character)

Shapes: U (H, V), W (H, H), V (V, H), b (H,), c (V,), with H the hidden size and
V the vocabulary size. A batch holds B parallel streams of T characters.

Internally rows are laid out time-major, (T, B, ...), and a hidden state is a row
vector, so ``W h`` is written ``h @ W.T``. Everything that does not depend on the
recurrence (input lookup, output projection, softmax, and every weight gradient)
is one array operation over all T*B rows; only the recurrence is a loop over time.

All functions are dtype-generic: float32, float64, and complex128 (so that the
gradient can be checked with the complex-step method).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PARAM_NAMES = ("U", "W", "V", "b", "c")


@dataclass
class Cache:
    """What backward needs from forward.

    inputs, targets: (T, B) int token ids, time-major.
    hidden: (T + 1, B, H) hidden states; hidden[0] is h_0, hidden[t] is h_t.
    probs: (T * B, V) softmax outputs, row t * B + s is stream s at time t.
    params: the parameter dict the forward pass used.
    """

    inputs: np.ndarray
    targets: np.ndarray
    hidden: np.ndarray
    probs: np.ndarray
    params: dict

    @property
    def h_last(self) -> np.ndarray:
        """(B, H) hidden state after the last step: carried into the next chunk."""
        return self.hidden[-1]


def forward(params: dict, inputs: np.ndarray, targets: np.ndarray, h0: np.ndarray):
    """Mean cross-entropy of a batch.

    params: dict of U (H, V), W (H, H), V (V, H), b (H,), c (V,).
    inputs, targets: (B, T) int token ids; targets are inputs shifted by one.
    h0: (B, H) hidden state carried in from the previous chunk.
    Returns (loss, cache): loss a scalar of the parameters' dtype.
    """
    U, W, V, b, c = (params[name] for name in PARAM_NAMES)
    inputs_tb = np.ascontiguousarray(inputs.T)  # (B, T) -> (T, B)
    targets_tb = np.ascontiguousarray(targets.T)  # (B, T) -> (T, B)
    steps, streams = inputs_tb.shape
    hidden_size = W.shape[0]
    dtype = np.result_type(U, W, b, h0)

    input_proj = U.T[inputs_tb] + b  # (T, B, H): U x_t + b, a column lookup of U
    hidden = np.empty((steps + 1, streams, hidden_size), dtype=dtype)
    hidden[0] = h0
    for t in range(steps):
        hidden[t + 1] = np.tanh(input_proj[t] + hidden[t] @ W.T)  # h_t = tanh(b + W h_{t-1} + U x_t)

    hidden_rows = hidden[1:].reshape(steps * streams, hidden_size)  # (T*B, H)
    logits = hidden_rows @ V.T + c  # (T*B, V): o_t = c + V h_t
    probs, loss = softmax_cross_entropy(logits, targets_tb.reshape(-1))
    return loss, Cache(inputs_tb, targets_tb, hidden, probs, params)


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray):
    """Row-wise softmax and mean negative log-likelihood.

    logits: (N, V); targets: (N,) int. Returns (probs (N, V), loss scalar).
    The row max is subtracted first so exp never overflows; for complex input the
    max of the real part is used, which leaves the result analytic.
    """
    shifted = logits - logits.real.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    probs = exp / sum_exp[:, None]
    rows = np.arange(len(targets))
    log_likelihood = shifted[rows, targets] - np.log(sum_exp)  # log p_t[y_t]
    return probs, -log_likelihood.mean()


def backward(cache: Cache) -> dict:
    """Gradients of the mean loss with respect to U, W, V, b, c (same shapes).

    No clipping here: clipping belongs to the training step, and clipping inside
    backward would make the gradient disagree with finite differences.
    """
    U, W, V = cache.params["U"], cache.params["W"], cache.params["V"]
    steps, streams = cache.inputs.shape
    hidden_size = W.shape[0]
    rows = steps * streams
    hidden_rows = cache.hidden[1:].reshape(rows, hidden_size)  # (T*B, H): h_t
    prev_rows = cache.hidden[:-1].reshape(rows, hidden_size)  # (T*B, H): h_{t-1}

    d_logits = cache.probs.copy()  # dL/do_t = (p_t - onehot(y_t)) / N
    d_logits[np.arange(rows), cache.targets.reshape(-1)] -= 1
    d_logits /= rows

    d_V = d_logits.T @ hidden_rows  # o_t = c + V h_t  =>  dV = sum_t do_t h_t^T
    d_c = d_logits.sum(axis=0)  # dc = sum_t do_t
    d_hidden_out = (d_logits @ V).reshape(steps, streams, hidden_size)  # dL/dh_t through o_t only

    d_pre = np.empty_like(d_hidden_out)  # dL/da_t, filled backwards in time
    d_h_next = np.zeros((streams, hidden_size), dtype=d_hidden_out.dtype)
    for t in reversed(range(steps)):
        d_h = d_hidden_out[t] + d_h_next  # h_t feeds o_t and a_{t+1}
        d_pre[t] = d_h * (1 - cache.hidden[t + 1] ** 2)  # h_t = tanh(a_t): tanh' = 1 - h_t^2
        d_h_next = d_pre[t] @ W  # a_t = ... + W h_{t-1}  =>  dh_{t-1} += W^T da_t

    d_pre_rows = d_pre.reshape(rows, hidden_size)  # (T*B, H)
    d_W = d_pre_rows.T @ prev_rows  # dW = sum_t da_t h_{t-1}^T
    d_b = d_pre_rows.sum(axis=0)  # db = sum_t da_t
    d_U = np.zeros_like(U)  # dU = sum_t da_t x_t^T: da_t added into column x_t
    np.add.at(d_U.T, cache.inputs.reshape(-1), d_pre_rows)
    return {"U": d_U, "W": d_W, "V": d_V, "b": d_b, "c": d_c}


def step(params: dict, token: np.ndarray, h_prev: np.ndarray):
    """One time step without loss, for sampling.

    token: (B,) int ids of x_t; h_prev: (B, H).
    Returns (logits (B, V), h (B, H)).
    """
    h = np.tanh(params["b"] + h_prev @ params["W"].T + params["U"].T[token])
    return h @ params["V"].T + params["c"], h
