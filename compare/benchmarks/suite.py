"""The speed and memory benchmark that ``python -m compare.bench`` runs: the settings, the run, the JSON.

The float32 matmul peak is measured again before the first group of configurations (each
configuration of the speed table, then each scaling sweep) and after every group, on 1 thread
and on every core; the best of each is the peak. Other processes' share of the CPUs is
measured over the same span and decides whether the run is called clean.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.benchmarks.flops import PEAK_MATRIX_SIZE, LoadMonitor, PeakLog, peak_thread_counts
from compare.benchmarks.timing import CONFIGS, RNN_ONLY_IMPLS, SWEEP_IMPLS, Timer, sweep_configs

if TYPE_CHECKING:
    from compare.benchmarks.report import Machine


@dataclass
class BenchSettings:
    configs: list
    impls: list
    threads: int
    timer: Timer
    speed: bool
    scaling: bool
    memory: bool
    memory_mb: list  # file sizes, MB
    memory_text: list  # kinds of text, from compare.benchmarks.memory.TEXT_KINDS
    json: str | None
    progress: bool
    omp_wait_policy: str  # what torch's OpenMP runtime will see: the flag's value, else the environment's
    omp_wait_policy_flag: bool  # whether the flag asked for it (then it is set before torch is imported)
    flush_denormals: bool
    peak_size: int = PEAK_MATRIX_SIZE  # n of the n x n product that measures the matmul peak


@dataclass
class Group:
    """Configurations timed together, with the matmul peak measured before and after them."""

    name: str
    configs: list
    impls: tuple
    sweep: bool  # a scaling sweep (the second tables) rather than a row of the speed table


def timed_impls(settings: BenchSettings) -> tuple:
    """--impls, less the vanilla RNN's own (naive, torch-compiled) for another --cell."""
    rnn = settings.timer.cell == "rnn"
    return tuple(impl for impl in settings.impls if rnn or impl not in RNN_ONLY_IMPLS)


def plan_groups(settings: BenchSettings) -> list:
    groups = [Group(name, [CONFIGS[name]], timed_impls(settings), False) for name in settings.configs]
    groups = groups if settings.speed else []
    if settings.scaling:
        for sweep in ("hidden", "batch"):
            configs = [config for config in sweep_configs() if config.name.startswith(sweep + ":")]
            groups.append(Group(f"the {sweep} sweep", configs, SWEEP_IMPLS, True))
    return groups


