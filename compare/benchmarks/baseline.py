"""A frozen copy of the hand-written vanilla training step at commit f287690: the benchmark's "before".

Not the project's model (that is ``manual``, which keeps changing): this is the reference
that ``python -m compare.bench --peers`` and ``--calls`` time and count beside it, so that a
speed-up of ``manual`` is measured in one run against the code path it replaced (issue 17:
"manual vanilla at H100 B1 T25 >= 1.3x today's figure in the same run"). It is a copy, and
imports nothing from ``manual``, so that it stays what it was while ``manual`` changes.

What it copies, NumPy call for NumPy call and array operation for array operation, from f287690's
``manual/model.py``, ``manual/rnn.py``, ``manual/adagrad.py`` and ``ManualEngine.train_step`` /
``clip_and_update`` (compare/model/engines.py), for one layer of the vanilla cell, float32,
the 'mean' loss and eps outside the square root:

    x_proj_t = b + U x_t                (a column lookup of U)
    h_t = tanh(x_proj_t + W h_{t-1}),   o_t = c + V h_t,   L = mean_t -log softmax(o_t)[y_t]
    backward through time, the element-wise clip at ``clip``, then AdaGrad:
    G += g * g,   theta += (-lr * g) / (sqrt(G) + eps)

Only the dispatch on the cell, the layer and the loss reduction is left out (one cell, one
layer, one reduction): per step a few Python calls, built-in calls (len, isinstance) and dict
look-ups fewer than f287690 made, so ``--calls`` counts the "before" slightly low; none of its
NumPy calls or array operations is left out. tests/test_bench_baseline.py checks that it trains
bit for bit as ``ManualEngine`` does (at f287690 it must; later, it shows whether ``manual``
still does).
Shapes: U (H, V), W (H, H), V (V, H), b (H,), c (V,); inputs, targets (B, T) int ids.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ADAGRAD_EPS = 1e-10  # torch.optim.Adagrad's default, as ManualEngine's


@dataclass
class RecurrenceCache:
    hidden: np.ndarray  # (T + 1, B, H): hidden[0] is h_0
    W: np.ndarray  # (H, H)


@dataclass
class StepCache:
    inputs: np.ndarray  # (T, B) time-major ids
    targets: np.ndarray  # (T, B)
    recurrence: RecurrenceCache
    top: np.ndarray  # (T, B, H) h_1 .. h_T
    probs: np.ndarray  # (T * B, V)
    state_last: np.ndarray  # (1, 1, B, H)


@dataclass
class BaselineStats:
    loss: float  # mean cross-entropy before the update, nats per character
    grad_norm: float  # L2 norm of every gradient, before clipping
    clipped: int  # gradient entries the clip changed


def recurrence_forward(x_proj: np.ndarray, W: np.ndarray, state0: np.ndarray) -> tuple:
    """x_proj (T, B, H), W (H, H), state0 (1, B, H) -> (hidden (T, B, H), state_T (1, B, H), cache)."""
    steps, streams, size = x_proj.shape
    hidden = np.empty((steps + 1, streams, size), dtype=np.result_type(x_proj, W, state0))
    hidden[0] = state0[0]
    W_T = np.ascontiguousarray(W.T)
    for t in range(steps):
        np.tanh(x_proj[t] + np.dot(hidden[t], W_T), out=hidden[t + 1])  # h_t = tanh(b + U x_t + W h_{t-1})
    return hidden[1:], hidden[-1][None], RecurrenceCache(hidden, W)


def recurrence_backward(d_hidden: np.ndarray, cache: RecurrenceCache) -> tuple:
    """d_hidden (T, B, H) dL/dh_t from the readout -> (d_x_proj (T, B, H) = dL/da_t, d_W (H, H))."""
    steps, streams, size = d_hidden.shape
    tanh_grad = np.square(cache.hidden[1:])
    np.subtract(1, tanh_grad, out=tanh_grad)  # tanh'(a_t) = 1 - h_t^2
    d_x_proj = np.empty_like(d_hidden)
    d_h_next = np.zeros((streams, size), dtype=d_x_proj.dtype)
    for t in reversed(range(steps)):
        d_h = d_hidden[t] + d_h_next
        np.multiply(d_h, tanh_grad[t], out=d_x_proj[t])  # da_t = dh_t * tanh'(a_t)
        d_h_next = np.dot(d_x_proj[t], cache.W)  # dh_{t-1} gets W^T da_t
    rows = steps * streams
    d_W = d_x_proj.reshape(rows, size).T @ cache.hidden[:-1].reshape(rows, size)  # dW = sum_t da_t h_{t-1}^T
    return d_x_proj, d_W


def softmax_cross_entropy(logits: np.ndarray, targets: np.ndarray) -> tuple:
    """logits (N, V), targets (N,) -> (probs (N, V), the mean of -log p[y])."""
    shifted = logits - logits.real.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1)
    probs = exp / sum_exp[:, None]
    rows = np.arange(len(targets))
    log_likelihood = shifted[rows, targets] - np.log(sum_exp)
    return probs, -log_likelihood.mean()


def forward(params: dict, inputs: np.ndarray, targets: np.ndarray, state0: np.ndarray) -> tuple:
    """inputs, targets (B, T); state0 (1, 1, B, H) -> (loss, StepCache)."""
    inputs_tb = np.ascontiguousarray(inputs.T)
    targets_tb = np.ascontiguousarray(targets.T)
    U, W, b = params["U"], params["W"], params["b"]
    columns = np.take(U, inputs_tb, axis=1)  # (H, T, B): column x_t of U
    x_proj = np.ascontiguousarray(columns.transpose(1, 2, 0))
    x_proj += b
    top, layer_last, recurrence = recurrence_forward(x_proj, W, state0[0])
    state_last = np.stack([layer_last])
    steps, streams, hidden_size = top.shape
    logits = top.reshape(steps * streams, hidden_size) @ params["V"].T + params["c"]
    probs, loss = softmax_cross_entropy(logits, targets_tb.reshape(-1))
    return loss, StepCache(inputs_tb, targets_tb, recurrence, top, probs, state_last)


def input_lookup_grad(d_x_proj_rows: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """d_x_proj_rows (T*B, H), tokens (T*B,) -> dU (H, V): a scatter-add into the columns x_t."""
    gate_rows = d_x_proj_rows.shape[1]
    d_U = np.zeros((gate_rows, vocab_size), dtype=d_x_proj_rows.dtype)
    positions = tokens[:, None] + vocab_size * np.arange(gate_rows)
    np.add.at(d_U.reshape(-1), positions.reshape(-1), d_x_proj_rows.reshape(-1))
    return d_U


def backward(params: dict, cache: StepCache) -> dict:
    """Gradients of the mean loss, in f287690's order: V, c, W, b, U (the norm sums in this order)."""
    steps, streams, hidden_size = cache.top.shape
    rows = steps * streams
    top_rows = cache.top.reshape(rows, hidden_size)
    d_logits = cache.probs.copy()
    d_logits[np.arange(rows), cache.targets.reshape(-1)] -= 1
    d_logits /= rows
    grads = {"V": d_logits.T @ top_rows, "c": d_logits.sum(axis=0)}
    d_hidden = (d_logits @ params["V"]).reshape(steps, streams, hidden_size)
    d_x_proj, grads["W"] = recurrence_backward(d_hidden, cache.recurrence)
    d_x_proj_rows = d_x_proj.reshape(rows, -1)
    grads["b"] = d_x_proj_rows.sum(axis=0)
    grads["U"] = input_lookup_grad(d_x_proj_rows, cache.inputs.reshape(-1), params["U"].shape[1])
    return grads


