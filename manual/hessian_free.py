"""Hessian-free optimization (Martens 2010, "Deep learning via Hessian-free optimization") by hand.

One update on a minibatch, from the gradient g of its loss L at theta and the Gauss-Newton product
v -> G v of the same minibatch (``manual.hessian.gauss_newton_vector_product`` on its forward cache):

    solve (G + lambda I) d = -g by k steps of conjugate gradient, from d_0 = 0:
        r_0 = -g,  p_0 = r_0                                      (r_i = -g - (G + lambda I) d_i)
        alpha_i = (r_i . r_i) / (p_i . (G + lambda I) p_i)
        d_{i+1} = d_i + alpha_i p_i
        r_{i+1} = r_i - alpha_i (G + lambda I) p_i
        beta_i  = (r_{i+1} . r_{i+1}) / (r_i . r_i)
        p_{i+1} = r_{i+1} + beta_i p_i
    s = lr d                                                      the step (lr 1: Martens' full step)
    q(s) = g . s + 1/2 s . (G s)                                  the change the quadratic model predicts
    theta <- theta + s
    rho = (L(theta + s) - L(theta)) / q(s)                        how well the model predicted it
    lambda <- 3/2 lambda if rho < 1/4,  2/3 lambda if rho > 3/4   Levenberg-Marquardt (Martens' section 4.1),
              never below lambda_min                              (a floor Martens' rule lacks: MIN_DAMPING)

G = J^T H_L J is positive semidefinite, so G + lambda I is positive definite for lambda > 0 and CG's
steps are well defined. q leaves the damping out, as Martens' does: rho measures the model of the
loss, not of the damped system. L(theta + s) is the same minibatch, from the same carried state.

What this leaves out of Martens' method, to stay short and deterministic: no preconditioner, no warm
start of CG from the previous d, no CG backtracking and no line search (the step is always taken),
and a fixed number k of iterations instead of his relative-progress stop. CG stops early only when
the residual is exactly zero (g = 0: d = 0 is the solution) or the curvature p . (G + lambda I) p is not
positive (as Martens' CG does: after many good steps lambda can fall below what float32 holds, and G is
singular: the characters a minibatch lacks give V's and c's rows no curvature).

The gradient given is the one the engine clips (--clip, --clip-norm), so with clipping the system
solved is (G + lambda I) d = -clip(g); q uses that same g.

Vectors are dicts keyed like the parameters; a dot product sums one ``np.vdot`` per parameter, in the
parameters' order, in float64.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Vector = dict[str, np.ndarray]

CG_ITERATIONS = 10
# lambda_0 and lambda's floor, where Martens' rule has none. On minibatches of a few hundred characters each
# step fits its own batch (rho near 1), so the rule alone lowers lambda by 2/3 a step without end and the steps,
# up to |g| / lambda long, overfit each batch until training diverges (at B 1 by step 15, at B 32 by step 430).
# Its scale: G of the mean loss is an average of per-character curvatures below 1/4 (H_L's entries are
# p_i (delta_ij - p_j)), so G's large eigenvalues are of order one. Its value is measured (docs/training.md
# #optimizers): at B 1 a floor of 1 let the training loss climb back after 1,000 steps and 2 did not; at B 32
# 1 trains faster than 2. 2 is the smallest that trains at the default batch; lambda starts there.
DAMPING = 2.0
MIN_DAMPING = DAMPING
DAMPING_UP, DAMPING_DOWN = 3 / 2, 2 / 3
RHO_LOW, RHO_HIGH = 1 / 4, 3 / 4


def dot(a: Vector, b: Vector) -> float:
    """a . b over every parameter: one vdot each, summed in float64 in the parameters' order."""
    return sum((float(np.vdot(a[name], b[name])) for name in a), 0.0)


def conjugate_gradient(
    gauss_newton: Callable[[Vector], Vector], grads: Vector, damping: float, iterations: int
) -> Vector:
    """d after ``iterations`` CG steps on (G + damping I) d = -g from d = 0 (see the module docstring)."""
    d = {name: np.zeros_like(g) for name, g in grads.items()}
    r = {name: -g for name, g in grads.items()}  # r_0 = -g - (G + lambda I) 0
    p = {name: value.copy() for name, value in r.items()}
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
    """Levenberg-Marquardt: more damping where the model overpredicted the decrease, less where it was good,
    but not below min_damping (rho nan: neither comparison holds, lambda stays)."""
    if rho < RHO_LOW:
        return damping * DAMPING_UP
    if rho > RHO_HIGH:
        return max(damping * DAMPING_DOWN, min_damping)
    return damping


class HessianFree:
    """Updates a dict of NumPy parameters in place, one CG solve per step.

    params: the dict to update; lr: the multiple of CG's d taken (1: Martens'); damping: lambda_0;
    min_damping: lambda's floor (0: Martens' rule alone); cg_iterations: k. ``damping`` holds the current
    lambda (the state a resume needs); ``ratio`` the last step's rho.
    """

    def __init__(
        self,
        params: dict[str, np.ndarray],
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

    def step(
        self,
        grads: dict[str, np.ndarray],
        loss: float,
        gauss_newton: Callable[[Vector], Vector],
        loss_after: Callable[[], float],
    ) -> None:
        """One update. grads: g, keyed like params; loss: L(theta) of the loss minimized;
        gauss_newton: v -> G v at theta; loss_after: L on the same minibatch at the params as they are now.
        """
        g = {name: grads[name] for name in self.params}
        d = conjugate_gradient(gauss_newton, g, self.damping, self.cg_iterations)
        s = {name: self.lr * value for name, value in d.items()}  # s = lr d
        predicted = dot(g, s) + 0.5 * dot(s, gauss_newton(s))  # q(s) = g . s + 1/2 s . (G s), G at theta
        for name in self.params:
            self.params[name] += s[name]  # theta <- theta + s
        change = float(loss_after()) - float(loss)
        # rho = (L(theta + s) - L(theta)) / q(s); nan when q(s) = 0 (g = 0), which leaves lambda as it is
        self.ratio = change / predicted if predicted != 0.0 else float("nan")
        self.damping = adjusted_damping(self.damping, self.ratio, self.min_damping)
