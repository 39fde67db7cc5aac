"""The sections whose figures come from training runs: samples, drift, lossplot (quickstart.py: the quick start).

Each trains with ``python -m compare.train`` into the scratch directory and reads back what
the run logged to TensorBoard (the tags docs/training.md documents), so the figures are the
ones a reader's own run would show.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path

from compare.reporting.runner import Block, Context
from compare.reporting.text import fenced, small, table

QUICKSTART_RUN = "quickstart"
TEMPERATURES = (0.5, 0.8, 1.0)
SAMPLE_SEED = 3  # the seed docs/sampling.md shows
PRIME = "The "


def scalars(run_dir: Path, impl: str, tags: Iterable[str]) -> dict:
    from compare.plotting.events import read_scalars  # tensorboard: only once a section needs it

    return read_scalars(run_dir / impl, tags)


def overridden(flags: list, overrides: list) -> list:
    """``flags`` with each ``--flag value`` pair of ``overrides`` put in place of the same flag, or added."""
    flags = list(flags)
    for flag, value in zip(overrides[::2], overrides[1::2], strict=True):
        if flag in flags:
            flags[flags.index(flag) + 1] = value
        else:
            flags += [flag, value]
    return flags


def train(ctx: Context, run_name: str, flags: list, tiny_flags: list) -> tuple:
    """Run compare.train into $TMP/runs/<run_name>; (its run directory, the command shown, its wall time)."""
    flags = overridden(flags, tiny_flags) if ctx.tiny else flags
    args = [*flags, "--logdir", ctx.workdir / "runs", "--run-name", run_name]
    started = time.perf_counter()
    finished = ctx.run("compare.train", args)
    return ctx.workdir / "runs" / run_name, finished.shown, time.perf_counter() - started


def samples(ctx: Context) -> list:
    """compare.sample on the quickstart's best.npz at three temperatures; the share of spaces over ten seeds."""
    checkpoint = ctx.results[QUICKSTART_RUN] / "manual" / "best.npz"
    length = ["--length", 80] if ctx.tiny else []
    parts, commands = [], []
    for temperature in TEMPERATURES:
        args = ["--checkpoint", checkpoint, "--temperature", temperature, "--prime", PRIME, "--seed", SAMPLE_SEED]
        finished = ctx.run("compare.sample", [*args, *length])
        commands.append(finished.shown)
        sample = finished.stdout.removesuffix("\n")  # print() added it; the text's own spaces and newlines stay
        parts.append(f"Temperature {temperature}:\n\n{fenced(sample)}")
    return [Block("samples", "\n\n".join(parts), commands), spaces(ctx, checkpoint)]


def spaces(ctx: Context, checkpoint: Path) -> Block:
    """How much of a temperature-0.5 sample is spaces, per seed; in this process, through what compare.sample calls."""
    from compare.data.corpus import builtin_corpus
    from compare.model.sampling import SampleConfig, generate_from_checkpoint

    seeds, length = (range(3), 50) if ctx.tiny else (range(10), 400)
    shares = {}
    for seed in seeds:
        config = SampleConfig(str(checkpoint), length=length, temperature=0.5, prime=PRIME, seed=seed)
        generated = generate_from_checkpoint(config)[len(PRIME) :]
        shares[seed] = generated.count(" ") / len(generated)
    corpus = builtin_corpus()
    shown = ctx.show(
        "compare.sample", ["--checkpoint", checkpoint, "--temperature", 0.5, "--prime", PRIME, "--length", length]
    )
    command = f"for seed in {{{seeds[0]}..{seeds[-1]}}}; do {shown} --seed $seed; done"
    seed_shown = f"; seed {SAMPLE_SEED}, shown above: {shares[SAMPLE_SEED]:.0%}" if SAMPLE_SEED in shares else ""
    body = (
        f'Over seeds {seeds[0]} to {seeds[-1]} with the prime "{PRIME}", spaces made up '
        f"{min(shares.values()):.0%} to {max(shares.values()):.0%} of a {length}-character sample at "
        f"temperature 0.5{seed_shown}; they are {corpus.count(' ') / len(corpus):.0%} of the corpus."
    )
    return Block("samples.spaces", body, [command])


def drift_after(run_dir: Path, steps: Iterable[int]) -> list:
    """chaos/max_abs_param (logged in log10) after each of ``steps`` (those the run reached), formatted."""
    series = scalars(run_dir, "both", ("chaos/max_abs_param",))["chaos/max_abs_param"]
    by_step = dict(zip(series.steps, series.values, strict=True))
    return [small(10.0 ** by_step[step]) for step in steps]


def drift(ctx: Context) -> list:
    """--impl both for 60 steps in float64 and in float32: how far the two implementations drift apart."""
    steps = (1, 2, 5) if ctx.tiny else (1, 2, 5, 20, 60)
    rows, commands = [], []
    for dtype in ("float64", "float32"):
        flags = ["--impl", "both", "--dtype", dtype, "--max-steps", steps[-1]]
        run_name = "drift-h100" if dtype == "float64" else f"drift-h100-{dtype}"  # docs/tolerances.md's name
        run_dir, shown, _ = train(ctx, run_name, flags, ["--hidden-size", 8])
        rows.append([f"`{dtype}`", *drift_after(run_dir, steps)])
        commands.append(shown)
    header = ["`--dtype`", *(f"after step {step}" for step in steps)]
    body = "`chaos/max_abs_param`, the largest difference between the two trajectories' parameters:\n\n"
    return [Block("drift", body + table(header, rows), commands)]


def lossplot(ctx: Context) -> list:
    """docs/demo.md's run: --impl both for 20,000 steps, its drift and final losses, and docs/loss.png redrawn."""
    last = 12 if ctx.tiny else 20000
    flags = ["--impl", "both", "--max-steps", last]
    run_dir, shown, _ = train(ctx, "both-demo", flags, ["--hidden-size", 8, "--eval-every", 6])
    steps = (1, 10, last)
    header = ["", *(f"after step {step:,}" for step in steps)]
    drift_table = table(header, [["`chaos/max_abs_param`", *drift_after(run_dir, steps)]])
    finals = {impl: scalars(run_dir, impl, ("loss/val",))["loss/val"].values[-1] for impl in ("manual", "torch")}
    commands = [shown]
    try:
        import matplotlib  # noqa: F401  (only to know whether compare.plot can draw)
    except ImportError:
        drawn = 'docs/loss.png was not redrawn: matplotlib is missing (`pip install -e ".[plot]"`).'
    else:
        commands.append(ctx.run("compare.plot", [run_dir, "--out", ctx.docs / "loss.png"]).shown)
        drawn = "docs/loss.png is drawn from this run."
    body = (
        f"{drift_table}\n\nValidation loss at step {last:,}: {finals['manual']:.3f} nats/char for manual, "
        f"{finals['torch']:.3f} for torch. {drawn}"
    )
    return [Block("lossplot", body, commands)]
