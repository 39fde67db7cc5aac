"""The benchmark's results as Markdown tables and as the JSON interface.

JSON (a stable interface; further keys may be added, none of these removed or renamed):

    {"machine": {"cpu": str, "threads": int,
                 "matmul_gflops": float,          # the peak "% of peak" is against: best, on "threads" threads
                 "peak_threads": int, "matmul_peaks": {"1": {"gflops": float, ...}, "2": {...}},
                 "matmul_peak_samples": [{"when": "before seed", "threads": 1, "numpy_gflops": float, ...}],
                 "peak_exceeded": bool,           # some rate beat the peak: it was measured under load
                 "other_load_pct": float | None, "clean": bool, ...},
     "results": [{"config": "seed", "impl": "manual", "chars_per_sec": float, "gflops": float,
                  "pct_peak": float, "x_naive": float | None, "x_torch": float | None, ...}, ...],
     "scaling": [...], "memory": {...}}

``x_naive`` and ``x_torch`` are the row's speed over that implementation's, measured in the
same run with interleaved repeats (``compare.benchmarks.timing``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from compare.benchmarks.flops import CLEAN_LOAD_PCT, MatmulPeak, PeakLog

if TYPE_CHECKING:
    from compare.benchmarks.memory import MemoryReport
    from compare.benchmarks.timing import Measurement


@dataclass
class Machine:
    cpu: str
    threads: int
    peaks: PeakLog
    omp_wait_policy: str
    flush_denormals: bool
    versions: dict = field(default_factory=dict)

    @property
    def peak(self) -> MatmulPeak:
        """The peak every "% of peak" is against: the best measurement on the benchmark's thread count."""
        return self.peaks.best(self.threads)

    def as_json(self) -> dict:
        """The "machine" object; its peak fields are None when no peak was measured (a memory-only run)."""
        peak = self.peak if self.peaks.count(self.threads) else None
        measured_counts = [threads for threads in self.peaks.thread_counts if self.peaks.count(threads)]
        return {
            "cpu": self.cpu,
            "threads": self.threads,
            "matmul_gflops": peak.gflops if peak else None,
            "numpy_matmul_gflops": peak.numpy_gflops if peak else None,
            "torch_matmul_gflops": peak.torch_gflops if peak else None,
            "peak_threads": self.threads,
            "matmul_peaks": {str(threads): peak_json(self.peaks, threads) for threads in measured_counts},
            "matmul_peak_samples": [sample_json(sample) for sample in self.peaks.samples],
            "omp_wait_policy": self.omp_wait_policy,
            "flush_denormals": self.flush_denormals,
            **self.versions,
        }

    def header(self) -> str:
        return (
            f"CPU: {self.cpu}; {self.threads} thread(s) for NumPy's BLAS and for torch; "
            f"OMP_WAIT_POLICY={self.omp_wait_policy}; denormals flushed to zero: "
            f"{'yes' if self.flush_denormals else 'no'}"
        )

    def peak_lines(self) -> str:
        """Every thread count's best peak, and which one the tables' percentages are of."""
        counts = sorted({self.peaks.count(threads) for threads in self.peaks.thread_counts})
        peaks = []
        for threads in self.peaks.thread_counts:
            best = self.peaks.best(threads)
            peaks.append(
                f"{thread_words(threads)} {best.gflops:.0f} GFLOP/s "
                f"(NumPy {best.numpy_gflops:.0f}, torch {best.torch_gflops:.0f})"
            )
        return (
            f"float32 matmul peak, best of {'/'.join(map(str, counts))} measured before, between and after the "
            f"configurations: {'; '.join(peaks)}\n"
            f"% of peak below: of the {self.threads}-thread peak, {self.peak.gflops:.0f} GFLOP/s"
        )

    def peak_column(self) -> str:
        return f"% of {self.threads}-thread peak"


def thread_words(threads: int) -> str:
    return f"{threads} thread" + ("" if threads == 1 else "s")


def peak_json(peaks: PeakLog, threads: int) -> dict:
    best = peaks.best(threads)
    return {
        "gflops": best.gflops,
        "numpy_gflops": best.numpy_gflops,
        "torch_gflops": best.torch_gflops,
        "measurements": peaks.count(threads),
    }


def sample_json(sample: MatmulPeak) -> dict:
    """One measurement of the peak: where in the run, on how many threads, and each library's rate."""
    return {
        "when": sample.when,
        "threads": sample.threads,
        "gflops": sample.gflops,
        "numpy_gflops": sample.numpy_gflops,
        "torch_gflops": sample.torch_gflops,
    }


def pct_peak(measurement: Measurement, machine: Machine) -> float:
    return 100.0 * measurement.gflops / machine.peak.gflops


