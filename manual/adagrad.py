"""AdaGrad written out by hand, matching the update ``torch.optim.Adagrad`` documents.

With lr_decay = 0, weight_decay = 0 and initial_accumulator_value = 0:

    G_t     = G_{t-1} + g_t^2                      (element-wise, per parameter)
    theta_t = theta_{t-1} - lr * g_t / (sqrt(G_t) + eps)

eps sits outside the square root, as in PyTorch (min-char-rnn put 1e-8 inside).
"""

from __future__ import annotations

import numpy as np


class Adagrad:
    """Updates a dict of NumPy parameters in place.

    params: the dict to update; lr: step size; eps: PyTorch's default 1e-10.
    ``accumulators`` holds G for each parameter name (same shapes as params).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 0.1, eps: float = 1e-10) -> None:
        self.params = params
        self.lr = lr
        self.eps = eps
        self.accumulators = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (a dict keyed like params)."""
        for name, grad in grads.items():
            accumulator = self.accumulators[name]
            accumulator += grad * grad  # G_t = G_{t-1} + g_t^2
            self.params[name] -= self.lr * (grad / (np.sqrt(accumulator) + self.eps))
