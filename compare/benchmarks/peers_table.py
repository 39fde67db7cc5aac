"""What ``python -m compare.bench --peers`` prints: the peaks, the speed table and the FLOP-rate table.

Everything here reads the JSON document the bench stores (compare.benchmarks.peers), so that
the printed tables and the stored results cannot disagree. JSON of a row, beside what
compare.benchmarks.peers puts in it:

    "flops_per_char": int                       # 2 (3 G H^2 + 3 V H): compare.benchmarks.flops
    "gflops": {impl: float}                     # chars/s * flops_per_char / 1e9
    "pct_of_1_thread_peak": {impl: float}       # of the best 1-thread peak of the run
    "pct_of_own_peak": {impl: float}            # of the best peak on the row's thread count
"""

from __future__ import annotations

from compare.benchmarks.flops import PeakLog, flops_per_char
from compare.benchmarks.report import load_verdict, thread_words
from compare.benchmarks.timing import BenchConfig

PEER_CONFIGS = {
    "seed": BenchConfig("seed", hidden_size=100, batch_size=1, steps=100),
    "large": BenchConfig("large", hidden_size=512, batch_size=128, steps=2),
}
IMPL_COLUMNS = {
    "baseline": "baseline",
    "manual": "manual",
    "products": "products alone",
    "torch": "torch twin",
    "fused": "fused nn module",
}


def flop_rates(row: dict, peaks: PeakLog) -> dict:
    """The FLOP rate of each implementation in ``row`` and its share of the 1-thread and own-thread peaks."""
    per_char = flops_per_char(row["hidden_size"], row["vocab_size"], row["gates"])
    gflops = {impl: rate * per_char / 1e9 for impl, rate in row["chars_per_sec"].items()}
    one_thread, own = peaks.best(1).gflops, peaks.best(row["threads"]).gflops
    return {
        "flops_per_char": per_char,
        "gflops": gflops,
        "pct_of_1_thread_peak": {impl: 100 * rate / one_thread for impl, rate in gflops.items()},
        "pct_of_own_peak": {impl: 100 * rate / own for impl, rate in gflops.items()},
    }


def shape(row: dict) -> str:
    return f"H{row['hidden_size']} B{row['batch_size']} T{row['seq_length']}"


def cells(values: dict, template: str) -> str:
    """One table cell per implementation, blank where it did not run (the baseline of a gated cell)."""
    return " | ".join(template.format(values[impl]) if impl in values else "" for impl in IMPL_COLUMNS)


def ratio(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}x"


def speed_table(rows: list) -> str:
    header = " | ".join(IMPL_COLUMNS.values())
    lines = [
        f"| config | cell | threads | {header} | manual / fused | manual / baseline |",
        "|---|---|---:|" + "---:|" * (len(IMPL_COLUMNS) + 2),
    ]
    for row in rows:
        lines.append(
            f"| {shape(row)} | {row['cell']} | {row['threads']} | {cells(row['chars_per_sec'], '{:,.0f}')} "
            f"| {ratio(row['manual_vs_fused'])} | {ratio(row['manual_vs_baseline'])} |"
        )
    return "\n".join(lines)


def percent(values: dict, impl: str) -> str:
    return f"{values[impl]:.0f}%" if impl in values else ""


def flops_table(rows: list) -> str:
    header = " | ".join(f"{name} GFLOP/s" for name in IMPL_COLUMNS.values())
    shares = "manual % of 1-thread peak | products alone % of 1-thread peak | manual % of its threads' peak"
    lines = [
        f"| config | cell | threads | {header} | {shares} |",
        "|---|---|---:|" + "---:|" * (len(IMPL_COLUMNS) + 3),
    ]
    for row in rows:
        one_thread = row["pct_of_1_thread_peak"]
        lines.append(
            f"| {shape(row)} | {row['cell']} | {row['threads']} | {cells(row['gflops'], '{:.1f}')} "
            f"| {percent(one_thread, 'manual')} | {percent(one_thread, 'products')} "
            f"| {percent(row['pct_of_own_peak'], 'manual')} |"
        )
    return "\n".join(lines)


def peak_lines(document: dict) -> str:
    """The best peak of each thread count, then every measurement with where in the run it was taken."""
    size = document["peak_size"]
    best = []
    for threads, peak in document["matmul_peaks"].items():
        best.append(
            f"{thread_words(int(threads))} {peak['gflops']:.0f} GFLOP/s "
            f"(NumPy {peak['numpy_gflops']:.0f}, torch {peak['torch_gflops']:.0f}; best of {peak['measurements']})"
        )
    moments: dict = {}
    for sample in document["matmul_peak_samples"]:
        moments.setdefault(sample["when"], []).append(f"{thread_words(sample['threads'])} {sample['gflops']:.0f}")
    each = "; ".join(f"{when}: {', '.join(values)}" for when, values in moments.items())
    return (
        f"float32 {size}x{size} matmul peak, measured in this run before the first cell and after each "
        f"configuration on each thread count: {'; '.join(best)}\n"
        f"each measurement (GFLOP/s, the faster of NumPy and torch), by when it was taken: {each}"
    )


def format_tables(document: dict) -> str:
    rows = document["rows"]
    parts = [peak_lines(document), load_verdict(document["other_load_pct"])[1], "", speed_table(rows)]
    parts.append("")
    denormals = "flushed to zero" if document.get("flush_denormals", True) else "left as they are"
    parts.append(
        "chars/s, the median of the interleaved repeats; baseline: the f287690 vanilla step, frozen; products "
        "alone: the vanilla step's matrix products and nothing else, the ceiling of manual's rate; "
        f"float32, denormals {denormals} (--flush-denormals)."
    )
    parts.append("")
    parts.append(flops_table(rows))
    parts.append("")
    parts.append(
        "GFLOP/s count 3 G H^2 + 3 V H multiply-adds a character (G gate blocks: rnn 1, gru 3, lstm 4), the "
        "work the model needs; the fused modules' input matrix weight_ih adds 3 G H^2 more that is not counted."
    )
    if document["peak_exceeded"]:
        parts.append(
            "Warning: a rate above its thread count's peak: the peak was measured under load, "
            "so every % of peak here reads high."
        )
    return "\n".join(parts)
