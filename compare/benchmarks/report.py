"""The benchmark's results as Markdown tables and as the JSON interface.

JSON (a stable interface; further keys may be added, none of these removed or renamed):

    {"machine": {"cpu": str, "threads": int, "matmul_gflops": float, ...},
     "results": [{"config": "seed", "impl": "manual", "chars_per_sec": float,
                  "gflops": float, "pct_peak": float, ...}, ...],
     "scaling": [...], "memory": {...}}
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from compare.benchmarks.flops import MatmulPeak


@dataclass
class Machine:
    cpu: str
    threads: int
    peak: MatmulPeak
    omp_wait_policy: str
    flush_denormals: bool
    versions: dict = field(default_factory=dict)

    def as_json(self) -> dict:
        return {
            "cpu": self.cpu,
            "threads": self.threads,
            "matmul_gflops": self.peak.gflops,
            "numpy_matmul_gflops": self.peak.numpy_gflops,
            "torch_matmul_gflops": self.peak.torch_gflops,
            "omp_wait_policy": self.omp_wait_policy,
            "flush_denormals": self.flush_denormals,
            **self.versions,
        }

    def header(self) -> str:
        return (
            f"CPU: {self.cpu}; {self.threads} thread(s) for NumPy's BLAS and for torch; "
            f"float32 matmul peak {self.peak.gflops:.0f} GFLOP/s "
            f"(NumPy {self.peak.numpy_gflops:.0f}, torch {self.peak.torch_gflops:.0f}); "
            f"OMP_WAIT_POLICY={self.omp_wait_policy}; denormals flushed to zero: "
            f"{'yes' if self.flush_denormals else 'no'}"
        )


def pct_peak(measurement, machine: Machine) -> float:
    return 100.0 * measurement.gflops / machine.peak.gflops


def result_json(measurement, machine: Machine) -> dict:
    """One row of "results" (or of "scaling")."""
    config = measurement.config
    row = {
        "config": config.name,
        "impl": measurement.impl,
        "chars_per_sec": none_if_nan(measurement.chars_per_sec),
        "gflops": none_if_nan(measurement.gflops),
        "pct_peak": none_if_nan(pct_peak(measurement, machine)),
        "hidden_size": config.hidden_size,
        "batch_size": config.batch_size,
        "seq_length": config.seq_length,
        "vocab_size": measurement.vocab_size,
        "repeat_chars_per_sec": measurement.repeat_rates,
        "warmup_s": measurement.warmup_seconds,
    }
    if measurement.error:
        row["error"] = measurement.error
    return row


def none_if_nan(value: float):
    return None if math.isnan(value) else value


def speed_table(measurements: list, machine: Machine) -> str:
    """One row per configuration and implementation, with its speed relative to naive and torch."""
    lines = [
        "| config | H | B | T | impl | chars/s | GFLOP/s | % of peak | x naive | x torch | warm-up (s) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = {(m.config.name, m.impl): m for m in measurements}
    for m in measurements:
        config = m.config
        if m.error:
            lines.append(
                f"| {config.name} | {config.hidden_size} | {config.batch_size} | {config.seq_length} | "
                f"{m.impl} | failed: {m.error} | | | | | |"
            )
            continue
        lines.append(
            f"| {config.name} | {config.hidden_size} | {config.batch_size} | {config.seq_length} | {m.impl} | "
            f"{m.chars_per_sec:,.0f} | {m.gflops:.1f} | {pct_peak(m, machine):.1f} | "
            f"{ratio(m, by_key.get((config.name, 'naive')))} | {ratio(m, by_key.get((config.name, 'torch')))} | "
            f"{m.warmup_seconds:.1f} |"
        )
    return "\n".join(lines)


def ratio(measurement, reference) -> str:
    """``measurement`` speed over ``reference`` speed as '3.1x', or '' when there is no reference."""
    if reference is None or reference.error or not reference.repeat_rates:
        return ""
    return f"{measurement.chars_per_sec / reference.chars_per_sec:.2f}x"


def scaling_table(measurements: list, machine: Machine, sweep: str) -> str:
    """manual and torch side by side, one row per point of the ``sweep`` ('hidden' or 'batch')."""
    points = {}
    for m in measurements:
        if m.config.name.startswith(sweep + ":"):
            points.setdefault((m.config.hidden_size, m.config.batch_size), {})[m.impl] = m
    varying = "H" if sweep == "hidden" else "B"
    lines = [
        f"| {varying} | manual chars/s | torch chars/s | manual / torch | manual % of peak | torch % of peak |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for (hidden_size, batch_size), row in points.items():
        manual, torch = row.get("manual"), row.get("torch")
        value = hidden_size if sweep == "hidden" else batch_size
        lines.append(
            f"| {value} | {speed(manual)} | {speed(torch)} | {ratio(manual, torch) if manual else ''} | "
            f"{percent(manual, machine)} | {percent(torch, machine)} |"
        )
    return "\n".join(lines)


def speed(measurement) -> str:
    return "" if measurement is None or measurement.error else f"{measurement.chars_per_sec:,.0f}"


def percent(measurement, machine: Machine) -> str:
    return "" if measurement is None or measurement.error else f"{pct_peak(measurement, machine):.1f}"


def load_note(other_load_pct: float | None) -> str:
    """One line on how busy the rest of the machine was while the tables were measured."""
    if other_load_pct is None:
        return "(The load of other processes could not be read on this system.)"
    verdict = "quiet enough to trust" if other_load_pct < 5 else "busy: these numbers are disturbed, measure again"
    return f"Other processes used {other_load_pct:.1f}% of the CPUs while this ran ({verdict})."


def memory_json(report) -> dict:
    row = asdict(report)
    row["train_above_baseline_in_file_sizes"] = report.in_file_sizes(report.train_rss)
    row["encode_file_above_baseline_in_file_sizes"] = report.in_file_sizes(report.encode_file_rss)
    row["train_meets_target"] = report.train_meets_target
    return row