class BaselineEngine:
    """reset_hidden and train_step, as the benchmarks drive an engine; float32 throughout."""

    name = "baseline"

    def __init__(self, params: dict, lr: float, clip: float, eps: float = ADAGRAD_EPS) -> None:
        self.params = {name: np.array(value, dtype=np.float32) for name, value in params.items()}
        self.accumulators = {name: np.zeros_like(value) for name, value in self.params.items()}
        self.lr = lr
        self.eps = eps
        self.clip = clip
        self.hidden: np.ndarray | None = None  # (1, 1, B, H)

    def reset_hidden(self, batch_size: int) -> None:
        self.hidden = np.zeros((1, 1, batch_size, self.params["W"].shape[1]), dtype=np.float32)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> BaselineStats:
        assert self.hidden is not None, "reset_hidden() comes before the first train_step()"
        loss, cache = forward(self.params, inputs, targets, self.hidden)
        grads = backward(self.params, cache)
        self.hidden = cache.state_last
        return self.clip_and_update(loss, grads)

    def clip_and_update(self, loss: np.floating, grads: dict) -> BaselineStats:
        grad_norm = float(np.sqrt(sum(float(np.vdot(g, g).real) for g in grads.values())))
        clipped = 0
        if self.clip > 0:
            for grad in grads.values():
                if grad.max() > self.clip or grad.min() < -self.clip:
                    clipped += int(np.count_nonzero(np.abs(grad) > self.clip))
                    np.clip(grad, -self.clip, self.clip, out=grad)
        self.adagrad_step(grads)
        return BaselineStats(float(loss), grad_norm, clipped)

    def adagrad_step(self, grads: dict) -> None:
        for name, grad in grads.items():
            accumulator = self.accumulators[name]
            accumulator += grad * grad  # G_t = G_{t-1} + g_t^2
            std = np.sqrt(accumulator) + self.eps  # sqrt(G_t) + eps
            self.params[name] += (-self.lr * grad) / std  # theta += (-lr * g) / std
