"""gradcheck --diagnose's verdict backward: where the hand-written backward first goes wrong, and in words.

The backward runs from the top layer down and from step T down, so the first bad place is the top-most
layer, and in it the latest step, where a per-step quantity differs from autograd's: dL/dx_proj_t per
gate block, and for a cell that traces (localize.traces) dL/dh_t and the carry into each part of the
state. At step T nothing is carried in from a later step, so an error there enters through the output
path; one that starts at t < T, through the recurrent path (the gradient carried back from step t + 1).
``Diagnosis`` holds what compare.gradients.diagnose and this module find.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import manual
from compare.gradients.localize import (
    StepQuantities,
    block_errors,
    carry_errors,
    gate_names,
    hidden_errors,
    manual_steps,
    part_names,
    torch_steps,
)
from compare.gradients.methods import Problem
from compare.model.cells import cell_pair

# float64 on these small problems: a correct backward matches autograd to ~1e-14 (rounding), a bug by > 1e-4
AGREE = 1e-9


@dataclass
class Diagnosis:
    verdict: str  # forward, agree, loss, summing or backward (see the module docstring)
    lines: list[str]  # the diagnosis in words
    blocks: dict[str, list[str]] = field(default_factory=dict)  # wrong parameter -> its wrong gate blocks
    ratio: float | None = None  # verdict loss: manual / autograd
    layer: int | None = None  # verdict backward or forward: the layer (1 = bottom) where it starts
    step: int | None = None  # the first bad time step, 1..T (the backward runs from T down)
    path: str | None = None  # verdict backward: "output" or "recurrent"
    gates: list[str] = field(default_factory=list)  # verdict backward: gates wrong at the first bad step
    heat: np.ndarray | None = None  # (L * G, T): relative error of dL/dx_proj_t per layer and gate block
    heat_rows: list[str] = field(default_factory=list)  # "layer l, gate g" for each row of heat
    complex_usable: bool = True
    traced: bool = True  # the cell's recurrence_backward reports dL/dh_t and the carry (the optional trace)
    quantity: str | None = None  # verdict backward: "d_carry (h)", "d_carry (s)", "d_h" or "d_x_proj", first wrong
    first_bad: dict[str, int] = field(default_factory=dict)  # each wrong quantity -> its first bad step, 1..T


TRACE_DOC = "docs/cells.md#per-step-gradients-trace"


def quantity_errors(
    mine: StepQuantities, theirs: StepQuantities, layer: int, names: tuple[str, ...], parts: tuple[str, ...]
) -> dict[str, np.ndarray]:
    """Quantity -> (T, k) relative errors in one layer: dL/dx_proj_t per gate, and where traced dL/dh_t, each carry."""
    errors = {"d_x_proj": block_errors(mine.d_x_proj[layer], theirs.d_x_proj[layer], len(names))}
    if mine.d_h is not None and mine.d_carry is not None and theirs.d_h is not None and theirs.d_carry is not None:
        errors["d_h"] = hidden_errors(mine.d_h[layer], theirs.d_h[layer])[:, None]
        carries = carry_errors(mine.d_carry[layer], theirs.d_carry[layer])  # (T, P)
        errors.update({f"d_carry ({part})": carries[:, [k]] for k, part in enumerate(parts)})
    return errors


def made_before(quantity: str) -> int:
    """Step t's backward makes the carry into state_t first (in step t + 1), then dL/dh_t, then dL/dx_proj_t."""
    return 0 if quantity.startswith("d_carry") else 1 if quantity == "d_h" else 2


def localize(problem: Problem, diagnosis: Diagnosis) -> None:
    """Fill in the heat map and, where a per-step quantity differs, the layer, first bad step, quantity and gates."""
    pair = cell_pair(problem.cell)
    names, parts = gate_names(pair.manual), part_names(pair.manual)
    mine, theirs = manual_steps(problem), torch_steps(problem)
    diagnosis.traced = mine.d_h is not None
    layers = [quantity_errors(mine, theirs, layer, names, parts) for layer in range(len(mine.d_x_proj))]
    diagnosis.heat = np.concatenate([np.concatenate(list(errors.values()), axis=1).T for errors in layers])
    labels = [*names, "dL/dh_t", *(f"carry into {part}" for part in parts)] if diagnosis.traced else names
    diagnosis.heat_rows = [f"layer {layer + 1}, {label}" for layer in range(len(layers)) for label in labels]
    for layer in reversed(range(len(layers))):  # the backward runs from the top layer down
        first = {  # the backward runs from step T down: a quantity's first bad step is its latest
            quantity: int(np.flatnonzero((errors > AGREE).any(axis=1)).max()) + 1
            for quantity, errors in layers[layer].items()
            if (errors > AGREE).any()
        }
        if first:
            steps, step = len(layers[layer]["d_x_proj"]), max(first.values())
            diagnosis.layer, diagnosis.step, diagnosis.first_bad = layer + 1, step, first
            diagnosis.quantity = min((q for q in first if first[q] == step), key=made_before)
            if diagnosis.traced:
                output = diagnosis.quantity == "d_x_proj" or (diagnosis.quantity == "d_h" and step == steps)
            else:
                output = step == steps  # nothing is carried into step T
            diagnosis.path = "output" if output else "recurrent"
            bad = layers[layer]["d_x_proj"][step - 1] > AGREE
            diagnosis.gates = [gate for gate, wrong in zip(names, bad, strict=True) if wrong]
            return


