"""docs/speed.md's peers and calls sections: every cell against PyTorch's fused module on 1 and 2 threads,
with the frozen f287690 baseline and the matmul peak measured in the same run; and what one step executes."""

from __future__ import annotations

from compare.reporting.benches import as_markdown
from compare.reporting.runner import Block, Context


def peers(ctx: Context) -> list:
    tiny = ["--configs", "seed", "--threads", "1", "--steps", 1, "--repeats", 1, "--peak-size", 256]
    args = ["--peers", "--json", ctx.workdir / "peers.json", *(tiny if ctx.tiny else [])]
    finished = ctx.run("compare.bench", args)
    return [Block("bench.peers", as_markdown(finished.stdout), [finished.shown])]


def calls(ctx: Context) -> list:
    """C calls, Python calls and operators of one seed-config step: baseline (before) and manual (after)."""
    tiny = ["--hidden-size", 8, "--warmup", 1, "--steps", 1, "--repeats", 1]
    args = ["--calls", "--json", ctx.workdir / "calls.json", *(tiny if ctx.tiny else [])]
    finished = ctx.run("compare.bench", args)
    return [Block("bench.calls", as_markdown(finished.stdout), [finished.shown], threads="1 thread (--threads 1)")]
