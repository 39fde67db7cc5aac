"""Throughput of data-parallel training between separate network hosts: 1 and 2 hosts, one process each.

    python -m compare.bench --distributed --hosts 1,2          # large: hidden 512, batch 128, T 25, float32

Each host is a network namespace of this machine (compare.benchmarks.netns; needs root), and
every measurement is what docs/distributed.md tells users to run on real machines: one torchrun
per host, a c10d rendezvous on the first host's address, gloo over the veth link between them.
The ranks are compare.benchmarks.distributed's (``--as-rank``): the same engines wrapped as
compare.train wraps them, warm-up, then whole training steps timed, all-reduce included. One
process of one thread per host, so N hosts use N of this machine's cores, and the efficiency is
the speed-up over 1 host divided by N. What the link adds is a kernel's veth and bridge, not a
wire: a real network is slower, so read the all-reduce column as a floor.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from compare.benchmarks.netns import INTERFACE, cannot_create_namespaces, network_hosts
from compare.benchmarks.timing import CONFIGS, RepeatRates, rank_args
from compare.cli.parser import comma_list

RENDEZVOUS_PORT = 29500  # on the first host: free, since the namespaces are made for each measurement


@dataclass
class HostsResult(RepeatRates):
    impl: str
    config: str
    hosts: int  # one process of one thread on each
    repeat_rates: list  # characters per second of each timed repeat, the whole batch counted
    all_reduce_ms: float  # one all-reduce of a buffer the size of every gradient, alone (min of 10)


def hosts_problem(args: argparse.Namespace) -> str | None:
    """A one-line description of what is wrong with --hosts, or None."""
    try:
        counts = [int(count) for count in comma_list(args.hosts)]
    except ValueError:
        return f"--hosts {args.hosts!r}: give whole numbers, e.g. 1,2"
    if not counts or min(counts) < 1:
        return f"--hosts {args.hosts!r}: give positive counts, e.g. 1,2"
    for name in comma_list(args.configs):
        uneven = [count for count in counts if CONFIGS[name].batch_size % count]
        if uneven:
            return f"--configs {name}: batch size {CONFIGS[name].batch_size} does not split over {uneven} hosts"
    why_not = cannot_create_namespaces()
    return f"--hosts measures between network namespaces, and {why_not}" if why_not else None


def host_command(index: int, addresses: list, args: argparse.Namespace, impl: str, config: str, out: Path) -> list:
    """torchrun on host ``index`` of ``addresses``, its rank running compare.benchmarks.distributed's rank_main."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        f"--nnodes={len(addresses)}",
        "--nproc-per-node=1",
        "--rdzv-backend=c10d",
        f"--rdzv-endpoint={addresses[0]}:{RENDEZVOUS_PORT}",
        "--rdzv-id=bench-hosts",
        f"--rdzv-conf=is_host={int(index == 0)}",
        f"--local-addr={addresses[index]}",
        *rank_args(impl, config, args, out),
    ]


def measure_hosts(impl: str, config: str, count: int, args: argparse.Namespace) -> HostsResult:
    """One launch of compare.benchmarks.distributed's ranks on ``count`` fresh hosts."""
    env = {
        **os.environ,
        "GLOO_SOCKET_IFNAME": INTERFACE,
        "BENCH_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": args.omp_wait_policy.upper(),
    }
    with tempfile.TemporaryDirectory() as directory, network_hosts(count) as hosts:
        out = Path(directory) / "rates.json"
        addresses = [host.address for host in hosts]
        agents = [
            host.popen(
                host_command(index, addresses, args, impl, config, out),
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for index, host in enumerate(hosts)
        ]
        errors = [agent.communicate()[1] for agent in agents]
        failed = [error for agent, error in zip(agents, errors, strict=True) if agent.returncode != 0]
        if failed:
            raise RuntimeError(f"a torchrun of {count} hosts failed:\n{failed[0][-2000:]}")
        measured = json.loads(out.read_text())
    return HostsResult(impl, config, count, measured["rates"], measured["all_reduce_ms"])


def measure_all_hosts(args: argparse.Namespace) -> list:
    """Every implementation, configuration and host count, ``--rounds`` times, interleaved."""
    results: dict[tuple, HostsResult] = {}
    counts = sorted({1, *(int(count) for count in comma_list(args.hosts))})
    for round_number in range(args.rounds):
        for config in comma_list(args.configs):
            for impl in comma_list(args.impls):
                for count in counts:
                    print(
                        f"round {round_number + 1}/{args.rounds}: {impl} {config}, {count} host(s) ...",
                        file=sys.stderr,
                        flush=True,
                    )
                    measured = measure_hosts(impl, config, count, args)
                    key = (impl, config, count)
                    if key in results:
                        results[key].repeat_rates += measured.repeat_rates
                    else:
                        results[key] = measured
    return list(results.values())


def hosts_table(results: list) -> str:
    """Markdown: throughput per host count, speed-up and efficiency against 1 host."""
    lines = [
        "| impl | config | hosts (1 process x 1 thread each) | chars/s (median) | chars/s (best) | "
        "speed-up vs 1 host | efficiency (speed-up / hosts) | one all-reduce |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        base = next(r for r in results if (r.impl, r.config, r.hosts) == (result.impl, result.config, 1))
        speedup = result.chars_per_sec / base.chars_per_sec
        several = result.hosts > 1
        efficiency = f"{speedup / result.hosts:.0%}" if several else "-"
        all_reduce = f"{result.all_reduce_ms:.1f} ms" if several else "-"
        lines.append(
            f"| {result.impl} | {result.config} | {result.hosts} | {result.chars_per_sec:,.0f} | "
            f"{result.best_chars_per_sec:,.0f} | {speedup:.2f} | {efficiency} | {all_reduce} |"
        )
    return "\n".join(lines)