def quantity_line(problem: Problem, diagnosis: Diagnosis) -> str:
    """The words for the first wrong per-step quantity (a cell that traces)."""
    t, quantity, steps = diagnosis.step, diagnosis.quantity, problem.inputs.shape[1]
    assert t is not None and quantity is not None  # localize found where it starts
    if quantity == "d_x_proj":
        return (
            f"Per step: dL/dh_{t} and the carried gradient agree with autograd at step {t}, dL/dx_proj_{t} does not: "
            f"the error is in step {t}'s own derivatives, from dL/dh_t to the pre-activations."
        )
    if quantity == "d_h" and t == steps:
        return (
            f"Per step: dL/dh_{t} as step {t} uses it differs, with nothing carried in: the step does not use "
            "the output's dL/dh_t as given (d_hidden[t])."
        )
    if quantity == "d_h":
        return (
            f"Per step: the gradient carried back from step {t + 1} into h_{t} is right, but is not added into "
            f"dL/dh_{t} as step {t} uses it (from the output + from the next step): a dropped or doubled term."
        )
    part = quantity[len("d_carry (") : -1]
    line = (
        f"Per step: step {t + 1}'s dL/dh and dL/dx_proj agree with autograd, but the gradient it carries back "
        f"into {part}_{t} does not: the carry itself is wrong (the weight applied to it, transposed, or a dropped "
        "term)."
    )
    if part != "h" and diagnosis.first_bad.get("d_carry (h)", 0) < t:
        what = " (the cell state)" if part == "s" else ""
        line += f" The carry into h_{t} agrees: it is the carry of {part}{what} alone."
    return line


def backward_lines(problem: Problem, diagnosis: Diagnosis) -> list[str]:
    """The words for verdict backward: where dL/dx_proj_t first differs, through which path, and the quantity."""
    steps = problem.inputs.shape[1]
    t, gates = diagnosis.first_bad.get("d_x_proj", diagnosis.step), ", ".join(diagnosis.gates)
    assert diagnosis.layer is not None and t is not None  # localize found where it starts
    names, size = gate_names(cell_pair(problem.cell).manual), problem.state0.shape[-1]
    rows = ", ".join(
        f"rows {names.index(gate) * size}-{(names.index(gate) + 1) * size - 1} ({gate})" for gate in diagnosis.gates
    )
    params = "/".join(manual.layer_param_names(diagnosis.layer - 1).values())
    lines = [
        f"The backward goes wrong in layer {diagnosis.layer} of {len(problem.state0)}: dL/dx_proj_t first differs "
        f"from autograd at step {t} of {steps} (the backward runs from step {steps} down), in gate {gates}: "
        f"{rows} of {params}."
    ]
    if diagnosis.path == "output":
        lines.append(
            f"dL/dh_{t} and what is carried into step {t} are right, so the error enters through the output path: "
            f"the step's own derivatives from dL/dh_t to the pre-activation of gate {gates} (a missing or wrong "
            "derivative factor there)."
            if diagnosis.traced
            else f"Nothing is carried into step {steps} from a later step, so the error enters through the output "
            f"path: the step's own derivatives from dL/dh_t to the pre-activation of gate {gates} (a missing or "
            "wrong derivative factor there)."
        )
    else:
        lines.append(
            f"Step {steps} agrees, so each step's own derivatives are right: the error enters through the recurrent "
            f"path, the gradient carried from step {t + 1} back into step {t} (W^T applied to it, or a dropped term)."
        )
        right = [gate for gate in names if gate not in diagnosis.gates]
        if right and cell_pair(problem.cell).state_parts > 1:
            lines.append(
                f"Gate {', '.join(right)} still agrees at step {t}: the carry that is wrong is not the one into every "
                "gate (h's) but the one of another part of the carried state (an LSTM's cell state s)."
            )
    if diagnosis.traced:
        lines.append(quantity_line(problem, diagnosis))
    else:
        lines.append(
            "This cell's recurrence_backward takes no trace, so dL/dh_t and the carried state's gradient are not "
            f"compared per step: only dL/dx_proj_t ({TRACE_DOC})."
        )
    return lines
