"""Every section of the report: its name, what it needs, the blocks it fills, and where they sit.

A section runs its commands and returns Blocks; a block's name is its section's name, or
the section's name, a dot and a part (``bench.scaling``). The gradcheck section is here:
it is two commands and a small table.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from compare.reporting import (
    agreement,
    benches,
    cells,
    derivatives,
    diagnosis,
    flow,
    original,
    peers,
    quickstart,
    training,
)
from compare.reporting.runner import Block, Context
from compare.reporting.text import table

DEFAULT_STEP = 1e-4  # compare.gradcheck --step
OTHER_STEPS = (1e-5, 1e-3)  # the centred-difference steps docs/gradcheck.md compares with the default 1e-4
TINY_GRADCHECK = ["--hidden-size", 2, "--seq-length", 5]


def gradcheck(ctx: Context) -> list:
    """The original's Table 1 as compare.gradcheck prints it, and the W row's max at other steps."""
    tiny = TINY_GRADCHECK if ctx.tiny else []
    main_json = ctx.workdir / "gradcheck.json"
    table_run = ctx.run("compare.gradcheck", ["--with-original", "--json", main_json, *tiny])
    results = {DEFAULT_STEP: json.loads(main_json.read_text(encoding="utf-8"))["results"]["central"]}
    commands = [table_run.shown]
    for step in OTHER_STEPS:
        path = ctx.workdir / f"gradcheck-step-{step:g}.json"
        commands.append(
            ctx.run("compare.gradcheck", ["--methods", "central", "--step", step, "--json", path, *tiny]).shown
        )
        results[step] = json.loads(path.read_text(encoding="utf-8"))["results"]["central"]
    rows = [
        [
            f"`{step:g}`" + (" (default)" if step == DEFAULT_STEP else ""),
            f"{found['W']['max']:.2e}",
            f"{found['All']['max']:.2e}",
        ]
        for step, found in sorted(results.items())
    ]
    steps_table = table(["`--step`", "W central max", "All central max"], rows)
    return [
        Block("gradcheck", table_run.stdout.strip(), [table_run.shown]),
        Block("gradcheck.steps", steps_table, commands),
    ]


@dataclass
class Section:
    name: str
    run: Callable[[Context], list]
    blocks: tuple  # the names of the blocks it fills
    about: str  # for --help
    needs: tuple = ()  # sections whose results this one reads (they run first, and their blocks are rewritten too)


SECTIONS = {
    section.name: section
    for section in (
        Section("quickstart", quickstart.quickstart, ("quickstart",), "the README's training run, the corpus"),
        Section(
            "prose", quickstart.prose, ("prose",), "the quick start for seeds 0-9: tables and padding in its sample"
        ),
        Section(
            "demo", quickstart.demo, ("demo",), "docs/demo.png: the demo on the quick start", needs=("quickstart",)
        ),
        Section(
            "samples", training.samples, ("samples", "samples.spaces"), "that run's samples", needs=("quickstart",)
        ),
        Section("gradcheck", gradcheck, ("gradcheck", "gradcheck.steps"), "the original's Table 1, other steps"),
        Section("drift", training.drift, ("drift",), "float64 and float32 drift over 60 steps"),
        Section("agreement", agreement.agreement, ("agreement",), "implementation error and chaos, 500 steps"),
        Section("tensorboard", agreement.tensorboard, ("tensorboard",), "TensorBoard after a short run, a screenshot"),
        Section("original", original.original, ("original",), "--preset original against PyTorch's rule"),
        Section("lossplot", training.lossplot, ("lossplot",), "docs/demo.md's 20,000-step run and loss.png"),
        Section("cells", cells.cells, ("cells", "cells.speed", "cells.divergence"), "rnn, lstm, gru"),
        Section("gradflow", flow.gradflow, ("gradflow",), "rnn, lstm, gru: how far back the gradient reaches"),
        Section("routes", derivatives.routes, ("routes",), "rnn, lstm, gru: BPTT, RTRL, reverse and forward autograd"),
        Section("rtrl", derivatives.rtrl, ("rtrl",), "the four routes' cost per step as H grows, and rtrl-cost.png"),
        Section("truncation", derivatives.truncation, ("truncation",), "truncated against exact gradients, per K"),
        Section(
            "second_order",
            derivatives.second_order,
            ("second_order", "second_order.speed"),
            "H v and G v three ways for every cell, and H v's speed against the gradient's",
        ),
        Section("diagnosis", diagnosis.diagnosis, ("diagnosis", "diagnosis.carry"), "diagnose planted bugs"),
        Section("bench", benches.bench, ("bench", "bench.scaling"), "speed and scaling"),
        Section(
            "peers",
            peers.peers,
            ("bench.peers",),
            "every cell against PyTorch's fused module and the f287690 baseline, 1 and 2 threads, the matmul peak",
        ),
        Section("calls", peers.calls, ("bench.calls",), "C calls, Python calls and operators of one seed-config step"),
        Section("memory", benches.memory, ("memory",), "peak memory on a 100 MB text"),
        Section(
            "saved",
            benches.saved_and_curve,
            ("saved", "saved.curve"),
            "what each backward keeps; checkpointed BPTT's peak memory against time, T up to 10,000",
        ),
        Section(
            "optimizers",
            benches.optimizers,
            ("optimizers",),
            "adagrad, rmsprop, adam and hf side by side, 3000 steps each, and optimizers.png",
        ),
        Section("distributed", benches.distributed, ("distributed",), "1 and 2 processes"),
        Section("hosts", benches.hosts, ("hosts",), "1 and 2 hosts (network namespaces; needs root)"),
        Section(
            "overload",
            benches.overload,
            ("overload",),
            "the demo's short requests while 200 clients hammer it",
            needs=("quickstart",),
        ),
    )
}
BLOCKS = {block: section for section in SECTIONS.values() for block in section.blocks}


def plan(requested: list) -> list:
    """The sections to run, in SECTIONS order, each after the ones it needs."""
    wanted = set(requested)
    for name in requested:
        wanted.update(SECTIONS[name].needs)
    return [section for name, section in SECTIONS.items() if name in wanted]
