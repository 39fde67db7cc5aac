"""The vanilla training step's matrix products alone: the ceiling of ``manual``'s FLOP rate.

``python -m compare.bench --peers`` times this beside ``manual`` for the vanilla cell. It runs
the products of one step of manual/model.py and manual/rnn.py, with the same operand layouts
and the same NumPy functions (np.dot, matmul), into buffers allocated once, and nothing else: no lookup of U, no
tanh, no softmax, no clip, no AdaGrad, no allocation. Per chunk of T steps and B streams:

    forward,  each t:   h_{t-1} W^T          (B, H) x (H, H)      np.dot, W^T contiguous
    output:             o = h V^T            (T*B, H) x (H, V)
    backward:           dV = do^T h          (V, T*B) x (T*B, H)
                        dh = do V            (T*B, V) x (V, H)
    backward, each t:   da_t W               (B, H) x (H, H)      np.dot
                        dW = da^T h_prev     (H, T*B) x (T*B, H)

That is 3 H^2 + 3 V H multiply-adds a character, the count compare.benchmarks.flops gives the
whole step, so its GFLOP/s is the most ``manual`` could reach if everything that is not a
product took no time. The operands are fixed random values in [-1, 1]: no denormals, and
timing does not depend on them.
"""

from __future__ import annotations

import numpy as np

from compare.model.engines import StepStats


class ProductsEngine:
    """The benchmark's interface of an engine (reset_hidden, train_step); it trains nothing."""

    name = "products"

    def __init__(self, vocab_size: int, hidden_size: int, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)
        self.vocab_size, self.hidden_size = vocab_size, hidden_size
        self.W = self.uniform(hidden_size, hidden_size)  # (H, H)
        self.W_T = np.ascontiguousarray(self.W.T)  # as manual/rnn.py multiplies forward
        self.V = self.uniform(vocab_size, hidden_size)  # (V, H)
        self.buffers: dict[str, np.ndarray] = {}

    def uniform(self, *shape: int) -> np.ndarray:
        return self.rng.uniform(-1, 1, size=shape).astype(np.float32)

    def reset_hidden(self, batch_size: int) -> None:
        self.buffers = {}  # allocated by the first chunk, whose shape sets every buffer's

    def allocate(self, steps: int, streams: int) -> dict[str, np.ndarray]:
        """Every operand and result of one chunk, once: (T+1, B, H) states, (T*B, V) logits and so on."""
        rows, size, vocab = steps * streams, self.hidden_size, self.vocab_size
        return {
            "hidden": self.uniform(steps + 1, streams, size),
            "pre": np.empty((steps, streams, size), np.float32),
            "logits": np.empty((rows, vocab), np.float32),
            "d_logits": self.uniform(rows, vocab),
            "d_V": np.empty((vocab, size), np.float32),
            "d_hidden": np.empty((rows, size), np.float32),
            "d_x_proj": self.uniform(steps, streams, size),
            "d_h_next": np.empty((streams, size), np.float32),
            "d_W": np.empty((size, size), np.float32),
        }

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        """inputs, targets (B, T): only their shape is read. Runs the products; reports nothing learned."""
        streams, steps = inputs.shape
        if "pre" not in self.buffers or self.buffers["pre"].shape[:2] != (steps, streams):
            self.buffers = self.allocate(steps, streams)
        buf, rows, size = self.buffers, steps * streams, self.hidden_size
        hidden = buf["hidden"]
        # forward
        for t in range(steps):
            np.dot(hidden[t], self.W_T, out=buf["pre"][t])
        top_rows = hidden[1:].reshape(rows, size)
        np.matmul(top_rows, self.V.T, out=buf["logits"])
        # backward
        np.matmul(buf["d_logits"].T, top_rows, out=buf["d_V"])
        np.matmul(buf["d_logits"], self.V, out=buf["d_hidden"])
        for t in reversed(range(steps)):
            np.dot(buf["d_x_proj"][t], self.W, out=buf["d_h_next"])
        np.matmul(buf["d_x_proj"].reshape(rows, size).T, hidden[:-1].reshape(rows, size), out=buf["d_W"])
        return StepStats(float("nan"), float("nan"), 0)
