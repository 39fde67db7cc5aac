"""The quick start as a reader sees it: its output verbatim, the corpus it trains on, its samples over ten seeds.

``quickstart`` runs the README's command and shows what it prints; ``corpus_facts``
runs compare/data/prose.py under every Python interpreter on the machine; ``prose``
trains at the same defaults for seeds 0 to 9 and counts, in each run's final sample,
the characters that belong to tables and space padding (``junk_share``).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from compare.reporting.runner import Block, Context, Finished, SectionFailed
from compare.reporting.text import duration, fenced, table
from compare.reporting.training import QUICKSTART_RUN, overridden, scalars

QUICKSTART_FLAGS = ["--impl", "manual"]
TINY_FLAGS = ["--max-steps", 40, "--hidden-size", 8]
SEEDS = range(10)
TINY_SEEDS = range(2)
PROSE_SCRIPT = Path(__file__).resolve().parents[1] / "data" / "prose.py"
PYTHONS = ("python3.10", "python3.11", "python3.12", "python3.13", "python3.14")  # requires-python >= 3.10
# A character counts as table or padding when it lies in a run of 3 or more characters drawn
# from the space and the border characters of reST tables: "   ", "+----+", "===", " | ".
JUNK_RUN = re.compile(r"[ |+=-]{3,}")
DIVERGED = re.compile(r"training diverged at step (\d+)")  # compare.train's one-line divergence error
JUNK_LIMIT = 0.05  # issue 19: under 5% of each final sample
ORIGINAL_LR = 0.1  # min-char-rnn's, which the default lowers (docs/training.md)


def junk_share(text: str) -> float:
    """The share of ``text``'s characters in runs of 3+ spaces or table-border characters (``|+-=``); 0 if empty."""
    if not text:
        return 0.0
    return sum(len(run) for run in JUNK_RUN.findall(text)) / len(text)


def final_sample(stdout: str, impl: str = "manual") -> str:
    """The sample compare.train printed at the end: the SAMPLE_LENGTH characters after its header line."""
    from compare.training.logger import SAMPLE_LENGTH, SAMPLE_TEMPERATURE

    header = f"--- sample ({impl}, temperature {SAMPLE_TEMPERATURE}) ---\n"
    start = stdout.index(header) + len(header)
    return stdout[start : start + SAMPLE_LENGTH]  # the sample's own newlines and spaces are part of it


@dataclass
class TrainedRun:
    run_dir: Path
    finished: Finished
    seconds: float


def train_quickstart(ctx: Context, run_name: str, extra: list, may_diverge: bool = False) -> TrainedRun:
    """compare.train at the quick-start defaults (plus ``extra``) into $TMP/runs/<run_name>.

    ``may_diverge``: a run that stops with compare.train's divergence error is a result, not a failure.
    """
    import time

    flags = [*QUICKSTART_FLAGS, *extra]
    flags = overridden(flags, TINY_FLAGS) if ctx.tiny else flags
    started = time.perf_counter()
    args = [*flags, "--logdir", ctx.workdir / "runs", "--run-name", run_name]
    finished = ctx.run("compare.train", args, either=may_diverge)
    if finished.returncode != 0 and DIVERGED.search(finished.stderr) is None:
        error = finished.last_error_line()
        raise SectionFailed(f"`{finished.shown}` failed (exit code {finished.returncode}): {error}")
    return TrainedRun(ctx.workdir / "runs" / run_name, finished, time.perf_counter() - started)


def shown_output(ctx: Context, stdout: str) -> str:
    """What compare.train printed, with the scratch directory written as $TMP, as the commands are shown."""
    return stdout.strip("\n").replace(str(ctx.workdir), "$TMP")


def quickstart(ctx: Context) -> list:
    """The README's first command with its defaults: its output verbatim, its figures, the corpus it read."""
    run = train_quickstart(ctx, QUICKSTART_RUN, [])
    ctx.results[QUICKSTART_RUN] = run.run_dir
    logged = scalars(run.run_dir, "manual", ("loss/val", "speed/chars_per_sec"))
    val_loss = logged["loss/val"].values[-1]
    row = [
        f"{logged['loss/val'].steps[-1]:,}",
        duration(run.seconds),
        f"{logged['speed/chars_per_sec'].values[-1]:,.0f}",
        f"{val_loss:.3f}",
        f"{val_loss / math.log(2):.3f}",
    ]
    header = ["steps", "wall time", "chars/s", "validation loss (nats/char)", "(bits/char)"]
    body = (
        f"It prints:\n\n{fenced(shown_output(ctx, run.finished.stdout))}\n\n"
        f"{table(header, [row], right_from=0)}\n\n{corpus_table()}"
    )
    return [Block("quickstart", body, [run.finished.shown])]


def interpreters() -> list:
    """This Python and every python3.X of PYTHONS on PATH, one per version."""
    found = [sys.executable, *filter(None, map(shutil.which, PYTHONS))]
    return list(dict.fromkeys(found))


