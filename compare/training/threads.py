"""How many threads torch trains on without --threads: a rule on the configuration, never a timing.

Measured with the torch twin on an idle two-core machine (docs/training.md#threads): while the
step is small, a second thread slowed it down (a step is then many small operations, each of which
pays to hand work to the thread pool); it sped the step up once either the recurrent weights W,
G*H*H entries (G gate blocks: 1 rnn, 4 lstm, 3 gru), or the recurrence's work per time step,
B*G*H*H multiply-adds of W h_{t-1}, was large. So torch gets 1 thread while both are below the
thresholds here, and every core the process may use otherwise. With --impl both, torch gets 1
thread at every size: each step then runs NumPy's BLAS and torch's thread pool in turn on the same
cores, and torch on every core made the step of the two together slower.

Besides --impl, the rule reads cell, hidden_size and batch_size only, which a resume may not change:
a resumed run with the same flags picks what the uninterrupted one picked (a thread count can change
torch's float results). It does not see the machine's load: on a busy machine one thread wins at
every size (pass --threads 1).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from compare.benchmarks.flops import available_cores
from compare.model.cells import manual_cell

if TYPE_CHECKING:
    from compare.training.config import TrainConfig

ONE_THREAD_WEIGHTS = 2**16  # G*H*H entries of W below which a second thread did not pay (measured)
ONE_THREAD_STEP_WORK = 2**20  # B*G*H*H multiply-adds per time step below which it did not pay (measured)
# What torch reads, in this order, for its own default when it is imported (torchrun sets the first)
TORCH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SIZE_FIELDS = ("cell", "hidden_size", "batch_size")  # what default_torch_threads reads of a config, with impl


@dataclass(frozen=True)
class ThreadChoice:
    """torch's thread count for a run and why; threads None: left as an environment variable set it."""

    threads: int | None
    reason: str

    def line(self) -> str:
        """'torch threads: 1 (auto: ...; --threads N to choose)'."""
        return f"torch threads: {self.threads} ({self.reason})"


def default_torch_threads(gates: int, hidden_size: int, batch_size: int, cores: int) -> ThreadChoice:
    """1 thread while G*H*H and B*G*H*H are both below their thresholds, else ``cores``."""
    weights = gates * hidden_size * hidden_size
    work = batch_size * weights
    sizes = {"G*H^2": (weights, ONE_THREAD_WEIGHTS), "B*G*H^2": (work, ONE_THREAD_STEP_WORK)}
    reached = [f"{name} = {size:,} >= {limit:,}" for name, (size, limit) in sizes.items() if size >= limit]
    if not reached:
        below = " and ".join(f"{name} = {size:,} below {limit:,}" for name, (size, limit) in sizes.items())
        return ThreadChoice(1, f"auto: {below}; --threads N to choose")
    return ThreadChoice(
        cores,
        f"auto: the {cores} core{'s' if cores != 1 else ''} this process may use, as {' and '.join(reached)}; "
        "--threads N to choose",
    )


def torch_thread_choice(config: TrainConfig, environ: Mapping[str, str]) -> ThreadChoice:
    """--threads when given; else the environment's count when it sets one; else 1 for --impl both; else the rule."""
    if config.threads is not None:
        return ThreadChoice(config.threads, "--threads")
    for name in TORCH_THREAD_VARIABLES:
        if environ.get(name):
            return ThreadChoice(None, f"{name}={environ[name]} in the environment; --threads N to choose")
    if config.impl == "both":
        return ThreadChoice(
            1, "auto: --impl both, where NumPy's BLAS and torch take turns on the cores; --threads N to choose"
        )
    gates = int(manual_cell(config.cell).GATES)
    return default_torch_threads(gates, config.hidden_size, config.batch_size, available_cores())


def apply_torch_threads(config: TrainConfig) -> ThreadChoice:
    """Set torch's thread count as torch_thread_choice says; returns the count torch then runs on, and why."""
    import torch

    choice = torch_thread_choice(config, os.environ)
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return ThreadChoice(torch.get_num_threads(), choice.reason)
