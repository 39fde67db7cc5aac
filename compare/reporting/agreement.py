"""The agreement and tensorboard sections: --impl both at the defaults, the implementation error apart from the chaos.

One run per dtype, 500 steps at the default size. From what it logged (compare.training.agreement):
the largest implementation error over the whole run (agree/*, measured on identical weights,
state and batch) beside the trajectories' drift at a few steps (chaos/*), and docs/agreement.png
drawn by compare.plot from the float64 run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compare.reporting.runner import Block, Context
from compare.reporting.text import small, table
from compare.reporting.training import drift_after, scalars, train
from compare.training.config import TrainConfig

BOARD_STEPS = 2000  # the run a new user tries first
COST_STEPS = 3000  # long enough that the start-up (imports, corpus) is not most of the time
AGREEMENT_STEPS = 500  # the and docs/training.md's run: long enough for the chaos to pass 1e-6


def worst(run_dir: Path, tag: str) -> float:
    """The largest value over the run of a tag logged in log10, as a plain number."""
    return 10.0 ** max(scalars(run_dir, "both", (tag,))[tag].values)


def agreement(ctx: Context) -> list:
    """--impl both for 500 steps at the defaults, float64 and float32: agree/* worst, chaos/* growing."""
    last = 20 if ctx.tiny else AGREEMENT_STEPS
    steps = (1, 10, last) if ctx.tiny else (1, 10, 100, last)
    rows, commands, figure_run = [], [], None
    for dtype in ("float64", "float32"):
        flags = ["--impl", "both", "--dtype", dtype, "--max-steps", last]
        run_dir, shown, _ = train(ctx, f"agreement-{dtype}", flags, ["--hidden-size", 8])
        commands.append(shown)
        figure_run = figure_run or run_dir
        rows.append(
            [
                f"`{dtype}`",
                small(worst(run_dir, "agree/grad_rel_max")),
                small(worst(run_dir, "agree/loss")),
                *drift_after(run_dir, steps),
            ]
        )
    header = [
        "`--dtype`",
        "`agree/grad_rel_max`, worst step",
        "`agree/loss`, worst step",
        *(f"`chaos/max_abs_param` after step {step}" for step in steps),
    ]
    try:
        import matplotlib  # noqa: F401  (only to know whether compare.plot can draw)
    except ImportError:
        drawn = 'docs/agreement.png was not redrawn: matplotlib is missing (`pip install -e ".[plot]"`).'
    else:
        commands.append(ctx.run("compare.plot", [figure_run, "--out", ctx.docs / "agreement.png"]).shown)
        drawn = "docs/agreement.png is drawn from the float64 run."
    cost, cost_commands = measuring_cost(ctx)
    body = (
        f"Measured every {TrainConfig().agree_every} steps on the manual engine's weights, state and batch "
        f"(relative, worst over the run), beside the free-running trajectories' drift:\n\n"
        f"{table(header, rows)}\n\n{drawn} {cost}"
    )
    commands += cost_commands
    return [Block("agreement", body, commands)]


def measuring_cost(ctx: Context) -> tuple[str, list]:
    """The wall time of --impl both with the measurement off and at its default cadence, one run each."""
    steps = 20 if ctx.tiny else COST_STEPS
    seconds, commands = {}, []
    for every in (0, TrainConfig().agree_every):
        flags = ["--impl", "both", "--max-steps", steps, "--val-frac", 0, "--agree-every", every]
        _, shown, seconds[every] = train(ctx, f"agreement-cost-{every}", flags, ["--hidden-size", 8])
        commands.append(shown)
    off, on = seconds.values()
    sentence = (
        f"Its cost: {steps:,} steps of `--impl both` at the defaults took {on:.1f} s with it, "
        f"{off:.1f} s without (`--agree-every 0`): {on / off:.2f}x, start-up included."
    )
    return sentence, commands


def tensorboard(ctx: Context) -> list:
    """docs/tensorboard.png: TensorBoard's comparison page after a short --impl both run, in headless Chromium."""
    from compare.reporting.browser import browser_missing
    from compare.reporting.screenshots import chromium_page, open_tab, serving_tensorboard
    from compare.training.logger import COMPARISON_CHARTS

    steps = 40 if ctx.tiny else BOARD_STEPS
    run_dir, shown, _ = train(ctx, "rnn-1", ["--impl", "both", "--max-steps", steps], ["--hidden-size", 8])
    logdir = ctx.workdir / "board"
    shutil.copytree(run_dir, logdir / run_dir.name)  # this run alone in TensorBoard's run list
    missing = browser_missing()
    if missing:
        return [Block("tensorboard", f"Not photographed: {missing}.", [shown])]
    with serving_tensorboard(logdir) as url, chromium_page() as page:
        open_tab(page, url, "custom_scalars", list(COMPARISON_CHARTS)[-1])
        page.screenshot(path=str(ctx.docs / "tensorboard.png"), full_page=True)
    body = (
        f"docs/tensorboard.png: `tensorboard --logdir` on this {steps:,}-step run, CUSTOM SCALARS tab "
        "(smoothing 0), photographed in headless Chromium."
    )
    return [Block("tensorboard", body, [shown, "tensorboard --logdir $TMP/board"])]
