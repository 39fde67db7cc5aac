"""The speed and memory benchmark that ``python -m compare.bench`` runs: the settings, the run, the JSON."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from compare.benchmarks.flops import LoadMonitor
from compare.benchmarks.timing import CONFIGS, SWEEP_IMPLS, Timer, sweep_configs


@dataclass
class BenchSettings:
    configs: list
    impls: list
    threads: int
    timer: Timer
    speed: bool
    scaling: bool
    memory: bool
    memory_mb: float
    json: str | None
    progress: bool
    omp_wait_policy: str  # what torch's OpenMP runtime will see: the flag's value, else the environment's
    omp_wait_policy_flag: bool  # whether the flag asked for it (then it is set before torch is imported)
    flush_denormals: bool


def progress_bar(total: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="bench", unit="run", disable=not enabled, dynamic_ncols=True, file=sys.stderr)


def measure_machine(settings: BenchSettings):
    import numpy
    import torch

    from compare.benchmarks.flops import cpu_model, measure_matmul_peak
    from compare.benchmarks.report import Machine

    versions = {"numpy": numpy.__version__, "torch": torch.__version__, "python": sys.version.split()[0]}
    return Machine(
        cpu_model(),
        settings.threads,
        measure_matmul_peak(),
        settings.omp_wait_policy,
        settings.flush_denormals,
        versions,
    )


def run(settings: BenchSettings) -> dict:
    """Measure what ``settings`` asks for; print the tables; return the JSON document."""
    import torch
    from threadpoolctl import threadpool_limits

    from compare.benchmarks import report
    from compare.data.corpus import Vocab, builtin_corpus

    started = time.perf_counter()
    text = builtin_corpus()
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    speed_configs = [CONFIGS[name] for name in settings.configs] if settings.speed else []
    sweeps = sweep_configs() if settings.scaling else []
    runs = (sum(len(settings.impls) for _ in speed_configs) + len(sweeps) * len(SWEEP_IMPLS)) * (
        1 + settings.timer.repeats
    ) + (5 if settings.memory else 0)
    document = {"results": [], "scaling": []}
    torch.set_num_threads(settings.threads)
    torch.set_flush_denormal(settings.flush_denormals)  # this thread's floating-point mode: NumPy's work too
    with threadpool_limits(limits=settings.threads), progress_bar(runs, settings.progress) as bar:
        load = LoadMonitor(settings.threads).start()
        machine = measure_machine(settings)
        document["machine"] = machine.as_json()
        print(machine.header() + "\n")
        speed = []
        for config in speed_configs:
            bar.set_description(f"bench {config.name}")
            speed += settings.timer.measure(config, settings.impls, tokens, len(vocab), tick=bar.update)
        if speed:
            print(report.speed_table(speed, machine) + "\n")
            document["results"] = [report.result_json(m, machine) for m in speed]
        scaling = []
        for config in sweeps:
            bar.set_description(f"bench {config.name}")
            scaling += settings.timer.measure(config, SWEEP_IMPLS, tokens, len(vocab), tick=bar.update)
        if scaling:
            print(f"Hidden size doubling (batch {sweeps[0].batch_size}, T 25):\n")
            print(report.scaling_table(scaling, machine, "hidden") + "\n")
            print(f"Batch size doubling (hidden {sweeps[-1].hidden_size}, T 25):\n")
            print(report.scaling_table(scaling, machine, "batch") + "\n")
            document["scaling"] = [report.result_json(m, machine) for m in scaling]
        document["machine"]["other_load_pct"] = load.other_load_pct()
        print(report.load_note(document["machine"]["other_load_pct"]) + "\n")
        if settings.memory:
            from compare.benchmarks.memory import measure_memory, memory_table

            bar.set_description("bench memory")
            memory = measure_memory(
                settings.memory_mb,
                settings.threads,
                str(Path(__file__).resolve().parents[2]),
                tick=lambda: bar.update(),
            )
            print(memory_table(memory) + "\n")
            document["memory"] = report.memory_json(memory)
    document["seconds"] = time.perf_counter() - started
    print(f"Whole run: {document['seconds']:.0f} s.")
    return document
