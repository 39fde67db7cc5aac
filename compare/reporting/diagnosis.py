"""docs/cells.md's planted bug: gradcheck --diagnose on the example MGU with one derivative factor dropped.

The bug and the flags are the ones docs/cells.md#reading-a-diagnosis walks through (its commands
are run by tests/test_cells_doc.py); the heat map is drawn into docs/diagnosis.png.
"""

from __future__ import annotations

from pathlib import Path

from compare.reporting.runner import Block, Context
from compare.reporting.text import fenced

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mgu.py"
CORRECT, SLIP = "d_f * f * (1 - f)", "d_f * f"  # f's sigmoid' = f (1 - f), with its (1 - f) dropped
DIAGNOSE_FLAGS = ["--diagnose", "--hidden-size", 4, "--seq-length", 5, "--init-scale", 50]


def diagnosis(ctx: Context) -> list:
    """The diagnosis the docs show, printed by the command, and its heat map."""
    source = EXAMPLE.read_text(encoding="utf-8")
    assert source.count(CORRECT) == 1, f"{EXAMPLE} no longer holds {CORRECT!r} once: update the planted bug"
    (ctx.workdir / "my_mgu.py").write_text(source.replace(CORRECT, SLIP), encoding="utf-8")
    args = ["--cell", "my_mgu.py", *DIAGNOSE_FLAGS, "--heatmap", ctx.docs / "diagnosis.png"]
    finished = ctx.run("compare.gradcheck", args, expect_failure=True)  # exit code 1: the backward is wrong
    printed = finished.stdout.strip().replace(str(ctx.docs), "docs")  # the heat map's path as the page links it
    return [Block("diagnosis", fenced(printed), [finished.shown])]
