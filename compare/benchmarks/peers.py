"""Every cell against PyTorch's fused module, on 1 thread and on 2: ``python -m compare.bench --peers``.

    python -m compare.bench --peers                      # rnn, lstm, gru at seed and large; threads 1,2
    python -m compare.bench --peers --threads 1 --cells lstm --json peers.json

Three implementations of each cell, float32, on the same batches of the built-in corpus:
``manual`` (this project's NumPy BPTT), ``torch`` (its autograd twin, torchref) and ``fused``
(``nn.RNN``/``nn.LSTM``/``nn.GRU`` with an embedding and a linear readout:
compare.benchmarks.fused); for the vanilla cell a fourth, ``baseline``: the hand-written step
frozen as it was at f287690 (compare.benchmarks.baseline), the "before" of a speed-up, and a
fifth, ``products``: that step's matrix products alone (compare.benchmarks.products), the
ceiling of its FLOP rate. The repeats are interleaved (baseline, manual, products, torch, fused,
baseline, ...), so a noisy spell slows each alike; the median is reported, with manual / fused
and manual / baseline as ratios measured in the same run, and the other processes' share of the
CPUs over the run beside it.

The float32 n x n matmul peak (n = 2048, ``--peak-size``) is measured in the same run on 1
thread and on each ``--threads`` count: before the first cell and after each thread count's
configuration, the best of each counting (compare.benchmarks.flops.PeakLog). Every row's FLOP
rate counts 3 G H^2 + 3 V H multiply-adds a character (compare.benchmarks.flops, G gate
blocks) and is given as a share of the 1-thread peak and of its own thread count's peak.

What it prints: the peaks, the speed table and the FLOP-rate table. They are read from the JSON
document the bench stores, so that the printed tables and the stored results cannot disagree.
JSON of a row, beside what peer_row puts in it:

    "flops_per_char": int                       # 2 (3 G H^2 + 3 V H): compare.benchmarks.flops
    "gflops": {impl: float}                     # chars/s * flops_per_char / 1e9
    "pct_of_1_thread_peak": {impl: float}       # of the best 1-thread peak of the run
    "pct_of_own_peak": {impl: float}            # of the best peak on the row's thread count
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from compare.benchmarks.flops import PEAK_MATRIX_SIZE, LoadMonitor, PeakLog, flops_per_char
from compare.benchmarks.report import load_verdict, peak_json, sample_json, thread_words
from compare.benchmarks.timing import CLIP, INIT_SEED, LEARNING_RATE, BenchConfig, timed_batches
from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser, comma_list

PEER_IMPLS = ("baseline", "manual", "products", "torch", "fused")
VANILLA_ONLY = {"baseline": ("rnn",), "products": ("rnn",)}  # the frozen step and its products: the vanilla cell's
CELL_NAMES = ("rnn", "lstm", "gru")
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


# ----- what it prints -----------------------------------------------------------------------------


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


# ----- the measurement ----------------------------------------------------------------------------


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m compare.bench --peers", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(PEER_CONFIGS), help="comma-separated, from seed, large")
    parser.add_argument("--cells", default=",".join(CELL_NAMES), help="comma-separated, from rnn, lstm, gru")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each timed in turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per implementation; the median counts")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: per config)")
    parser.add_argument(
        "--peak-size",
        type=int,
        default=PEAK_MATRIX_SIZE,
        help="n of the n x n float32 matmul that measures the peak; a smaller one is quicker, but not the same peak",
    )
    parser.add_argument(
        "--flush-denormals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="flush denormal floats to zero (torch.set_flush_denormal) for every implementation alike, as "
        "python -m compare.bench does: float32 gradients and softmax outputs that underflow into denormals "
        "slow the large configuration several-fold, in whichever implementation meets them first",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    return parser


def impls_of(cell: str) -> tuple:
    """The implementations timed for ``cell``: the baseline and the products alone only where they exist."""
    return tuple(impl for impl in PEER_IMPLS if cell in VANILLA_ONLY.get(impl, (cell,)))


def make_peer_engine(impl: str, cell: str, params: dict, vocab_size: int, hidden_size: int) -> Any:
    from compare.benchmarks.baseline import BaselineEngine
    from compare.benchmarks.fused import FusedEngine
    from compare.benchmarks.products import ProductsEngine
    from compare.model.engines import make_engine

    if impl == "baseline":
        return BaselineEngine(params, LEARNING_RATE, CLIP)
    if impl == "products":
        return ProductsEngine(vocab_size, hidden_size, seed=INIT_SEED)
    if impl == "fused":
        return FusedEngine(cell, vocab_size, hidden_size, LEARNING_RATE, CLIP, seed=INIT_SEED)
    return make_engine(impl, params, LEARNING_RATE, CLIP, "float32", cell)


def time_steps(engine: Any, batches: list) -> float:
    start = time.perf_counter()
    for inputs, targets in batches:
        engine.train_step(inputs, targets)
    return time.perf_counter() - start


def measure_cell(config: BenchConfig, cell: str, tokens: Any, vocab_size: int, repeats: int, steps: int) -> dict:
    """{impl: median chars/s} for one cell and configuration, the repeats interleaved."""
    from compare.model.init import init_params

    params = init_params(vocab_size, config.hidden_size, INIT_SEED, cell)
    batches = timed_batches(tokens, config, steps + 2)
    engines = {}
    for impl in impls_of(cell):
        engines[impl] = make_peer_engine(impl, cell, params, vocab_size, config.hidden_size)
        engines[impl].reset_hidden(config.batch_size)
        time_steps(engines[impl], batches[:2])  # warm-up: allocations, first-call costs
    rates: dict = {impl: [] for impl in engines}
    for _ in range(repeats):
        for impl, engine in engines.items():
            rates[impl].append(steps * config.chars_per_step / time_steps(engine, batches[2:]))
    return {impl: statistics.median(values) for impl, values in rates.items()}


def measure(args: argparse.Namespace) -> dict:
    """Every row, with the matmul peaks measured before the first cell and after each thread count's config."""
    from tqdm import tqdm

    from compare.data.corpus import PYDOC_TOPICS, Vocab, builtin_corpus
    from compare.training.loop import set_threads

    text = builtin_corpus(PYDOC_TOPICS)  # the text the other speed tables were measured on
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    groups = [(threads, config) for threads in args.thread_counts for config in args.config_names]
    peaks = PeakLog(tuple(sorted({1, *args.thread_counts})), args.peak_size)
    total = len(groups) * len(args.cell_names) + (len(groups) + 1) * len(peaks.thread_counts)
    load = LoadMonitor().start()
    rows = []
    with tqdm(total=total, desc="bench peers", unit="run", disable=None) as bar:
        peaks.measure("before", tick=bar.update)
        for threads, config_name in groups:
            set_threads(threads)
            config = PEER_CONFIGS[config_name]
            for cell in args.cell_names:
                rates = measure_cell(config, cell, tokens, len(vocab), args.repeats, args.steps or config.steps)
                rows.append(peer_row(config, cell, threads, rates, len(vocab)))
                bar.update()
            peaks.measure(f"after {config_name} on {threads}", tick=bar.update)
    for row in rows:
        row.update(flop_rates(row, peaks))
    other_load = load.other_load_pct()
    return {
        "rows": rows,
        "other_load_pct": other_load,
        "clean": load_verdict(other_load)[0],
        "peak_size": args.peak_size,
        "flush_denormals": args.flush_denormals,
        "matmul_peaks": {str(threads): peak_json(peaks, threads) for threads in peaks.thread_counts},
        "matmul_peak_samples": [sample_json(sample) for sample in peaks.samples],
        "peak_exceeded": any(pct > 100 for row in rows for pct in row["pct_of_own_peak"].values()),
    }


