"""Adam written out by hand, as ``torch.optim.Adam`` defines it, in its operation order.

With weight_decay 0 and amsgrad off (Kingma & Ba 2015, Algorithm 1, eps outside the root):

    m_t     = m_{t-1} + (1 - beta1) * (g_t - m_{t-1})           torch: exp_avg.lerp_(grad, 1 - beta1)
    v_t     = beta2 * v_{t-1} + (1 - beta2) * g_t^2              torch: exp_avg_sq.mul_(beta2).addcmul_(...)
    a_t     = lr / (1 - beta1^t)                                 bias correction of m (a Python float)
    d_t     = sqrt(v_t) / sqrt(1 - beta2^t) + eps                bias correction of v, then eps
    theta_t = theta_{t-1} + (-a_t * m_t) / d_t                   torch: param.addcdiv_(exp_avg, denom, value=-a_t)

m_0 = v_0 = 0, and t counts the updates from 1 (torch's ``step``), so the first steps are not
shrunk towards zero by the zero start. The scalars are computed as torch computes them (Python
floats: ``1 - beta1**t``, ``bias_correction2**0.5``), so they are the same numbers. As in
``manual.Adagrad`` and ``manual.RMSprop``, torch's ``lerp_`` and ``addcmul_`` may round once
where NumPy rounds twice, and its float64 sqrt may be the other neighbour of the root:
tests/test_optimizer.py bounds the difference per step.
"""

from __future__ import annotations

import numpy as np

from manual.flat import FlatArrays

BETAS = (0.9, 0.999)  # torch.optim.Adam's defaults
EPS = 1e-8


class Adam:
    """Updates a dict of NumPy parameters in place.

    params: the dict to update; lr: step size; betas: decays of the two moments; eps: added outside the
    root. ``moments`` holds m, ``accumulators`` holds v (same shapes as params); ``steps`` is t.
    """

    def __init__(
        self, params: dict[str, np.ndarray], lr: float = 1e-3, betas: tuple[float, float] = BETAS, eps: float = EPS
    ) -> None:
        self.params = params
        self.lr = lr
        self.beta1, self.beta2 = betas
        self.eps = eps
        self.steps = 0
        self.moments: dict[str, np.ndarray]
        self.accumulators: dict[str, np.ndarray]
        if isinstance(params, FlatArrays):
            self.moments, self.accumulators = params.zeros_like(), params.zeros_like()
        else:
            self.moments = {name: np.zeros_like(value) for name, value in params.items()}
            self.accumulators = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (a dict keyed like params)."""
        self.steps += 1
        t = float(self.steps)  # torch keeps step as a float tensor and reads it back as a Python float
        step_size = self.lr / (1 - self.beta1**t)  # a_t
        root_correction = (1 - self.beta2**t) ** 0.5  # sqrt(1 - beta2^t)
        if isinstance(self.params, FlatArrays) and self.params.same_layout(grads):
            assert isinstance(grads, FlatArrays)  # same_layout said so
            assert isinstance(self.moments, FlatArrays) and isinstance(self.accumulators, FlatArrays)
            buffers = (self.params.buffer, grads.buffer, self.moments.buffer, self.accumulators.buffer)
            self.update(*buffers, step_size, root_correction)
            return
        for name, grad in grads.items():
            self.update(
                self.params[name], grad, self.moments[name], self.accumulators[name], step_size, root_correction
            )

    def update(
        self,
        theta: np.ndarray,
        grad: np.ndarray,
        mean: np.ndarray,
        mean_square: np.ndarray,
        step_size: float,
        root_correction: float,
    ) -> None:
        """One step of one array (or of whole flat buffers): theta, m and v updated in place."""
        mean += (1 - self.beta1) * (grad - mean)  # m_t, as lerp_ with a weight below 1/2
        mean_square *= self.beta2
        mean_square += (1 - self.beta2) * grad * grad  # v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
        denominator = np.sqrt(mean_square)
        denominator /= root_correction
        denominator += self.eps  # d_t = sqrt(v_t) / sqrt(1 - beta2^t) + eps
        theta += (-step_size * mean) / denominator  # theta_t = theta_{t-1} + (-a_t * m_t) / d_t
