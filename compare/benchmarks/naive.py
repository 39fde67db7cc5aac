"""The common speed baseline: a per-character loop in the style of min-char-rnn.

Andrej Karpathy's min-char-rnn.py (2015) is where many people first met BPTT. It
walks one character at a time, forward and then backward, and builds every weight
gradient from one outer product per character. This is a faithful port of its
``lossFun`` to this project's model and conventions, so that it computes exactly
the loss and gradients of ``manual`` and only the way of computing them differs:

* vectors are 1-D arrays instead of (n, 1) columns;
* ``U x_t`` with a one-hot x_t is the column lookup ``U[:, x_t]``, and
  ``dU += outer(da_t, x_t)`` is ``dU[:, x_t] += da_t`` (the same numbers without
  multiplying by zeros);
* the loss is the mean over all characters (min-char-rnn summed), so every
  per-character output gradient is divided by the number of characters;
* softmax subtracts the max logit first, as ``manual`` does;
* a batch of B streams is handled one stream at a time, each stream one
  character at a time: the loop the vectorized implementations get rid of.

The update is ``manual.Adagrad``, and clipping is the element-wise clip of
``ManualEngine``, so a training step does the same work apart from the gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from compare.model.engines import ManualEngine, StepStats

PARAM_NAMES = ("U", "W", "V", "b", "c")


@dataclass
class NaiveResult:
    """Loss and gradients of one batch, as min-char-rnn's lossFun returns them."""

    loss: float  # mean cross-entropy over all B * T characters, nats per character
    grads: dict  # dL/dU, dL/dW, dL/dV, dL/db, dL/dc, shaped like the parameters
    h_last: np.ndarray  # (B, H) hidden state after the last character of each stream


def loss_and_grads(params: dict, inputs: np.ndarray, targets: np.ndarray, h0: np.ndarray) -> NaiveResult:
    """Mean loss and its gradients for inputs, targets (B, T) and h0 (B, H), stream by stream."""
    grads = {name: np.zeros_like(params[name]) for name in PARAM_NAMES}
    char_weight = 1.0 / inputs.size  # d(mean)/d(each character's loss)
    h_last = np.empty_like(h0)
    loss_sum = 0.0
    for stream in range(inputs.shape[0]):
        stream_loss, h_last[stream] = stream_loss_and_grads(
            params, inputs[stream], targets[stream], h0[stream], grads, char_weight
        )
        loss_sum += stream_loss
    return NaiveResult(loss_sum / inputs.size, grads, h_last)


def stream_loss_and_grads(
    params: dict,
    inputs: np.ndarray,
    targets: np.ndarray,
    h_prev: np.ndarray,
    grads: dict,
    char_weight: float,
) -> tuple[float, np.ndarray]:
    """One stream of T characters: adds its gradients into ``grads``.

    Returns (summed loss of the stream, last hidden state), the two things
    min-char-rnn's lossFun hands back besides the gradients.
    """
    U, W, V, b, c = (params[name] for name in PARAM_NAMES)
    hs, ps = {-1: h_prev}, {}  # hidden states and softmax outputs by time step, as in min-char-rnn
    loss = 0.0
    for t in range(len(inputs)):  # forward, one character at a time
        hs[t] = np.tanh(U[:, inputs[t]] + np.dot(W, hs[t - 1]) + b)  # h_t = tanh(U x_t + W h_{t-1} + b)
        ys = np.dot(V, hs[t]) + c  # o_t = c + V h_t
        shifted = ys - ys.real.max()
        exp = np.exp(shifted)
        sum_exp = np.sum(exp)
        ps[t] = exp / sum_exp  # p_t = softmax(o_t)
        loss += np.log(sum_exp) - shifted[targets[t]]  # -log p_t[y_t], never the log of a p that rounded to 0

    dU, dW, dV, db, dc = (grads[name] for name in PARAM_NAMES)
    dh_next = np.zeros_like(h_prev)
    for t in reversed(range(len(inputs))):  # backward, one character at a time
        dy = np.copy(ps[t])
        dy[targets[t]] -= 1  # dL/do_t = p_t - onehot(y_t) ...
        dy *= char_weight  # ... divided by the number of characters (mean loss)
        dV += np.outer(dy, hs[t])  # dV += do_t h_t^T
        dc += dy  # dc += do_t
        dh = np.dot(V.T, dy) + dh_next  # h_t feeds o_t and a_{t+1}
        dh_raw = (1 - hs[t] * hs[t]) * dh  # through tanh: da_t = (1 - h_t^2) * dh_t
        db += dh_raw  # db += da_t
        dU[:, inputs[t]] += dh_raw  # dU += da_t x_t^T: only column x_t is nonzero
        dW += np.outer(dh_raw, hs[t - 1])  # dW += da_t h_{t-1}^T
        dh_next = np.dot(W.T, dh_raw)  # dh_{t-1} = W^T da_t
    return loss, hs[len(inputs) - 1]


class NaiveEngine(ManualEngine):
    """``ManualEngine`` with min-char-rnn's gradient: same parameters, clip and AdaGrad.

    One layer of the vanilla cell only, as in min-char-rnn.
    """

    name = "naive"

    def __init__(self, params: dict, lr: float, clip: float, dtype: str = "float32"):
        if set(params) != set(PARAM_NAMES):
            raise ValueError(f"the naive baseline takes exactly {PARAM_NAMES} (one vanilla RNN layer)")
        super().__init__(params, lr, clip, dtype)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        assert self.hidden is not None, "reset_hidden() or load_state() comes before the first step"
        h0 = self.hidden[0, 0]  # the engine's (layers, parts, B, H) state holds one (B, H) array here
        result = loss_and_grads(self.params, inputs, targets, h0)
        self.hidden = result.h_last[None, None]
        return self.clip_and_update(result.loss, result.grads)