def corpus_facts(python: str) -> dict | None:
    """compare/data/prose.py's facts (python, characters, distinct, sha256) under the interpreter ``python``.

    None when that interpreter does not run here (a pyenv shim of a version not installed).
    """
    finished = subprocess.run([python, PROSE_SCRIPT], capture_output=True, text=True, timeout=300)
    return json.loads(finished.stdout) if finished.returncode == 0 else None


def corpus_table() -> str:
    """The prose corpus under each Python here; the pydoc topics whole (``--corpus pydoc-topics``) under this one."""
    from compare.data.corpus import pydoc_topics
    from compare.data.prose import corpus_facts as facts_of

    rows, seen = [], set()
    for python in interpreters():
        facts = corpus_facts(python)
        if facts is not None and facts["python"] not in seen:
            seen.add(facts["python"])
            rows.append(["`prose` (default)", facts["python"], f"{facts['characters']:,}", facts["distinct"]])
            rows[-1].append(f"`{facts['sha256'][:12]}`")
    old = facts_of(pydoc_topics())
    rows.append(["`pydoc-topics`", old["python"], f"{old['characters']:,}", old["distinct"], f"`{old['sha256'][:12]}`"])
    header = ["`--corpus`", "Python", "characters", "distinct", "SHA-256 (first 12)"]
    return (
        "The built-in corpus on the Python versions that run on this machine (`python3.X compare/data/prose.py` "
        f"prints a line of it):\n\n{table(header, rows, right_from=2)}"
    )


def val_losses(run_dir: Path) -> dict:
    """{step: loss/val} of a run, in step order."""
    series = scalars(run_dir, "manual", ("loss/val",))["loss/val"]
    return dict(zip(series.steps, series.values, strict=True))


def prose(ctx: Context) -> list:
    """The quick start for seeds 0 to 9: table characters in each final sample, the validation loss along the way
    (at the first validation, a tenth of the run), and the loss there at the original's learning rate."""
    seeds = TINY_SEEDS if ctx.tiny else SEEDS
    rows, shares, default_runs, original_runs = [], [], [], []
    for seed in seeds:
        run = train_quickstart(ctx, f"quickstart-seed{seed}", ["--seed", seed])
        by_step = val_losses(run.run_dir)
        early = next(iter(by_step))  # the first validation: a tenth of the run without --eval-every
        original = train_quickstart(
            ctx, f"original-lr-seed{seed}", ["--seed", seed, "--lr", ORIGINAL_LR, "--max-steps", early], True
        )
        share = junk_share(final_sample(run.finished.stdout))
        shares.append(share)
        diverged = DIVERGED.search(original.finished.stderr)
        at_original_lr = f"diverged at step {diverged[1]}" if diverged else f"{val_losses(original.run_dir)[early]:.3f}"
        losses = [f"{by_step[early]:.3f}", at_original_lr, f"{by_step[max(by_step)]:.3f}"]
        rows.append([seed, f"{share:.1%}", *losses, duration(run.seconds)])
        default_runs.append(run.finished.shown)
        original_runs.append(original.finished.shown)
    header = [
        "`--seed`",
        "table and padding characters",
        f"val loss after {early:,} steps (the first validation)",
        f"... at `--lr {ORIGINAL_LR}`",
        "val loss at the end",
        "wall time",
    ]
    verdict = "under" if max(shares) < JUNK_LIMIT else "not under"
    body = (
        f"{table(header, rows)}\n\nValidation losses in nats/char. The largest share of table and padding "
        f"characters is {max(shares):.1%}: {verdict} {JUNK_LIMIT:.0%} in every run. A character counts when it "
        "lies in a run of 3 or more spaces or table-border characters (`|`, `+`, `-`, `=`) of the 500-character "
        "sample (temperature 0.8) that the run printed at its end."
    )
    return [Block("prose", body, [loop_over_seeds(default_runs, seeds), loop_over_seeds(original_runs, seeds)])]


def loop_over_seeds(shown: list, seeds: range) -> str:
    """The shell loop that runs the first seed's command ``shown[0]`` for every seed."""
    first = shown[0].replace(f"--seed {seeds[0]} ", "--seed $seed ").replace(f"seed{seeds[0]}", "seed$seed")
    return f"for seed in {{{seeds[0]}..{seeds[-1]}}}; do {first}; done"


def demo(ctx: Context) -> list:
    """docs/demo.png: the demo page on the quick-start run, after Generate, taken in headless Chromium."""
    from compare.reporting.browser import Generation, browser_missing, demo_screenshot

    run_dir = ctx.results[QUICKSTART_RUN]
    generation = Generation(length=120) if ctx.tiny else Generation()
    command = ctx.show("compare.demo", ["--checkpoint", run_dir])
    missing = browser_missing()
    if missing:
        return [Block("demo", f"docs/demo.png was not redrawn: {missing}.", [command])]
    demo_screenshot(run_dir, ctx.docs / "demo.png", generation)
    body = (
        f"![The demo page after Generate](demo.png)\n\n*The quick-start run ({QUICKSTART_RUN}; the page shows its "
        f"step and validation loss), randomness {generation.temperature}, {generation.length} characters, "
        f'prime "{generation.prime}", seed {generation.seed}: the page in headless Chromium, drawn by the report.*'
    )
    return [Block("demo", body, [command])]
