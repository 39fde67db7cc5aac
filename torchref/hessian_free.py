"""Hessian-free optimization (Martens 2010) on torch tensors, G v from ``torch.func`` (``torchref.second``).

The same algorithm as ``manual.hessian_free``, line for line and in the same operation order (its
docstring has the equations): CG on (G + lambda I) d = -g from d = 0 for k steps, the step s = lr d,
the model's prediction q(s) = g . s + 1/2 s . (G s), and Levenberg-Marquardt's rule on
rho = (L(theta + s) - L(theta)) / q(s). A dot product sums one ``torch.vdot`` per parameter, in the
parameters' order, in float64 (Python floats), as manual sums its ``np.vdot`` s. Imports nothing from
``manual`` or ``compare``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

Vector = dict[str, torch.Tensor]

CG_ITERATIONS = 10
DAMPING = 2.0  # lambda_0 (manual.hessian_free says why)
MIN_DAMPING = DAMPING  # lambda's floor (manual.hessian_free says why)
DAMPING_UP, DAMPING_DOWN = 3 / 2, 2 / 3
RHO_LOW, RHO_HIGH = 1 / 4, 3 / 4


def dot(a: Vector, b: Vector) -> float:
    """a . b over every parameter: one vdot each, summed in float64 in the parameters' order."""
    return sum((float(torch.vdot(a[name].reshape(-1), b[name].reshape(-1))) for name in a), 0.0)


@torch.no_grad()
def conjugate_gradient(
    gauss_newton: Callable[[Vector], Vector], grads: Vector, damping: float, iterations: int
) -> Vector:
    """d after ``iterations`` CG steps on (G + damping I) d = -g from d = 0."""
    d = {name: torch.zeros_like(g) for name, g in grads.items()}
    r = {name: -g for name, g in grads.items()}  # r_0 = -g
    p = {name: value.clone() for name, value in r.items()}
    r_dot_r = dot(r, r)
    for _ in range(iterations):
        if r_dot_r == 0.0:  # d solves the system exactly: alpha would be 0 / 0
            break
        g_p = gauss_newton(p)
        damped_p = {name: g_p[name] + damping * p[name] for name in p}  # (G + lambda I) p_i
        curvature = dot(p, damped_p)
        if curvature <= 0.0:  # lambda gone to 0 (it falls by 2/3 a step) along a null direction of G: no descent
            break
        alpha = r_dot_r / curvature
        for name in d:
            d[name] += alpha * p[name]  # d_{i+1} = d_i + alpha_i p_i
            r[name] -= alpha * damped_p[name]  # r_{i+1} = r_i - alpha_i (G + lambda I) p_i
        r_dot_r_next = dot(r, r)
        beta = r_dot_r_next / r_dot_r
        for name in p:
            p[name] = r[name] + beta * p[name]  # p_{i+1} = r_{i+1} + beta_i p_i
        r_dot_r = r_dot_r_next
    return d


def adjusted_damping(damping: float, rho: float, min_damping: float = MIN_DAMPING) -> float:
    """Levenberg-Marquardt: lambda times 3/2 when rho < 1/4, times 2/3 (not below min_damping) when rho > 3/4
    (nan: unchanged)."""
    if rho < RHO_LOW:
        return damping * DAMPING_UP
    if rho > RHO_HIGH:
        return max(damping * DAMPING_DOWN, min_damping)
    return damping


class HessianFree:
    """Updates a dict of tensors (a model's named parameters) in place, one CG solve per step.

    Arguments and attributes as ``manual.hessian_free.HessianFree``: ``damping`` is lambda, ``ratio`` rho.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        lr: float = 1.0,
        damping: float = DAMPING,
        cg_iterations: int = CG_ITERATIONS,
        min_damping: float = MIN_DAMPING,
    ) -> None:
        self.params = params
        self.lr = lr
        self.damping = damping
        self.min_damping = min_damping
        self.cg_iterations = cg_iterations
        self.ratio = float("nan")

    @torch.no_grad()
    def step(
        self,
        grads: Vector,
        loss: float,
        gauss_newton: Callable[[Vector], Vector],
        loss_after: Callable[[], float],
    ) -> None:
        """One update. grads: g, keyed like params; loss: L(theta); gauss_newton: v -> G v at theta;
        loss_after: L on the same minibatch at the params as they are now."""
        g = {name: grads[name] for name in self.params}
        d = conjugate_gradient(gauss_newton, g, self.damping, self.cg_iterations)
        s = {name: self.lr * value for name, value in d.items()}  # s = lr d
        predicted = dot(g, s) + 0.5 * dot(s, gauss_newton(s))  # q(s) = g . s + 1/2 s . (G s), G at theta
        for name, param in self.params.items():
            param += s[name]  # theta <- theta + s
        change = float(loss_after()) - float(loss)
        # rho = (L(theta + s) - L(theta)) / q(s); nan when q(s) = 0 (g = 0), which leaves lambda as it is
        self.ratio = change / predicted if predicted != 0.0 else float("nan")
        self.damping = adjusted_damping(self.damping, self.ratio, self.min_damping)
