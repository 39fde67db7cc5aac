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

For a cell that traces (localize.traces), the backward verdict also says which per-step quantity goes
wrong first, in the order step t's backward makes them: the carry into state_t (made by step t + 1),
then dL/dh_t (the output's part + that carry), then dL/dx_proj_t (the step's own derivatives). That
search, and its words, are compare.gradients.backward_location.
"""

from __future__ import annotations

import numpy as np

import manual
from compare.gradients.backward_location import AGREE, Diagnosis, backward_lines, localize
from compare.gradients.localize import gate_names, hidden_errors, manual_steps, torch_steps
from compare.gradients.methods import Problem
from compare.gradients.oracles import Backward, Oracles, norm_error, run_oracles, worst_error
from compare.model.cells import cell_pair

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
