"""Deliberately broken variants of the cells, for the proof that gradcheck --diagnose names the bug.

Each is the real cell with one realistic slip in its hand-written backward (``mutants.mutant``),
paired with the cell's untouched torch step, so autograd still differentiates the right function.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
from mutants import mutant

import manual
from compare.gradients.localize import gate_names, part_names
from compare.gradients.methods import Problem
from compare.model.cells import CellPair, resolve_cell


def broken_cell(cell: str, correct: str, slip: str, function: str = "recurrence_backward") -> CellPair:
    """The cell ``cell`` with ``correct`` replaced by ``slip`` in its manual ``function``."""
    pair = resolve_cell(cell)
    module = ModuleType(f"{pair.manual.__name__}_broken")
    module.__dict__.update(vars(pair.manual))
    module.GATE_NAMES = gate_names(pair.manual)  # the original's, which the diagnosis knows by the module
    module.STATE_NAMES = part_names(pair.manual)
    setattr(module, function, mutant(pair.manual, function, correct, slip))
    return CellPair(f"{cell} (broken)", module, pair.torch)


def broken_backward(correct: str, slip: str):
    """manual.backward with one slip: for the bugs outside the cell (the bias sum, the loss's scale)."""
    return mutant(manual.model, "backward", correct, slip)


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
