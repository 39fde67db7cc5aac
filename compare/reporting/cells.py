"""docs/cells.md's figures: the three cells trained alike, their speed, and the RNN that diverges at lr 0.1.

The training commands are the loop docs/cells.md prints; the speeds are the table
``python -m compare.bench --cells`` prints, inserted as it is.
"""

from __future__ import annotations

import math
from pathlib import Path

from compare.reporting.runner import Block, Context
from compare.reporting.text import fenced, table
from compare.reporting.training import overridden, scalars, train

# cell and hidden size at about equal parameter counts, as docs/cells.md's loop has them
CELL_SIZES = (("rnn", 128), ("lstm", 56), ("gru", 68))
# The pydoc topics: the corpus these comparisons (and the lr 0.1 divergence) were first measured on
SHARED_FLAGS = [
    "--impl",
    "manual",
    "--corpus",
    "pydoc-topics",
    "--batch-size",
    4,
    "--seq-length",
    50,
    "--lr",
    0.05,
    "--epochs",
    3,
]
SPEED_FLAGS = ["--cells", "--threads", 1, "--steps", 20, "--repeats", 3]
TINY_SPEED_FLAGS = ["--cells", "--threads", 1, "--steps", 1, "--repeats", 1]
DIVERGING_LR = 0.1
DIVERGENCE_STEPS = 100  # a cap, so that a run which does not diverge ends soon (and fails the section)


def parameter_count(run_dir: Path) -> int:
    from compare.model.checkpoint import BEST, LATEST, find_checkpoint, load_checkpoint

    checkpoint = load_checkpoint(find_checkpoint(run_dir, "manual", names=(BEST, LATEST)))
    return sum(array.size for array in checkpoint.engine.params.values())


def trained_cell(ctx: Context, cell: str, hidden: int) -> tuple:
    """(table row, validation loss, steps, command) of one cell's run."""
    flags = [*SHARED_FLAGS[:2], "--cell", cell, "--hidden-size", hidden, *SHARED_FLAGS[2:], "--eval-every", 1000]
    run_dir, shown, _ = train(ctx, f"cells-{cell}", flags, ["--max-steps", 20, "--eval-every", 10])
    val = scalars(run_dir, "manual", ("loss/val",))["loss/val"]
    falling = "yes" if len(val.values) > 1 and val.values[-1] < val.values[-2] else "no"
    loss = val.values[-1]
    row = [cell, hidden, f"{parameter_count(run_dir):,}", f"{loss:.3f}", f"{loss / math.log(2):.3f}", falling]
    return row, loss, val.steps[-1], shown


def against_rnn(losses: dict) -> str:
    """``Against the RNN: the LSTM is 0.09 nats/char lower, the GRU 0.25 lower.``"""
    words = []
    for cell in ("lstm", "gru"):
        gap = losses["rnn"] - losses[cell]
        words.append(f"{abs(gap):.2f} nats/char {'lower' if gap > 0 else 'higher'}")
    return f"Against the RNN: the LSTM is {words[0]}, the GRU {words[1]}."


def cells(ctx: Context) -> list:
    rows, losses, commands, steps = [], {}, [], 0
    for cell, hidden in CELL_SIZES:
        row, losses[cell], steps, shown = trained_cell(ctx, cell, hidden)
        rows.append(row)
        commands.append(shown)
    header = ["cell", "hidden size", "parameters", "validation loss (nats/char)", "(bits/char)", "still falling"]
    characters = steps * 4 * 50  # B 4, T 50: SHARED_FLAGS
    body = (
        table(header, rows)
        + f"\n\nEach run trained on {characters:,} characters ({steps:,} steps of B 4 × T 50). "
        + against_rnn(losses)
        + " *still falling*: the last validation loss is below the one before it."
    )
    return [Block("cells", body, commands), cell_speed(ctx), divergence(ctx)]


def cell_speed(ctx: Context) -> Block:
    finished = ctx.run("compare.bench", TINY_SPEED_FLAGS if ctx.tiny else SPEED_FLAGS)
    return Block("cells.speed", finished.stdout.strip(), [finished.shown], threads="1 thread (--threads 1)")


def divergence(ctx: Context) -> Block:
    """The RNN of the table at lr 0.1: the one line the divergence guard stops it with."""
    flags = overridden(
        [*SHARED_FLAGS[:2], "--cell", "rnn", "--hidden-size", 128, *SHARED_FLAGS[2:]], ["--lr", DIVERGING_LR]
    )
    args = [*flags, "--max-steps", DIVERGENCE_STEPS, "--logdir", ctx.workdir / "runs", "--run-name", "cells-rnn-lr0.1"]
    finished = ctx.run("compare.train", args, expect_failure=True)
    return Block("cells.divergence", fenced(finished.last_error_line()), [finished.shown])
