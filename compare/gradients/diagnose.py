"""gradcheck --diagnose: when the oracles disagree, say where the hand-written backward is wrong.

In the order a reader fixes things:

    forward     the two forwards already differ (loss or some h_t): the backward is not the problem yet
    agree       every gradient matches autograd (and the numerical oracle)
    loss        manual = k x autograd everywhere: a correct gradient of another loss (sum vs mean: k = T)
    summing     every per-step dL/dx_proj_t matches, a parameter's gradient does not: the error is in how
                that parameter's gradient is summed from the per-step ones (db, dU, or the cell's dW)
    backward    dL/dx_proj_t first differs at some layer, step and gate; at step T nothing is carried
                in from a later step, so an error there enters through the output path, one that
                starts at t < T through the recurrent path (the gradient carried back from step t + 1)

Where the backward first goes wrong: it runs from the top layer down and from step T down, so the first
bad place is the top-most layer, and in it the latest step, where a per-step quantity (compare.gradients.localize)
differs from autograd's: dL/dx_proj_t per gate block, and for a cell that traces (localize.traces) dL/dh_t
and the carry into each part of the state. The backward verdict also says which of these goes wrong first,
in the order step t's backward makes them: the carry into state_t (made by step t + 1), then dL/dh_t (the
output's part + that carry), then dL/dx_proj_t (the step's own derivatives).

The picture (--heatmap): log10 of the per-step relative errors, time step x row; the rows of each layer are
dL/dx_proj_t per gate block, then (a cell that traces) dL/dh_t and the carry into each part of the carried
state (docs/cells.md#per-step-gradients-trace). matplotlib is an optional extra (pip install -e ".[plot]");
only save_heatmap needs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import manual
from compare.cli.errors import UsageError
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
from compare.gradients.oracles import Backward, Oracles, Problem, norm_error, run_oracles, worst_error
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


# ----- the verdict -------------------------------------------------------------------------------

FORWARD_AGREE = 1e-12  # the same float64 forward in two programs: rounding only, ~1e-16


SUMS = {  # how each parameter's gradient is summed from the per-step ones
    "b": "db = dx_proj_t summed over every step t and stream",
    "U": "dU = sum over t of dx_proj_t x_t^T",
    "W": "dW = sum over t of the recurrent pre-activation's gradient times h_{t-1}^T, in recurrence_backward",
    "V": "dV = sum over t of do_t h_t^T",
    "c": "dc = do_t summed over every step t and stream",
}


def wrong_blocks(oracles: Oracles, problem: Problem) -> dict[str, list[str]]:
    """Parameter -> the gate blocks of its rows whose gradient differs from autograd's (V, c: 'all')."""
    names = gate_names(cell_pair(problem.cell).manual)
    blocks: dict[str, list[str]] = {}
    for param, mine in oracles.manual.items():
        theirs = oracles.autograd[param]
        if param in ("V", "c"):
            wrong = ["all"] if norm_error(mine, theirs) > AGREE else []
        else:
            pairs = zip(np.split(mine, len(names)), np.split(theirs, len(names)), strict=True)
            wrong = [gate for gate, (a, b) in zip(names, pairs, strict=True) if norm_error(a, b) > AGREE]
        if wrong:
            blocks[param] = wrong
    return blocks


def constant_ratio(oracles: Oracles) -> float | None:
    """k when manual = k x autograd for every entry that is not almost zero, else None."""
    mine = np.concatenate([value.ravel() for value in oracles.manual.values()])
    theirs = np.concatenate([oracles.autograd[name].ravel() for name in oracles.manual])
    kept = np.abs(theirs) > 1e-6 * np.abs(theirs).max()  # ratios of entries near zero are rounding noise
    ratios = mine[kept] / theirs[kept]
    k = float(np.median(ratios))
    return k if abs(k - 1) > AGREE and np.max(np.abs(ratios - k)) < 1e-6 * abs(k) else None


def name_ratio(k: float, problem: Problem) -> str:
    streams, steps = problem.inputs.shape
    for value, words in ((steps, "T, the chunk length"), (streams, "B, the batch"), (steps * streams, "T x B")):
        for factor, how in ((value, f"= {words}: a sum where the loss has a mean"), (1 / value, f"= 1/({words})")):
            if value > 1 and abs(k - factor) < 1e-6 * abs(factor):
                return f"{k:.6g} {how}"
    return f"{k:.6g}"


def oracle_lines(oracles: Oracles) -> list[str]:
    lines = [
        f"autograd vs centred differences: {worst_error(oracles.autograd, oracles.central):.1e}; "
        f"torch.autograd.gradcheck on the twin: {'passed' if oracles.twin_gradcheck else 'FAILED'}."
    ]
    if oracles.complex is None:
        lines.append(f"The complex128 forward fails ({oracles.complex_failure}): no complex step, centred differences.")
    elif not oracles.complex_usable:
        lines.append(
            "The complex step disagrees with centred differences "
            f"({worst_error(oracles.complex, oracles.central):.1e}): the forward is not analytic (abs, a comparison, "
            ".real), so the complex step is unusable here; falling back to centred differences."
        )
    which = "complex step" if oracles.complex_usable else "centred differences"
    lines.append(
        f"manual vs autograd: {worst_error(oracles.manual, oracles.autograd):.1e}; "
        f"manual vs {which}: {worst_error(oracles.manual, oracles.numerical):.1e}."
    )
    return lines


