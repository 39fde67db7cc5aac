"""The peers section: every cell against PyTorch's fused module on 1 and 2 threads (docs/speed.md)."""

from __future__ import annotations

from compare.reporting.benches import as_markdown
from compare.reporting.runner import Block, Context


def peers(ctx: Context) -> list:
    tiny = ["--configs", "seed", "--threads", "1", "--steps", 1, "--repeats", 1]
    args = ["--peers", "--json", ctx.workdir / "peers.json", *(tiny if ctx.tiny else [])]
    finished = ctx.run("compare.bench", args)
    return [Block("bench.peers", as_markdown(finished.stdout), [finished.shown])]