def progress_bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="run", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def describe_machine(settings: BenchSettings, peaks: PeakLog) -> Machine:
    import numpy
    import torch

    from compare.benchmarks.flops import cpu_model
    from compare.benchmarks.report import Machine

    versions = {"numpy": numpy.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    return Machine(cpu_model(), settings.threads, peaks, settings.omp_wait_policy, settings.flush_denormals, versions)


def measure_groups(settings: BenchSettings, groups: list, peaks: PeakLog, bar: Any) -> tuple:
    """(speed, scaling) measurements, the matmul peak measured before, between and after the groups."""
    from compare.data.corpus import PYDOC_TOPICS, Vocab, builtin_corpus

    text = builtin_corpus(PYDOC_TOPICS)  # the text the documented speeds were measured on
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    speed: list = []
    scaling: list = []
    peaks.measure(f"before {groups[0].name}", tick=bar.update)
    for group in groups:
        for config in group.configs:
            bar.set_description(f"bench {config.name}")
            measured = settings.timer.measure(config, group.impls, tokens, len(vocab), tick=bar.update)
            (scaling if group.sweep else speed).extend(measured)
        bar.set_description("bench matmul peak")
        peaks.measure(f"after {group.name}", tick=bar.update)
    return speed, scaling


def report_timing(machine: Machine, speed: list, scaling: list, other_load_pct: float | None) -> dict:
    """Print the peaks, the load verdict and the tables; return the JSON document so far."""
    from compare.benchmarks import report

    clean, verdict = report.load_verdict(other_load_pct)
    measured = speed + scaling
    by_key = report.by_config_and_impl(measured)
    document: dict[str, Any] = {"machine": machine.as_json(), "results": [], "scaling": []}
    document["machine"].update(
        other_load_pct=other_load_pct, clean=clean, peak_exceeded=bool(report.above_peak(measured, machine))
    )
    print(f"{machine.header()}\n{machine.peak_lines()}\n{verdict}\n")
    tables = []
    if speed:
        tables.append((report.speed_table(speed, machine), speed))
        document["results"] = [report.result_json(m, machine, by_key) for m in speed]
    if scaling:
        for sweep, title in (("hidden", "Hidden size doubling"), ("batch", "Batch size doubling")):
            rows = [m for m in scaling if m.config.name.startswith(sweep + ":")]
            fixed = (
                f"batch {rows[0].config.batch_size}" if sweep == "hidden" else f"hidden {rows[0].config.hidden_size}"
            )
            table = report.scaling_table(rows, machine, sweep)
            tables.append((f"{title} ({fixed}, T {rows[0].config.seq_length}):\n\n{table}", rows))
        document["scaling"] = [report.result_json(m, machine, by_key) for m in scaling]
    for table, rows in tables:
        warning = report.peak_warning(rows, machine)  # next to the table whose rate beat the peak
        print(table + ("\n" + warning if warning else "") + "\n")
    return document


def run(settings: BenchSettings) -> dict:
    """Measure what ``settings`` asks for; print the tables; return the JSON document."""
    import torch
    from threadpoolctl import threadpool_limits

    from compare.benchmarks import report
    from compare.benchmarks.denormals import set_flush_denormal

    started = time.perf_counter()
    groups = plan_groups(settings)
    peaks = PeakLog(peak_thread_counts(settings.threads), settings.peak_size)
    timed_runs = sum(len(config_group.configs) * len(config_group.impls) for config_group in groups)
    peak_runs = (len(groups) + 1) * len(peaks.thread_counts) if groups else 0
    runs = (
        timed_runs * (1 + settings.timer.repeats)
        + peak_runs
        + (5 * len(settings.memory_mb) * len(settings.memory_text) if settings.memory else 0)
    )
    document: dict[str, Any] = {"machine": describe_machine(settings, peaks).as_json(), "results": [], "scaling": []}
    torch.set_num_threads(settings.threads)
    set_flush_denormal(settings.flush_denormals)  # this thread's floating-point mode and NumPy's BLAS threads'
    try:
        with threadpool_limits(limits=settings.threads), progress_bar(runs, settings.progress) as bar:
            if groups:
                load = LoadMonitor().start()
                speed, scaling = measure_groups(settings, groups, peaks, bar)
                if settings.timer.cell != "rnn":
                    print(f"cell: {settings.timer.cell} (GFLOP/s and % of peak count the vanilla RNN's work only: nan)")
                document = report_timing(describe_machine(settings, peaks), speed, scaling, load.other_load_pct())
            else:  # memory only: no peak to measure, no timing to disturb
                print(describe_machine(settings, peaks).header() + "\n")
            if settings.memory:
                from compare.benchmarks.memory import measure_memory, memory_table

                bar.set_description("bench memory")
                repo = str(Path(__file__).resolve().parents[2])
                memories = [
                    measure_memory(size_mb, kind, settings.threads, repo, tick=lambda: bar.update())
                    for size_mb in settings.memory_mb
                    for kind in settings.memory_text
                ]
                print(memory_table(memories) + "\n")
                document["memory"] = report.memory_json(memories)
    finally:
        set_flush_denormal(False)  # the default IEEE mode again, for whatever this process runs next
    document["cell"] = settings.timer.cell  # every row's: the speed and scaling tables time this one cell
    document["seconds"] = time.perf_counter() - started
    print(f"Whole run: {document['seconds']:.0f} s.")
    return document
