"""What a finished run reports: final losses, speed and a sample per implementation; with --impl both the
largest implementation error measured (compare.training.agreement) and its verdict."""

from __future__ import annotations

import math
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.model.cells import BUILTIN_CELLS
from compare.model.checkpoint import BEST, LATEST
from compare.model.sampling import sample_text

if TYPE_CHECKING:
    from compare.training.run import Run


SAMPLE_LENGTH = 500  # characters of the sample a finished run prints
SAMPLE_TEMPERATURE = 0.8


def chars_per_sec(steps: int, batch_size: int, seq_length: int, seconds: float) -> float:
    """Characters trained per second of this implementation's own step time."""
    return steps * batch_size * seq_length / max(seconds, 1e-12)


def summarize(run: Run, step: int) -> dict[str, Any]:
    """Final figures per implementation (a Run at ``step``), and a sample at temperature 0.8."""
    impls: dict[str, dict[str, Any]] = {}
    # agreement: the largest implementation error of --impl both (None: not measured), judged
    summary = {
        "run_dir": str(run.run_dir),
        "steps": step,
        "cell": run.config.cell,
        "impls": impls,
        "agreement": run.agreement,
    }
    for engine in run.engines:
        progress = run.progress[engine.name]
        val_loss = math.nan if progress.val_loss is None else progress.val_loss
        impls[engine.name] = {
            "train_loss": progress.smooth_loss,
            "val_loss": val_loss,
            "val_bits_per_char": val_loss / math.log(2),
            "chars_per_sec": chars_per_sec(step, run.config.batch_size, run.config.seq_length, progress.seconds),
            "losses": run.losses[engine.name],
            "sample": sample_text(engine, run.vocab, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, seed=run.config.seed),
        }
    return summary


def next_commands(summary: dict[str, Any]) -> list[str]:
    """What to run on a finished run: TensorBoard on it, then compare.sample and compare.demo on its checkpoint.

    The checkpoint is the first implementation's best.npz, or latest.npz when the run had no
    validation (--val-frac 0 writes no best.npz). A cell of your own is named with --cell: loading
    imports it only then.
    """
    impl, result = next(iter(summary["impls"].items()))
    checkpoint = Path(summary["run_dir"]) / impl / (LATEST if math.isnan(result["val_loss"]) else BEST)
    cell = summary.get("cell", "rnn")
    flags = f"--checkpoint {shlex.quote(str(checkpoint))}"
    if cell not in BUILTIN_CELLS:
        flags += f" --cell {shlex.quote(cell)}"
    return [
        f"tensorboard --logdir {shlex.quote(summary['run_dir'])}",
        f"python -m compare.sample {flags}",
        f"python -m compare.demo {flags}",
    ]