def forward_diagnosis(problem: Problem) -> Diagnosis | None:
    """Diagnosis 'forward' when the manual and torch forwards differ, else None."""
    mine, theirs = manual_steps(problem), torch_steps(problem)
    for layer, (a, b) in enumerate(zip(mine.hidden, theirs.hidden, strict=True)):
        errors = hidden_errors(a, b)
        if errors.max() > FORWARD_AGREE:
            step = int(np.argmax(errors > FORWARD_AGREE)) + 1
            return Diagnosis(
                "forward",
                [
                    f"The forward already disagrees: loss {mine.loss:.12g} (manual) vs {theirs.loss:.12g} (torch); "
                    f"layer {layer + 1}'s h_t first differs at step {step} (relative error {errors[step - 1]:.1e}).",
                    "Make recurrence_forward and step compute the same function first: the backward is not "
                    "the problem until the forwards agree.",
                ],
                layer=layer + 1,
                step=step,
            )
    return None


def diagnose(problem: Problem, backward: Backward = manual.backward) -> Diagnosis:
    """Run every oracle on a small problem and localize any error of the hand-written backward."""
    found = forward_diagnosis(problem)
    if found is not None:
        return found
    oracles = run_oracles(problem, backward)
    diagnosis = Diagnosis("agree", oracle_lines(oracles), complex_usable=oracles.complex_usable)
    diagnosis.blocks = wrong_blocks(oracles, problem)
    localize(problem, diagnosis)
    lines = diagnosis.lines
    if not diagnosis.blocks and diagnosis.step is None:
        lines.append("Every gradient agrees with autograd: the backward is right.")
        return diagnosis
    diagnosis.ratio = constant_ratio(oracles)
    if diagnosis.ratio is not None:
        diagnosis.verdict = "loss"
        lines.append(
            f"Every gradient is k x autograd's, k = {name_ratio(diagnosis.ratio, problem)}. That is the correct "
            "gradient of another loss (k times this one), not a wrong gradient: fix the loss's reduction or "
            "scale, not the derivatives."
        )
        return diagnosis
    wrong = "; ".join(f"{param} (gate {', '.join(gates)})" for param, gates in diagnosis.blocks.items())
    lines.append(f"Wrong gradients: {wrong}.")
    if diagnosis.step is not None:
        diagnosis.verdict = "backward"
        lines.extend(backward_lines(problem, diagnosis))
        return diagnosis
    diagnosis.verdict = "summing"
    sums = "; ".join(SUMS[param.rstrip("0123456789")] for param in diagnosis.blocks)
    lines.append(
        "dL/dx_proj_t agrees with autograd at every layer, step and gate, so the recurrence's backward is right: "
        f"the error is where {', '.join(diagnosis.blocks)} is summed from the per-step gradients ({sums})."
    )
    return diagnosis


# ----- the heat map ------------------------------------------------------------------------------

FLOOR = 1e-17  # errors of exactly 0 (a block that is zero on both sides) are drawn at this value, below rounding


def save_heatmap(diagnosis: Diagnosis, path: Path) -> None:
    """Write the heat map PNG: one row per (layer, quantity) (diagnosis.heat_rows), one column per time step 1..T."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError('--heatmap needs matplotlib: pip install -e ".[plot]"') from None
    assert diagnosis.heat is not None  # the diagnosis got as far as the per-step comparison
    heat = np.log10(np.maximum(diagnosis.heat, FLOOR))
    rows, steps = heat.shape
    figure, axes = plt.subplots(figsize=(4.5 + 0.5 * steps, 2.0 + 0.4 * rows))
    image = axes.imshow(heat, aspect="auto", cmap="magma", vmin=np.log10(FLOOR), vmax=0)
    axes.set_xticks(range(steps), [str(t + 1) for t in range(steps)])
    axes.set_yticks(range(rows), diagnosis.heat_rows)
    axes.set_xlabel("time step t (the backward runs from the right)")
    axes.set_ylabel("dL/dx_proj_t of the gate, or")
    if diagnosis.step is not None and diagnosis.layer is not None:
        axes.set_title(
            f"first wrong: layer {diagnosis.layer}, step {diagnosis.step}, {diagnosis.quantity}, "
            f"gate {', '.join(diagnosis.gates)}"
        )
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label(f"log10 relative error\n(wrong above {np.log10(AGREE):.0f})")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise UsageError(f"--heatmap {path}: cannot write it ({error.strerror or error})") from None
    finally:
        plt.close(figure)