def peer_row(config: BenchConfig, cell: str, threads: int, rates: dict, vocab_size: int) -> dict:
    """One (config, cell, threads) row: chars/s of each implementation and the ratios measured with them."""
    from compare.model.cells import manual_cell

    return {
        "config": config.name,
        "cell": cell,
        "threads": threads,
        "hidden_size": config.hidden_size,
        "batch_size": config.batch_size,
        "seq_length": config.seq_length,
        "vocab_size": vocab_size,
        "gates": manual_cell(cell).GATES,
        "chars_per_sec": rates,
        "manual_vs_fused": rates["manual"] / rates["fused"],
        "manual_vs_baseline": rates["manual"] / rates["baseline"] if "baseline" in rates else None,
    }


def parse_args(argv: list) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.config_names = comma_list(args.configs)
    args.cell_names = comma_list(args.cells)
    choices = (("--configs", args.config_names, PEER_CONFIGS), ("--cells", args.cell_names, CELL_NAMES))
    for flag, names, known in choices:
        unknown = [name for name in names if name not in known]
        if unknown or not names:
            parser.error(f"{flag}: unknown or empty {unknown or names!r}; choose from {', '.join(known)}")
    try:
        args.thread_counts = [int(count) for count in comma_list(args.threads)]
    except ValueError:
        parser.error(f"--threads: expected comma-separated positive counts, got {args.threads!r}")
    if not args.thread_counts or min(args.thread_counts) <= 0:
        parser.error(f"--threads: expected comma-separated positive counts, got {args.threads!r}")
    for flag, value in (("--repeats", args.repeats), ("--steps", args.steps), ("--peak-size", args.peak_size)):
        if value is not None and value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench --peers", peers_command, argv)


def peers_command(argv: list) -> int:
    from compare.benchmarks.denormals import set_flush_denormal

    args = parse_args(argv)
    set_flush_denormal(args.flush_denormals)  # this thread's floating-point mode and NumPy's BLAS threads'
    try:
        document = measure(args)
    finally:
        set_flush_denormal(False)  # the default IEEE mode again, for whatever this process runs next
    print(format_tables(document))
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        Path(args.json).write_text(json.dumps({"settings": settings, **document}, indent=1) + "\n")
    return 0
