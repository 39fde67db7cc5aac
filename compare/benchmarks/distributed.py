"""Throughput of data-parallel training (compare.training.parallel) with 1 and 2 processes.

    python -m compare.bench_distributed                     # large: hidden 512, batch 128, T 25, float32
    python -m compare.bench_distributed --impls manual --json dist.json

Every measurement is a torchrun launch (``--standalone``, gloo on this machine) of this module
as the ranks: each builds the same engine from the same weights, wraps it for data parallelism
exactly as ``compare.train`` does (its rows of the batch, one all-reduce of the gradients per
step), warms up, then times whole training steps, all-reduce included. Layouts, for N in
``--processes`` (default 1,2):

* 1 process x 1 thread: the baseline of the scaling efficiency, speed-up / N;
* 1 process x N threads: the same cores as N processes, used by BLAS threads instead;
* N processes x 1 thread: data parallelism.

On a machine with N cores, N processes x 1 thread and 1 process x N threads compete for the
same cores, so their ratio says which way of using them is faster; the efficiency against one
process on one core says how much of the ideal N-fold speed-up the collective leaves. The
throughput counts every rank's characters: B x T per step, whatever N.

Each rank (rank_main, run by ``--as-rank OUT``) warms up, then times whole training steps,
all-reduce included; rank 0 writes the rates to OUT, a JSON file, for the launcher (measure here,
or compare.benchmarks.hosts between network hosts) to read.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from compare.benchmarks.hosts import hosts_problem, hosts_table, measure_all_hosts
from compare.benchmarks.timing import CONFIGS, RepeatRates, rank_args
from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser, comma_list

IMPLS = ("manual", "torch")
LEARNING_RATE, CLIP, INIT_SEED = 0.1, 5.0, 0  # compare.train's defaults; the work per step does not depend on them


# ----- one rank of a measurement ---------------------------------------------------------------------


def rank_main(args: argparse.Namespace) -> None:
    """One rank of one measurement: time data-parallel training steps; rank 0 writes the rates to --as-rank."""
    import torch
    import torch.distributed as dist
    from threadpoolctl import threadpool_limits

    from compare.data.corpus import PYDOC_TOPICS, StreamBatches, Vocab, builtin_corpus
    from compare.model.engines import make_engine
    from compare.model.init import init_params
    from compare.training.parallel import DataParallel

    config, impl, threads = CONFIGS[args.configs], args.impls, int(os.environ["BENCH_THREADS"])
    torch.set_num_threads(threads)
    text = builtin_corpus(PYDOC_TOPICS)  # the text the documented speeds were measured on
    vocab = Vocab.from_text(text)
    batches = StreamBatches(vocab.encode(text), config.batch_size, config.seq_length)
    parallel = DataParallel.from_environment()
    dist.init_process_group("gloo")
    engine = parallel.wrap(
        make_engine(impl, init_params(len(vocab), config.hidden_size, INIT_SEED), LEARNING_RATE, CLIP, "float32")
    )
    engine.reset_hidden(config.batch_size)
    steps = iter(range(10**9))
    with threadpool_limits(limits=threads):
        for _ in range(args.warmup):
            engine.train_step(*batches.get_batch(next(steps) % len(batches)))
        rates = []
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            for _ in range(args.steps):
                engine.train_step(*batches.get_batch(next(steps) % len(batches)))
            rates.append(args.steps * config.batch_size * config.seq_length / (time.perf_counter() - start))
    all_reduce_ms = time_all_reduce(sum(value.size for value in engine.numpy_params().values()) + 2)
    if parallel.is_main:
        Path(args.as_rank).write_text(json.dumps({"rates": rates, "all_reduce_ms": all_reduce_ms}))
    dist.barrier()  # no rank tears gloo down while another is still in a collective with it
    dist.destroy_process_group()


def time_all_reduce(size: int, times: int = 10) -> float:
    """Milliseconds of one float32 all-reduce of ``size`` numbers (the fastest of ``times``): the
    communication a training step adds, without the waiting for the slowest rank."""
    import torch
    import torch.distributed as dist

    flat = torch.zeros(size, dtype=torch.float32)
    fastest = float("inf")
    for _ in range(times):
        dist.barrier()
        start = time.perf_counter()
        dist.all_reduce(flat)
        fastest = min(fastest, time.perf_counter() - start)
    return fastest * 1e3


# ----- the launcher ----------------------------------------------------------------------------------


@dataclass
class Layout:
    processes: int
    threads: int  # per process

    @property
    def label(self) -> str:
        return f"{self.processes} process{'es' if self.processes > 1 else ''} x {self.threads} thread" + (
            "s" if self.threads > 1 else ""
        )


@dataclass
class Result(RepeatRates):
    impl: str
    config: str
    processes: int
    threads: int
    repeat_rates: list  # characters per second of each timed repeat, the whole batch counted
    all_reduce_ms: float  # one all-reduce of a buffer the size of every gradient, alone (min of 10)


def layouts(processes: list) -> list:
    """1 x 1 first (the baseline), then for each N > 1: 1 process x N threads, N processes x 1 thread."""
    chosen = [Layout(1, 1)]
    for count in sorted(set(processes) - {1}):
        chosen += [Layout(1, count), Layout(count, 1)]
    return chosen


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(
        prog="python -m compare.bench_distributed",
        description="Training throughput with 1 and N data-parallel processes (torchrun, gloo), for the manual "
        "and torch implementations, and the scaling efficiency.",
    )
    parser.add_argument("--impls", default=",".join(IMPLS), help=f"comma-separated, from {', '.join(IMPLS)}")
    parser.add_argument(
        "--configs",
        default="large",
        help=f"comma-separated configurations of compare.bench, from {', '.join(CONFIGS)} "
        "(batch size divisible by every process count)",
    )
    parser.add_argument("--processes", default="1,2", help="comma-separated process counts; 1 is always measured")
    parser.add_argument(
        "--hosts",
        metavar="COUNTS",
        help="instead of --processes: comma-separated host counts, each host a network namespace of this "
        "machine with one process of one thread, a torchrun per host (compare.benchmarks.hosts; needs root)",
    )
    parser.add_argument("--steps", type=int, default=5, help="timed training steps per repeat")
    parser.add_argument(
        "--warmup",
        type=int,
        default=10,
        help="untimed training steps before the clock starts (measured: the first 5 to 8 steps of a "
        "fresh process run at half speed)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per launch")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="launches of every layout, interleaved (A B C, A B C) so that a noisy spell on a shared "
        "machine slows every layout alike; the median of all their repeats is reported",
    )
    parser.add_argument(
        "--omp-wait-policy",
        choices=["passive", "active"],
        default="passive",
        help="OMP_WAIT_POLICY of every rank (compare.bench explains why passive)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument("--as-rank", metavar="OUT", help=argparse.SUPPRESS)  # the benchmark's own torchrun ranks
    return parser


def settings_problem(args: argparse.Namespace) -> str | None:
    """A one-line description of the first invalid flag, or None."""
    if not comma_list(args.impls) or set(comma_list(args.impls)) - set(IMPLS):
        return f"--impls {args.impls!r}: choose from {', '.join(IMPLS)}"
    if not comma_list(args.configs) or set(comma_list(args.configs)) - set(CONFIGS):
        return f"--configs {args.configs!r}: choose from {', '.join(CONFIGS)}"
    try:
        counts = [int(count) for count in comma_list(args.processes)]
    except ValueError:
        return f"--processes {args.processes!r}: give whole numbers, e.g. 1,2"
    if not counts or min(counts) < 1:
        return f"--processes {args.processes!r}: give positive counts, e.g. 1,2"
    for name in comma_list(args.configs):
        uneven = [count for count in counts if CONFIGS[name].batch_size % count]
        if uneven:
            return f"--configs {name}: batch size {CONFIGS[name].batch_size} does not split over {uneven} processes"
    for flag, value, least in (
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--repeats", args.repeats, 1),
        ("--rounds", args.rounds, 1),
    ):
        if value < least:
            return f"{flag} must be at least {least}, got {value}"
    return None


def measure(impl: str, config: str, layout: Layout, args: argparse.Namespace) -> Result:
    """One torchrun launch of ``layout`` ranks running ``rank_main``."""
    with tempfile.TemporaryDirectory() as directory:
        out = Path(directory) / "rates.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(layout.processes),
            *rank_args(impl, config, args, out),
        ]
        env = {
            **os.environ,
            "BENCH_THREADS": str(layout.threads),
            "OMP_NUM_THREADS": str(layout.threads),
            "OMP_WAIT_POLICY": args.omp_wait_policy.upper(),
        }
        result = subprocess.run(command, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr[-2000:]}")
        measured = json.loads(out.read_text())
        return Result(impl, config, layout.processes, layout.threads, measured["rates"], measured["all_reduce_ms"])


def table(results: list) -> str:
    """Markdown: throughput per layout, speed-up and efficiency against 1 process x 1 thread."""
    lines = [
        "| impl | config | layout | chars/s (median) | chars/s (best) | speed-up vs 1x1 | "
        "efficiency (speed-up / processes) | one all-reduce |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        base = next(
            r for r in results if (r.impl, r.config, r.processes, r.threads) == (result.impl, result.config, 1, 1)
        )
        speedup = result.chars_per_sec / base.chars_per_sec
        efficiency = f"{speedup / result.processes:.0%}" if result.processes > 1 else "-"
        all_reduce = f"{result.all_reduce_ms:.1f} ms" if result.processes > 1 else "-"
        layout = Layout(result.processes, result.threads).label
        lines.append(
            f"| {result.impl} | {result.config} | {layout} | {result.chars_per_sec:,.0f} | "
            f"{result.best_chars_per_sec:,.0f} | {speedup:.2f} | {efficiency} | {all_reduce} |"
        )
    return "\n".join(lines)


def measure_all(args: argparse.Namespace) -> list:
    """Every implementation, configuration and layout, ``--rounds`` times, interleaved."""
    results: dict[tuple, Result] = {}
    for round_number in range(args.rounds):
        for config in comma_list(args.configs):
            for impl in comma_list(args.impls):
                for layout in layouts([int(count) for count in comma_list(args.processes)]):
                    print(
                        f"round {round_number + 1}/{args.rounds}: {impl} {config}, {layout.label} ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    measured = measure(impl, config, layout, args)
                    key = (impl, config, layout.processes, layout.threads)
                    if key in results:
                        results[key].repeat_rates += measured.repeat_rates
                    else:
                        results[key] = measured
    return list(results.values())


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench_distributed", distributed_command, argv)


def distributed_command(argv: list) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.as_rank:
        rank_main(args)
        return 0
    if args.hosts:
        args.processes = "1"  # the host counts take the place of the process counts
    problem = settings_problem(args) or (hosts_problem(args) if args.hosts else None)
    if problem:
        parser.error(problem)  # one line, exit code 2
    started = time.perf_counter()
    results = measure_all_hosts(args) if args.hosts else measure_all(args)
    print(hosts_table(results) if args.hosts else table(results))
    load = os.getloadavg()[0]
    print(f"\n{os.cpu_count()} CPUs, load average {load:.2f} at the end; {time.perf_counter() - started:.0f} s.")
    if args.json:
        document = {
            "results": [
                {
                    **asdict(result),
                    "chars_per_sec": result.chars_per_sec,
                    "best_chars_per_sec": result.best_chars_per_sec,
                }
                for result in results
            ],
            "cpus": os.cpu_count(),
            "load_average": load,
            "steps": args.steps,
            "repeats": args.repeats,
            "rounds": args.rounds,
        }
        Path(args.json).write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
