"""Second order, three routes to one product: gradcheck --second-order (docs/second-order.md).

For a random direction v over every parameter, in float64:

    manual        H v by the R-operator through BPTT (``manual.hessian``)
    autograd      H v by double backward through the twin (``torchref.second``)
    complex step  Im grad(theta + i h v) / h of the hand-written gradient in complex128: grad is analytic,
                  so grad(theta + ihv) = grad + ih H v - h^2 (...)/2 + ...; with h = 1e-30 the truncation
                  is far below rounding and nothing is subtracted

and the Gauss-Newton product G v = J^T H_L J v, manual against autograd (jvp, then vjp). Errors are
norm-wise per parameter (``oracles.norm_error``), judged against SECOND_ORDER_BOUND.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

import manual
import torchref
from compare.gradients.oracles import COMPLEX_STEP, Problem, norm_error, table_order, torch_single_thread
from manual import hessian
from torchref import second

# The three routes agree within this, norm-wise per parameter: each is float64 rounding (u = 1.1e-16) carried
# through T steps of a few products, measured at 1e-16..1e-15 on every cell and depth (tests/test_hessian.py);
# a wrong term of the R-pass (R{h_{t-1}} left out, say) is off by 1e-3 or more. Issue 30's target.
SECOND_ORDER_BOUND = 1e-12
ROUTES = {  # column -> what it compares
    "autograd": "manual H v vs autograd's (double backward through the twin)",
    "complex": "manual H v vs the complex step of the hand-written gradient, Im grad(theta + ihv) / h",
    "autograd-complex": "autograd's H v vs the complex step: the two references against each other",
    "gauss-newton": "manual G v = J^T H_L J v vs autograd's (jvp of the logits, then vjp)",
}


def random_direction(params: dict[str, np.ndarray], seed: int) -> dict[str, np.ndarray]:
    """v: N(0, 1) entries, keyed and shaped like the parameters."""
    rng = np.random.default_rng(seed)
    return {name: rng.normal(size=value.shape) for name, value in params.items()}


def built_in_cell(problem: Problem) -> str:
    """The problem's cell by name: the R-passes are written for the built-in cells only."""
    if not isinstance(problem.cell, str) or problem.cell not in hessian.R_PASSES:
        raise ValueError(f"the second order is written for the built-in cells {', '.join(hessian.R_PASSES)} only")
    return problem.cell


def manual_products(problem: Problem, vector: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(H v, G v) by hand."""
    _, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, built_in_cell(problem))
    return hessian.hessian_vector_product(cache, vector), hessian.gauss_newton_vector_product(cache, vector)


def autograd_products(problem: Problem, vector: dict[str, np.ndarray]) -> tuple[dict, dict]:
    """(H v, G v) by autograd through the twin, float64."""
    model = torchref.CharRNN(problem.params, cell=built_in_cell(problem), dtype=torch.float64)
    batch = (torch.from_numpy(problem.inputs), torch.from_numpy(problem.targets), torch.from_numpy(problem.state0))
    tangent = {name: torch.from_numpy(value) for name, value in vector.items()}
    with torch_single_thread():
        products = (
            second.hessian_vector_product(model, *batch, tangent),
            second.gauss_newton_vector_product(model, *batch, tangent),
        )
    return tuple({name: value.numpy() for name, value in product.items()} for product in products)  # type: ignore[return-value]


def complex_step_hessian(
    problem: Problem, vector: dict[str, np.ndarray], step: float = COMPLEX_STEP
) -> dict[str, np.ndarray]:
    """H v = Im grad(theta + i h v) / h, the hand-written forward and backward in complex128."""
    nudged = {name: value + 1j * step * vector[name] for name, value in problem.params.items()}
    state0 = problem.state0.astype(np.complex128)
    _, cache = manual.forward(nudged, problem.inputs, problem.targets, state0, built_in_cell(problem))
    return {name: grad.imag / step for name, grad in manual.backward(cache).items()}


def second_order_check(problem: Problem, seed: int) -> dict[str, Any]:
    """Every route on the problem along one random direction: the errors per parameter and column, the verdict."""
    vector = random_direction(problem.params, seed)
    hand_h, hand_g = manual_products(problem, vector)
    torch_h, torch_g = autograd_products(problem, vector)
    complex_h = complex_step_hessian(problem, vector)
    pairs = {
        "autograd": (hand_h, torch_h),
        "complex": (hand_h, complex_h),
        "autograd-complex": (torch_h, complex_h),
        "gauss-newton": (hand_g, torch_g),
    }
    errors = {
        name: {column: norm_error(a[name], b[name]) for column, (a, b) in pairs.items()}
        for name in table_order(problem.params)
    }
    worst = max(max(row.values()) for row in errors.values())
    return {"errors": errors, "largest": worst, "bound": SECOND_ORDER_BOUND, "agree": bool(worst <= SECOND_ORDER_BOUND)}


def format_second_order(report: dict[str, Any]) -> str:
    """The table (a row per parameter, a column per comparison), its legend, and the verdict's line."""
    header = "| weights | " + " | ".join(ROUTES) + " |"
    rule = "|---|" + "---:|" * len(ROUTES)
    rows = [
        f"| {name} | " + " | ".join(f"{row[column]:.2e}" for column in ROUTES) + " |"
        for name, row in report["errors"].items()
    ]
    legend = [f"- `{column}`: {meaning}" for column, meaning in ROUTES.items()]
    legend.append("- each cell: |a - b| / (|a| + |b|), norm-wise over the parameter, float64, one random direction v")
    agree = "agree" if report["agree"] else "DISAGREE"
    verdict = f"Second order: the routes {agree}: largest error {report['largest']:.2e}, bound {report['bound']:.0e}."
    return "\n".join([header, rule, *rows, "", *legend, "", verdict])
