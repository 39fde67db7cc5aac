"""Timing the implementations: the engines the benchmark builds, and the clock around them.

Every implementation of one configuration starts from the same initial weights
(``init_params``) and trains on the same batches of the same text, with the training
defaults (AdaGrad, lr 0.1, clip 5); only ``train_step`` is timed.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compare.benchmarks.flops import flops_per_char
from compare.data.corpus import StreamBatches
from compare.model.init import init_params

if TYPE_CHECKING:
    from compare.model.engines import Engine

IMPLS = ("naive", "manual", "torch", "torch-compiled")
RNN_ONLY_IMPLS = ("naive", "torch-compiled")  # the min-char-rnn baseline and the compiled model: the vanilla RNN's
LEARNING_RATE = 0.1  # compare.train's defaults: the work per step does not depend on them
CLIP = 5.0
INIT_SEED = 0


@dataclass(frozen=True)
class BenchConfig:
    """One model size and batch shape, timed for ``steps`` training steps per repeat."""

    name: str
    hidden_size: int
    batch_size: int
    seq_length: int = 25  # the seed script's T everywhere, so that only H and B change
    steps: int = 10

    @property
    def chars_per_step(self) -> int:
        return self.batch_size * self.seq_length


# Steps per repeat: a few thousand characters each, so that the slow baseline still finishes
# in seconds and the fast implementations still run for tens of milliseconds or more.
CONFIGS = {
    "seed": BenchConfig("seed", hidden_size=100, batch_size=1, steps=200),
    "mid": BenchConfig("mid", hidden_size=256, batch_size=32, steps=10),
    "large": BenchConfig("large", hidden_size=512, batch_size=128, steps=2),
}


class RepeatRates:
    """A result's characters per second over its timed repeats (``repeat_rates``): the median, and the best."""

    repeat_rates: list  # characters per second of each timed repeat

    @property
    def chars_per_sec(self) -> float:
        return statistics.median(self.repeat_rates)

    @property
    def best_chars_per_sec(self) -> float:
        """The fastest repeat: on a shared machine, the closest to the speed without the neighbours."""
        return max(self.repeat_rates)


@dataclass
class Measurement:
    """Speed of one implementation on one configuration."""

    config: BenchConfig
    impl: str
    repeat_rates: list  # characters per second of each repeat
    warmup_seconds: float  # the untimed first steps; for torch-compiled this includes compiling
    vocab_size: int
    error: str | None = None  # why the implementation could not run, if it could not
    cell: str = "rnn"  # the --cell timed: the FLOP count (compare.benchmarks.flops) is the vanilla RNN's alone

    @property
    def chars_per_sec(self) -> float:
        return statistics.median(self.repeat_rates) if self.repeat_rates else float("nan")

    @property
    def gflops(self) -> float:
        """Achieved rate of the counted work (compare.benchmarks.flops), in 10^9 operations per second; nan
        for another cell than rnn, whose work that formula does not count."""
        if self.cell != "rnn":
            return float("nan")
        return self.chars_per_sec * flops_per_char(self.config.hidden_size, self.vocab_size) / 1e9


def make_bench_engine(impl: str, params: dict, cell: str = "rnn") -> Engine:
    """A float32 training engine for ``impl`` and ``cell`` (naive: rnn only), starting from copies of ``params``."""
    from compare.benchmarks.naive import NaiveEngine
    from compare.model.engines import ManualEngine, TorchEngine

    if impl == "naive":
        return NaiveEngine(params, LEARNING_RATE, CLIP, "float32")
    if impl == "manual":
        return ManualEngine(params, LEARNING_RATE, CLIP, "float32", cell)
    if impl == "torch":
        return TorchEngine(params, LEARNING_RATE, CLIP, "float32", cell)
    if impl == "torch-compiled":
        engine = TorchEngine(params, LEARNING_RATE, CLIP, "float32")
        # The same module, its forward (and, through AOTAutograd, its backward) compiled by
        # Inductor; dynamic shapes so that one compilation serves every hidden and batch size
        # above 1. The optimizer step and the clip stay eager, as in ``torch``.
        engine.model.compile(dynamic=True)
        engine.name = "torch-compiled"
        return engine
    raise ValueError(f"unknown implementation {impl!r}; choose from {IMPLS}")


