"""Four routes, one gradient (gradcheck --routes): reverse and forward mode, by hand and by autograd.

    bptt     hand-written BPTT, reverse mode by hand (``manual.backward``)
    rtrl     real-time recurrent learning, forward mode by hand (``manual.rtrl``)
    reverse  reverse-mode autograd on the twin (``loss.backward()``)
    forward  forward-mode autograd on the twin (``torch.func.jacfwd``, ``torchref.forward``)

The table holds, per parameter, the norm-wise relative difference (compare.training.agreement's
relative_difference) of every pair of routes; the verdict is the largest of them, judged against
float64's bound (AGREEMENT_BOUND): four exact gradients differ by rounding only.

Forward mode costs what reverse mode does not, so the sizes are checked first (rtrl_cost):
RTRL's influence is B * P*H * (number of U, W, b entries) numbers, updated by a (P*H, P*H) product
per stream and step; jacfwd carries one tangent per parameter entry through every operation.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch

import manual
from compare.gradients.oracles import Problem, table_order, torch_single_thread
from compare.model.cells import cell_pair
from compare.model.init import amount, param_shapes
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
# The most bytes forward mode may hold, by hand (RTRL's influence) or by jacfwd (its tangents): past it a
# step takes minutes, not seconds, on this project's machines (docs/forward.md#cost)
FORWARD_MODE_BYTES = 1 << 30


@dataclass
class ForwardModeCost:
    """What one step of forward mode costs at given sizes (float64)."""

    influence_bytes: int  # RTRL: B * P*H * (U, W, b entries) * 8
    flops_per_step: int  # RTRL: 2 * B * (P*H)^2 * (U, W, b entries): the J_t M_{t-1} product
    jacfwd_bytes: int  # jacfwd: one tangent per parameter entry of each step's activations, (G*H + V) B per step

    def problem(self, what: str) -> str | None:
        """'<what> needs ...' in one line when either forward mode is past FORWARD_MODE_BYTES, else None."""
        if max(self.influence_bytes, self.jacfwd_bytes) <= FORWARD_MODE_BYTES:
            return None
        return (
            f"{what} is impractical at these sizes: RTRL's influence is {amount(self.influence_bytes)} and "
            f"{self.flops_per_step:.1e} flops per step, forward-mode autograd about {amount(self.jacfwd_bytes)}, "
            f"more than the {amount(FORWARD_MODE_BYTES)} allowed; lower --hidden-size or --batch-size"
        )


def rtrl_cost(vocab_size: int, hidden_size: int, cell: str, batch_size: int, seq_length: int) -> ForwardModeCost:
    """The cost of forward mode for a one-layer model of these sizes (see ForwardModeCost)."""
    module = cell_pair(cell).manual
    gates, parts = int(module.GATES), int(module.STATE_PARTS)
    shapes = param_shapes(vocab_size, hidden_size, cell)
    recurrent = sum(math.prod(shapes[name]) for name in rtrl.RECURRENT)
    everything = sum(math.prod(shape) for shape in shapes.values())
    state_rows = parts * hidden_size
    activations = seq_length * batch_size * (gates * hidden_size + vocab_size)
    return ForwardModeCost(
        influence_bytes=8 * batch_size * state_rows * recurrent,
        flops_per_step=2 * batch_size * state_rows**2 * recurrent,
        jacfwd_bytes=8 * everything * activations,
    )


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
