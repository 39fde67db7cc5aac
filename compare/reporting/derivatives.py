"""docs/forward.md's and docs/second-order.md's figures: the other routes to a derivative.

routes: gradcheck --routes for rnn, lstm and gru (BPTT, RTRL, reverse and forward autograd);
rtrl: bench --rtrl's cost per step as H grows, its fitted exponents, and docs/rtrl-cost.png;
truncation: gradflow --truncation's table and docs/truncation.png; second_order: gradcheck
--second-order for rnn, lstm and gru, and bench --second-order's speed with its targets.
Each block is what the commands print, inserted as it is (the benchmarks' through benches.as_markdown).
"""

from __future__ import annotations

from compare.reporting.benches import as_markdown
from compare.reporting.runner import Block, Context

CELLS = ("rnn", "lstm", "gru")
TINY_GRADCHECK = ["--hidden-size", 2, "--seq-length", 5]
RTRL_FLAGS = ["--sizes", "8,16,32,64,128", "--repeats", 3]  # docs/forward.md#cost
TINY_RTRL = ["--sizes", "2,3", "--seq-length", 3, "--repeats", 1]
TRUNCATION_FLAGS = ["--train-steps", 1000]  # the defaults otherwise: H 16, a stream of 2,000 characters
TINY_TRUNCATION = ["--hidden-size", 3, "--stream-length", 30, "--train-steps", 2]
SECOND_ORDER_FLAGS = ["--hidden-size", 100]  # the seed model; gradcheck's other defaults (T 25, B 1)
SPEED_FLAGS = ["--repeats", 5]  # both configurations: H 100, B 1 and H 512, B 128
TINY_SPEED = ["--configs", "seed", "--repeats", 1]


def per_cell(ctx: Context, flags: list) -> tuple[str, list]:
    """compare.gradcheck ``flags`` for each cell: (their outputs one after the other, each under its cell's name,
    the commands).

    gradcheck prints Markdown paragraphs (a table, its legend, the verdict). The legend is the same
    for every cell (a list, its lines starting with "- "), so it is shown under the last table only.
    """
    outputs, commands = [], []
    for cell in CELLS:
        finished = ctx.run("compare.gradcheck", [*flags, "--cell", cell])
        outputs.append([f"**{cell}**", *finished.stdout.strip().split("\n\n")])
        commands.append(finished.shown)
    last = outputs[-1]
    shown = [[paragraph for paragraph in output if not paragraph.startswith("- ")] for output in outputs[:-1]]
    return "\n\n".join("\n\n".join(paragraphs) for paragraphs in [*shown, last]), commands


def routes(ctx: Context) -> list:
    """docs/forward.md's route table: four routes, one gradient, for every cell."""
    body, commands = per_cell(ctx, ["--routes", *(TINY_GRADCHECK if ctx.tiny else [])])
    return [Block("routes", body, commands)]


def rtrl(ctx: Context) -> list:
    """docs/forward.md#cost: time and peak memory per step of the four routes as H grows, and the figure."""
    draw, drawn = ctx.figure("rtrl-cost.png", "time and peak memory per step against H, per route, log-log")
    finished = ctx.run("compare.bench", ["--rtrl", *(TINY_RTRL if ctx.tiny else RTRL_FLAGS), *draw])
    return [Block("rtrl", f"{as_markdown(finished.stdout)}\n\n{drawn}", [finished.shown])]


def truncation(ctx: Context) -> list:
    """docs/forward.md#truncation: the truncated gradient against the exact one, against K, and the figure."""
    draw, drawn = ctx.figure("truncation.png", "truncation's error against K beside the gradient flow, per cell")
    args = ["--truncation", *(TINY_TRUNCATION if ctx.tiny else TRUNCATION_FLAGS), *draw]
    finished = ctx.run("compare.gradflow", args)
    return [Block("truncation", f"{as_markdown(finished.stdout)}\n\n{drawn}", [finished.shown])]


def second_order(ctx: Context) -> list:
    """docs/second-order.md: the three routes to H v (and G v) for every cell, then H v's speed and its targets."""
    body, commands = per_cell(ctx, ["--second-order", *(TINY_GRADCHECK if ctx.tiny else SECOND_ORDER_FLAGS)])
    speed_flags = [*(TINY_SPEED if ctx.tiny else SPEED_FLAGS), *ctx.bench_threads()]  # torch's, as NumPy's
    speed = ctx.run("compare.bench", ["--second-order", *speed_flags])
    return [
        Block("second_order", body, commands),
        Block("second_order.speed", as_markdown(speed.stdout), [speed.shown]),
    ]