def timed_batches(tokens: np.ndarray, config: BenchConfig, count: int) -> list:
    """``count`` consecutive (inputs, targets) batches, cut before the clock starts."""
    batches = StreamBatches(tokens, config.batch_size, config.seq_length)
    return [batches.get_batch(index % len(batches)) for index in range(count)]


def run_steps(engine: Engine, batches: list) -> float:
    """Seconds that ``engine`` takes to train on ``batches``, one step each."""
    start = time.perf_counter()
    for inputs, targets in batches:
        engine.train_step(inputs, targets)
    return time.perf_counter() - start


@dataclass
class Timer:
    """How every configuration is timed: the same for every implementation."""

    repeats: int = 3
    warmup_steps: int = 2  # the first step compiles (torch-compiled) and allocates; the second checks it settled
    steps: int | None = None  # timed steps per repeat; None: each configuration's own
    cell: str = "rnn"  # the --cell every implementation trains (naive and torch-compiled: rnn only)

    def steps_for(self, config: BenchConfig) -> int:
        return self.steps if self.steps is not None else config.steps

    def measure(
        self,
        config: BenchConfig,
        impls: Sequence[str],
        tokens: np.ndarray,
        vocab_size: int,
        tick: Callable[[], None] = lambda: None,
    ) -> list:
        """Measurements of ``impls`` on ``config``. ``tick`` is called after each warm-up and each repeat.

        The repeats are interleaved (A B C, A B C, ...) rather than run one implementation
        after another, so that a noisy spell on a shared machine slows every implementation
        alike and the ratios between them stay fair; the median of the repeats is reported.
        """
        steps = self.steps_for(config)
        warmup = timed_batches(tokens, config, self.warmup_steps)
        timed = timed_batches(tokens, config, self.warmup_steps + steps)[self.warmup_steps :]
        params = init_params(vocab_size, config.hidden_size, INIT_SEED, self.cell)
        measurements, engines = {}, {}
        for impl in impls:
            measurements[impl] = Measurement(config, impl, [], 0.0, vocab_size, cell=self.cell)
            try:
                engine = make_bench_engine(impl, params, self.cell)
                engine.reset_hidden(config.batch_size)
                measurements[impl].warmup_seconds = run_steps(engine, warmup)
                engines[impl] = engine
            except Exception as error:  # e.g. torch.compile without a working C++ compiler
                measurements[impl].error = one_line(error)
            tick()
        for _ in range(self.repeats):
            for impl, engine in engines.items():
                seconds = run_steps(engine, timed)
                measurements[impl].repeat_rates.append(steps * config.chars_per_step / seconds)
                tick()
        return [measurements[impl] for impl in impls]


def one_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}"


# How cost grows: hidden size doubles at batch 1 (the seed setting, where Python overhead is
# largest), and batch size doubles at hidden size 256 (the mid setting).
SWEEP_HIDDEN_SIZES = (64, 128, 256, 512, 1024)
SWEEP_HIDDEN_BATCH = 1
SWEEP_BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SWEEP_BATCH_HIDDEN = 256
SWEEP_IMPLS = ("manual", "torch")
SWEEP_CHARS = 1000  # characters per timed repeat of each sweep point (at least 2 steps)


def sweep_configs() -> list:
    """The configurations of the scaling table, hidden-size sweep first."""
    configs = []
    for hidden_size in SWEEP_HIDDEN_SIZES:
        configs.append(sweep_config("hidden", hidden_size, SWEEP_HIDDEN_BATCH))
    for batch_size in SWEEP_BATCH_SIZES:
        configs.append(sweep_config("batch", SWEEP_BATCH_HIDDEN, batch_size))
    return configs


def sweep_config(sweep: str, hidden_size: int, batch_size: int) -> BenchConfig:
    steps = max(2, SWEEP_CHARS // (batch_size * 25))
    return BenchConfig(f"{sweep}:H{hidden_size}:B{batch_size}", hidden_size, batch_size, steps=steps)


def rank_args(impl: str, config: str, args: argparse.Namespace, out: Path) -> list[str]:
    """What torchrun runs on every rank: ``-m compare.bench_distributed ... --as-rank OUT`` (rank_main)."""
    return [
        "-m",
        "compare.bench_distributed",
        "--impls",
        impl,
        "--configs",
        config,
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--repeats",
        str(args.repeats),
        "--as-rank",
        str(out),
    ]