def result_json(measurement: Measurement, machine: Machine, by_key: dict) -> dict:
    """One row of "results" (or of "scaling"); ``by_key`` maps (config, impl) to the run's measurements."""
    config = measurement.config
    row = {
        "config": config.name,
        "impl": measurement.impl,
        "chars_per_sec": none_if_nan(measurement.chars_per_sec),
        "gflops": none_if_nan(measurement.gflops),
        "pct_peak": none_if_nan(pct_peak(measurement, machine)),
        "x_naive": speed_ratio(measurement, by_key.get((config.name, "naive"))),
        "x_torch": speed_ratio(measurement, by_key.get((config.name, "torch"))),
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


def none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


def by_config_and_impl(measurements: list) -> dict:
    return {(m.config.name, m.impl): m for m in measurements}


def speed_ratio(measurement: Measurement | None, reference: Measurement | None) -> float | None:
    """``measurement`` speed over ``reference`` speed, or None when either did not run."""
    if measurement is None or reference is None or measurement.error or reference.error:
        return None
    if not (measurement.repeat_rates and reference.repeat_rates):
        return None
    return measurement.chars_per_sec / reference.chars_per_sec


def ratio(measurement: Measurement | None, reference: Measurement | None) -> str:
    """``measurement`` speed over ``reference`` speed as '3.10x', or '' when there is no reference."""
    value = speed_ratio(measurement, reference)
    return "" if value is None else f"{value:.2f}x"


def speed_table(measurements: list, machine: Machine) -> str:
    """One row per configuration and implementation, with its speed relative to naive and torch."""
    column = machine.peak_column()
    lines = [
        f"| config | H | B | T | impl | chars/s | GFLOP/s | {column} | x naive | x torch | warm-up (s) |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    by_key = by_config_and_impl(measurements)
    for m in measurements:
        config = m.config
        shape = f"| {config.name} | {config.hidden_size} | {config.batch_size} | {config.seq_length} | {m.impl} |"
        if m.error:
            lines.append(f"{shape} failed: {m.error} | | | | | |")
            continue
        lines.append(
            f"{shape} {m.chars_per_sec:,.0f} | {m.gflops:.1f} | {pct_peak(m, machine):.1f} | "
            f"{ratio(m, by_key.get((config.name, 'naive')))} | {ratio(m, by_key.get((config.name, 'torch')))} | "
            f"{m.warmup_seconds:.1f} |"
        )
    return "\n".join(lines)


def scaling_table(measurements: list, machine: Machine, sweep: str) -> str:
    """manual and torch side by side, one row per point of the ``sweep`` ('hidden' or 'batch')."""
    points: dict[tuple[int, int], dict] = {}
    for m in measurements:
        if m.config.name.startswith(sweep + ":"):
            points.setdefault((m.config.hidden_size, m.config.batch_size), {})[m.impl] = m
    varying = "H" if sweep == "hidden" else "B"
    column = machine.peak_column()
    lines = [
        f"| {varying} | manual chars/s | torch chars/s | manual / torch | manual {column} | torch {column} |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for (hidden_size, batch_size), row in points.items():
        manual, torch = row.get("manual"), row.get("torch")
        value = hidden_size if sweep == "hidden" else batch_size
        lines.append(
            f"| {value} | {speed(manual)} | {speed(torch)} | {ratio(manual, torch)} | "
            f"{percent(manual, machine)} | {percent(torch, machine)} |"
        )
    return "\n".join(lines)


def speed(measurement: Measurement | None) -> str:
    return "" if measurement is None or measurement.error else f"{measurement.chars_per_sec:,.0f}"


def percent(measurement: Measurement | None, machine: Machine) -> str:
    return "" if measurement is None or measurement.error else f"{pct_peak(measurement, machine):.1f}"


def above_peak(measurements: list, machine: Machine) -> list:
    """The measurements whose rate beats the best measured peak, fastest first."""
    ran = [m for m in measurements if not m.error and m.repeat_rates]
    return sorted((m for m in ran if pct_peak(m, machine) > 100.0), key=lambda m: -m.gflops)


def peak_warning(measurements: list, machine: Machine) -> str | None:
    """One line when some rate beats the peak (a peak measured under load is too low), else None."""
    beaten = above_peak(measurements, machine)
    if not beaten:
        return None
    fastest = beaten[0]
    return (
        f"Warning: {fastest.impl} at {fastest.config.name} ran at {pct_peak(fastest, machine):.0f}% of the "
        f"{machine.threads}-thread peak: the peak was measured under load, so every % of peak here reads high."
    )


def load_verdict(other_load_pct: float | None) -> tuple:
    """(clean, one line): a run is clean only when other processes used at most CLEAN_LOAD_PCT of the CPUs."""
    if other_load_pct is None:
        return False, "NOT a clean run: the load of other processes could not be read; ratios are indicative only"
    if other_load_pct <= CLEAN_LOAD_PCT:
        return True, f"clean run (other processes used {other_load_pct:.1f}% of the CPUs)"
    return False, (
        f"NOT a clean run: other processes used {other_load_pct:.1f}% of the CPUs (> {CLEAN_LOAD_PCT:.0f}%); "
        "ratios are indicative only"
    )


def memory_json(reports: list[MemoryReport]) -> list[dict]:
    """One object per measured file."""
    return [memory_row(report) for report in reports]


def memory_row(report: MemoryReport) -> dict:
    row = asdict(report)
    row["train_budget_bytes"] = report.train_budget
    row["train_above_baseline_in_file_sizes"] = report.in_file_sizes(report.train_rss)
    row["encode_file_above_baseline_in_file_sizes"] = report.in_file_sizes(report.encode_file_rss)
    row["train_meets_target"] = report.train_meets_target
    return row
