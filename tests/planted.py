"""Deliberately broken variants of the cells, for the proof that gradcheck --diagnose names the bug.

Each is the real cell with one realistic slip in its hand-written backward (``mutants.mutant``),
paired with the cell's untouched torch step, so autograd still differentiates the right function.
planted_cell_file writes such a cell as a file, for the commands' --cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import numpy as np
from mutants import mutant

import manual
from compare.gradients.localize import gate_names, part_names
from compare.gradients.oracles import Problem
from compare.model.cells import CellPair, resolve_cell

MGU_FILE = Path(__file__).resolve().parents[1] / "compare" / "examples" / "mgu.py"
# Slips in the example MGU's backward: (correct, slip, how many times the file holds the fragment). Each
# keeps every shape, so that a command sees a wrong gradient, not a wrong shape.
SLIPS = {
    # the direct carry (1 - f_t) dh_t into h_{t-1} dropped, in recurrence_backward and in step_backward
    "carry-dropped": ("d_h * (1 - f) + d_gated", "d_gated", 2),
    # dW_f = sum_t df_pre_t h_{t-1}^T summed as its transpose: W_f is (H, H), so it fits; the carry is right
    "dW-transposed": (
        "d_W_f = d_f_rows.T @ cache.hidden[:-1].reshape(rows, size)",
        "d_W_f = cache.hidden[:-1].reshape(rows, size).T @ d_f_rows",
        1,
    ),
    # W_f^T df_pre_t carried back as W_f df_pre_t, in recurrence_backward and in step_backward
    "carry-transposed": ("d_f_pre @ W_f", "d_f_pre @ W_f.T", 2),
}


def planted_cell_file(directory: Path, slip: str) -> Path:
    """The example MGU with the slip SLIPS[slip] in it, as ``directory``/mgu_<slip>.py."""
    correct, wrong, count = SLIPS[slip]
    source = MGU_FILE.read_text(encoding="utf-8")
    assert source.count(correct) == count, f"{MGU_FILE} holds {correct!r} {source.count(correct)} times: update it"
    path = directory / f"mgu_{slip.replace('-', '_')}.py"
    path.write_text(source.replace(correct, wrong), encoding="utf-8")
    return path


def broken_cell(cell: str, correct: str, slip: str, function: str = "recurrence_backward") -> CellPair:
    """The cell ``cell`` with ``correct`` replaced by ``slip`` in its manual ``function``."""
    pair = resolve_cell(cell)
    module = ModuleType(f"{pair.manual.__name__}_broken")
    module.__dict__.update(vars(pair.manual))
    module.GATE_NAMES = gate_names(pair.manual)  # the original's, which the diagnosis knows by the module
    module.STATE_NAMES = part_names(pair.manual)
    setattr(module, function, mutant(pair.manual, function, correct, slip))
    return CellPair(f"{cell} (broken)", module, pair.torch)


BACKWARD_CALLS = ("logits_gradient", "backward_from_logits")  # manual.backward is these two in a row


def broken_backward(correct: str, slip: str):
    """manual.backward with one slip: for the bugs outside the cell (the bias sum, the loss's scale)."""
    return mutant(manual.model, "backward", correct, slip, calls=BACKWARD_CALLS)


@dataclass
class Sizes:
    vocab: int = 6
    hidden: int = 4
    batch: int = 3
    steps: int = 5
    layers: int = 1


def shapes(gates: int, sizes: Sizes) -> dict[str, tuple[int, ...]]:
    """compare.model.init.param_shapes for a cell of ``gates`` gate blocks (a broken pair has no --cell name)."""
    rows = gates * sizes.hidden
    result: dict[str, tuple[int, ...]] = {}
    for layer in range(sizes.layers):
        names = manual.layer_param_names(layer)
        result[names["U"]] = (rows, sizes.vocab if layer == 0 else sizes.hidden)
        result[names["W"]] = (rows, sizes.hidden)
        result[names["b"]] = (rows,)
    return {**result, "V": (sizes.vocab, sizes.hidden), "c": (sizes.vocab,)}


def small_problem(cell: str | CellPair, sizes: Sizes | None = None, seed: int = 0) -> Problem:
    """Random float64 weights (std 0.5: no gradient entry near zero), batch and carried-in state."""
    sizes = sizes or Sizes()
    pair = cell if isinstance(cell, CellPair) else resolve_cell(cell)
    rng = np.random.default_rng(seed)
    params = {name: rng.normal(0.0, 0.5, size=shape) for name, shape in shapes(pair.gates, sizes).items()}
    inputs, targets = rng.integers(0, sizes.vocab, size=(2, sizes.batch, sizes.steps))
    state0 = rng.normal(0.0, 0.5, size=(sizes.layers, pair.state_parts, sizes.batch, sizes.hidden))
    return Problem(params, inputs, targets, state0, cell)
