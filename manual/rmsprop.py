"""RMSProp written out by hand, as char-rnn trains with it, in the operation order of ``torch.optim.RMSprop``.

char-rnn's ``optim.rmsprop`` (decay alpha 0.95, eps 1e-8 added outside the root), which
``torch.optim.RMSprop(alpha=0.95, eps=1e-8)`` computes too (momentum 0, not centered):

    m_t     = alpha * m_{t-1} + (1 - alpha) * g_t^2          (element-wise, per parameter; m_0 = 0)
    theta_t = theta_{t-1} + (-lr * g_t) / (sqrt(m_t) + eps)

torch's lines are ``square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)``, ``avg =
square_avg.sqrt().add_(eps)`` and ``param.addcdiv_(grad, avg, value=-lr)``. Each line below is
that one, rounded in the same order; as with ``manual.Adagrad`` (its docstring says why), the
update of m_t may be one ulp off torch's (torch's ``addcmul_`` rounds ``m + (1 - alpha) * g * g``
in a fused multiply-add, NumPy rounds the product first) and torch's float64 sqrt may be the
other neighbour of the root: tests/test_optimizer.py bounds both.

On ``manual.flat.FlatArrays`` laid out alike, one step is a few whole-buffer passes.
"""

from __future__ import annotations

import numpy as np

from manual.flat import FlatArrays

ALPHA = 0.95  # char-rnn's decay rate (torch's default is 0.99)
EPS = 1e-8  # char-rnn's, and torch.optim.RMSprop's default


class RMSprop:
    """Updates a dict of NumPy parameters in place.

    params: the dict to update; lr: step size; alpha: decay of the running mean of g^2; eps: added
    outside the root. ``accumulators`` holds m for each parameter name (same shapes as params).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 2e-3, alpha: float = ALPHA, eps: float = EPS) -> None:
        self.params = params
        self.lr = lr
        self.alpha = alpha
        self.eps = eps
        self.accumulators: dict[str, np.ndarray]
        if isinstance(params, FlatArrays):
            self.accumulators = params.zeros_like()
        else:
            self.accumulators = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (a dict keyed like params)."""
        if isinstance(self.params, FlatArrays) and self.params.same_layout(grads):
            assert isinstance(grads, FlatArrays) and isinstance(self.accumulators, FlatArrays)  # same_layout said so
            self.update(self.params.buffer, grads.buffer, self.accumulators.buffer)
            return
        for name, grad in grads.items():
            self.update(self.params[name], grad, self.accumulators[name])

    def update(self, theta: np.ndarray, grad: np.ndarray, mean_square: np.ndarray) -> None:
        """One step of one array (or of whole flat buffers), all three updated in place but grad."""
        mean_square *= self.alpha
        mean_square += (1 - self.alpha) * grad * grad  # m_t = alpha m_{t-1} + (1 - alpha) g_t^2, as addcmul_
        denominator = np.sqrt(mean_square)
        denominator += self.eps  # sqrt(m_t) + eps
        theta += (-self.lr * grad) / denominator  # theta_t = theta_{t-1} + (-lr * g_t) / (sqrt(m_t) + eps)
