"""docs/cells.md's planted bugs: gradcheck --diagnose on the example MGU with one derivative factor dropped,
and with the carried gradient not added into dL/dh_t (docs/cells.md#per-step-gradients-trace).

The bug and the flags are the ones docs/cells.md#reading-a-diagnosis walks through (its commands
are run by tests/test_cells_doc.py); the heat map is drawn into docs/diagnosis.png.
"""

from __future__ import annotations

from pathlib import Path

from compare.reporting.runner import Block, Context
from compare.reporting.text import fenced

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mgu.py"
CORRECT, SLIP = "d_f * f * (1 - f)", "d_f * f"  # f's sigmoid' = f (1 - f), with its (1 - f) dropped
CARRY, NOT_ADDED = "d_h = d_hidden[t] + d_h_next", "d_h = d_hidden[t]"  # the carry from step t + 1, not added
DIAGNOSE_FLAGS = ["--diagnose", "--hidden-size", 4, "--seq-length", 5, "--init-scale", 50]


def planted(ctx: Context, name: str, correct: str, slip: str, heatmap: str) -> Block:
    """The diagnosis of the example with ``correct`` replaced by ``slip``, printed by the command, and its heat map."""
    source = EXAMPLE.read_text(encoding="utf-8")
    assert source.count(correct) == 1, f"{EXAMPLE} no longer holds {correct!r} once: update the planted bug"
    (ctx.workdir / "my_mgu.py").write_text(source.replace(correct, slip), encoding="utf-8")
    args = ["--cell", "my_mgu.py", *DIAGNOSE_FLAGS, "--heatmap", ctx.docs / heatmap]
    finished = ctx.run("compare.gradcheck", args, expect_failure=True)  # exit code 1: the backward is wrong
    printed = finished.stdout.strip().replace(str(ctx.docs), "docs")  # the heat map's path as the page links it
    return Block(name, fenced(printed), [finished.shown])


def diagnosis(ctx: Context) -> list:
    """The two diagnoses the docs show: a dropped factor (output path), a carry not added (recurrent path)."""
    return [
        planted(ctx, "diagnosis", CORRECT, SLIP, "diagnosis.png"),
        planted(ctx, "diagnosis.carry", CARRY, NOT_ADDED, "diagnosis-carry.png"),
    ]
