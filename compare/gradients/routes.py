"""Four routes, one gradient (gradcheck --routes): reverse and forward mode, by hand and by autograd.

    bptt     hand-written BPTT, reverse mode by hand (``manual.backward``)
    rtrl     real-time recurrent learning, forward mode by hand (``manual.rtrl``)
    reverse  reverse-mode autograd on the twin (``loss.backward()``)
    forward  forward-mode autograd on the twin (``torch.func.jacfwd``, ``torchref.forward``)

The table holds, per parameter, the norm-wise relative difference (compare.training.agreement's
relative_difference) of every pair of routes; the verdict is the largest of them, judged against
float64's bound (AGREEMENT_BOUND): four exact gradients differ by rounding only.

Forward mode costs what reverse mode does not, so the sizes are checked first
(compare.model.init.forward_mode_cost).
"""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import torch

import manual
from compare.gradients.oracles import Problem, table_order, torch_single_thread
from compare.model.cells import cell_pair
from compare.training.agreement import Agreement, Verdict, relative_difference
from manual import rtrl
from torchref import forward
from torchref.model import CharRNN

ROUTES = {  # name -> what it is (printed under the table)
    "bptt": "hand-written BPTT, reverse mode by hand (manual.backward)",
    "rtrl": "real-time recurrent learning, forward mode by hand (manual.rtrl)",
    "reverse": "reverse-mode autograd on the twin (loss.backward())",
    "forward": "forward-mode autograd on the twin (torch.func.jacfwd)",
}


def routes_problem(cell: str, num_layers: int) -> str | None:
    """Why --routes cannot run on this model, in one line, or None."""
    if num_layers != 1:
        return f"--routes compares one layer (RTRL by hand is written for one), got --num-layers {num_layers}"
    if cell_pair(cell).manual not in rtrl.JACOBIANS:
        return (
            f"--routes needs a built-in cell (rnn, lstm, gru): RTRL's step Jacobians are written for each, got {cell}"
        )
    return None


def route_gradients(problem: Problem) -> dict[str, tuple[float, dict[str, np.ndarray]]]:
    """route -> (loss, gradient by name) on the problem, float64, every route from the problem's state."""
    pair = cell_pair(problem.cell)
    params, inputs, targets, state0 = problem.params, problem.inputs, problem.targets, problem.state0
    loss, cache = manual.forward(params, inputs, targets, state0, pair.manual)
    routes = {"bptt": (float(loss), manual.backward(cache))}
    influence0 = rtrl.zero_influence(params, pair.manual, inputs.shape[0])
    rtrl_loss, rtrl_grads, _, _ = rtrl.chunk(params, inputs, targets, state0, influence0, pair.manual)
    routes["rtrl"] = (float(rtrl_loss), rtrl_grads)
    with torch_single_thread():
        model = CharRNN(params, cell=pair.torch, dtype=torch.float64)
        as_torch = (torch.from_numpy(inputs).long(), torch.from_numpy(targets).long(), torch.from_numpy(state0))
        reverse_loss, _ = model.loss(*as_torch)
        reverse_loss.backward()
        routes["reverse"] = (
            float(reverse_loss.detach()),
            {name: param.grad.numpy().copy() for name, param in model.named_parameters() if param.grad is not None},
        )
        function = forward.loss_function(model, *as_torch)
        at = forward.params_of(model)
        forward_grads, _ = forward.forward_gradient(function, at)
        routes["forward"] = (float(function(at)[0]), {name: grad.numpy() for name, grad in forward_grads.items()})
    return routes


def route_differences(routes: dict[str, tuple[float, dict[str, np.ndarray]]]) -> dict[str, Agreement]:
    """'bptt vs rtrl' -> the relative differences of the losses and of each parameter's gradient, every pair."""
    differences = {}
    for (first, (loss_a, grads_a)), (second, (loss_b, grads_b)) in combinations(routes.items(), 2):
        grads = {name: relative_difference(grads_a[name], grads_b[name]) for name in table_order(grads_b)}
        loss = relative_difference(np.asarray(loss_a), np.asarray(loss_b))
        differences[f"{first} vs {second}"] = Agreement(loss, grads)
    return differences


def routes_verdict(differences: dict[str, Agreement]) -> Verdict:
    """The largest difference of any pair, judged against float64's bound."""
    verdicts = [agreement.verdict("float64", f", {pair}") for pair, agreement in differences.items()]
    return max(verdicts, key=lambda verdict: (math.isnan(verdict.difference), verdict.difference))


def format_routes(differences: dict[str, Agreement]) -> str:
    """Markdown: a row per parameter (and the loss), a column per pair of routes; the legend below it."""
    pairs = list(differences)
    names = list(next(iter(differences.values())).grads)
    header = "| weights | " + " | ".join(pairs) + " |"
    rule = "|---|" + "---:|" * len(pairs)
    rows = [f"| {name} | " + " | ".join(f"{differences[p].grads[name]:.2e}" for p in pairs) + " |" for name in names]
    rows.append("| loss | " + " | ".join(f"{differences[p].loss:.2e}" for p in pairs) + " |")
    legend = [f"- `{route}`: {what}" for route, what in ROUTES.items()]
    legend.append("- each entry: max|a - b| / max|b| over the parameter's whole gradient (b the second route)")
    return "\n".join([header, rule, *rows, "", *legend])
