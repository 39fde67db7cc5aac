"""The sections that time things: bench (speed and scaling), memory, saved, optimizers, distributed, hosts,
overload.

Each block is what the benchmark prints on stdout, inserted as it is: its tables stay
tables, and each other line becomes a paragraph of its own (Markdown would run adjacent
lines together). Nothing here reads the benchmarks' internals, whose output may change.
"""

from __future__ import annotations

import os

from compare.reporting.runner import Block, Context
from compare.reporting.training import QUICKSTART_RUN

# the fewest steps and repeats each benchmark accepts: checks the plumbing, measures nothing
TINY_TIMING = ["--steps", 1, "--warmup", 0, "--repeats", 1]
TINY_OVERLOAD = ["--clients", 5, "--seconds", 1, "--short", 5]


def as_markdown(stdout: str) -> str:
    """A benchmark's stdout for a Markdown page: table rows as they are, every other line its own paragraph."""
    pieces: list[str] = []
    previous_was_table = False
    for line in stdout.strip("\n").splitlines():
        line = line.rstrip()
        is_table = line.startswith("|")
        if not line:
            previous_was_table = False  # two tables a blank line apart stay two tables
            continue
        if pieces and not (is_table and previous_was_table):
            pieces.append("")  # a blank line: a new paragraph, or the edge of a table
        pieces.append(line)
        previous_was_table = is_table
    return "\n".join(pieces)


def bench_block(ctx: Context, name: str, flags: list, tiny_flags: list) -> Block:
    args = [*flags, *ctx.bench_threads(), "--no-progress", *(tiny_flags if ctx.tiny else [])]
    finished = ctx.run("compare.bench", args)
    return Block(name, as_markdown(finished.stdout), [finished.shown])


def bench(ctx: Context) -> list:
    """docs/speed.md's two tables: the configurations, then the scaling sweeps (two runs of the benchmark)."""
    speed = bench_block(
        ctx,
        "bench",
        ["--no-scaling", "--json", ctx.workdir / "bench.json"],
        ["--configs", "seed", "--impls", "naive,manual,torch", *TINY_TIMING],
    )
    scaling = bench_block(ctx, "bench.scaling", ["--no-speed", "--json", ctx.workdir / "scaling.json"], TINY_TIMING)
    return [speed, scaling]


def memory(ctx: Context) -> list:
    """docs/speed.md's memory table: compare.train on 100 and 300 MB texts, ASCII and multibyte (1 MB when tiny)."""
    flags = ["--memory", "--no-speed", "--no-scaling"]
    return [bench_block(ctx, "memory", [*flags, "--memory-mb", "100,300"], ["--memory-mb", "1"])]


def saved_and_curve(ctx: Context) -> list:
    """docs/memory.md's two tables: what each backward keeps (bench --saved), then the cost curve of
    checkpointed BPTT, peak memory against time per character (bench --memory-curve), and its figure."""
    saved_args = ["--saved", "--hidden", 4 if ctx.tiny else 100, "--steps", 5 if ctx.tiny else "100,1000"]
    saved = ctx.run("compare.bench", saved_args)
    tiny_curve = ["--steps", "20", "--segments", "5", "--cells", "rnn"]
    draw, drawn = ctx.figure("memory-curve.png", "peak memory against time per character, plain and checkpointed")
    curve = bench_block(ctx, "saved.curve", ["--memory-curve", "--cells", "rnn,lstm", *draw], tiny_curve)
    return [
        Block("saved", as_markdown(saved.stdout), [saved.shown]),
        Block(curve.name, f"{curve.body}\n\n{drawn}", curve.commands),
    ]


def optimizers(ctx: Context) -> list:
    """docs/training.md#optimizers: every optimizer trained side by side by compare.train, and its figure."""
    draw, drawn = ctx.figure("optimizers.png", "training loss against steps and against wall time, per optimizer")
    side_by_side = bench_block(ctx, "optimizers", ["--optimizers", *draw], ["--steps", 20])
    threads = None if ctx.threads_given else "1 thread"  # the benchmark's default, whatever the report's
    return [Block(side_by_side.name, f"{side_by_side.body}\n\n{drawn}", side_by_side.commands, threads)]


def distributed(ctx: Context) -> list:
    """docs/distributed.md's throughput table: torchrun with 1 and 2 processes."""
    tiny = ["--configs", "mid", "--impls", "manual", *TINY_TIMING, "--rounds", 1]
    args = ["--json", ctx.workdir / "distributed.json", *(tiny if ctx.tiny else [])]
    finished = ctx.run("compare.bench_distributed", args)
    # every layout sets its own thread count (the table's layout column says which)
    return [Block("distributed", as_markdown(finished.stdout), [finished.shown], threads="threads per layout")]


def hosts(ctx: Context) -> list:
    """docs/distributed.md's table between hosts: 1 and 2 network namespaces, one torchrun each (needs root)."""
    from compare.benchmarks.netns import cannot_create_namespaces

    tiny = ["--configs", "mid", "--impls", "manual", *TINY_TIMING, "--rounds", 1]
    args = ["--hosts", "1,2", "--json", ctx.workdir / "hosts.json", *(tiny if ctx.tiny else [])]
    reason = cannot_create_namespaces()
    if reason and not os.environ.get("CI"):  # a developer's machine without root; CI runs as root and must measure
        shown = ctx.show("compare.bench_distributed", args)
        return [Block("hosts", f"Not measured: {reason}.", [shown], threads="1 thread per host")]
    finished = ctx.run("compare.bench_distributed", args)
    return [Block("hosts", as_markdown(finished.stdout), [finished.shown], threads="1 thread per host")]


def overload(ctx: Context) -> list:
    """docs/demo.md's figure: the demo's short requests while 200 clients hammer it, on the quick-start run."""
    flags = ["--demo", "--checkpoint", ctx.results[QUICKSTART_RUN], "--json", ctx.workdir / "overload.json"]
    finished = ctx.run("compare.bench", [*flags, *(TINY_OVERLOAD if ctx.tiny else [])])
    return [Block("overload", as_markdown(finished.stdout), [finished.shown])]
