"""Every cell against PyTorch's fused module, on 1 thread and on 2: ``python -m compare.bench --peers``.

    python -m compare.bench --peers                      # rnn, lstm, gru at seed and large; threads 1,2
    python -m compare.bench --peers --threads 1 --cells lstm --json peers.json

Three implementations of each cell, float32, on the same batches of the built-in corpus:
``manual`` (this project's NumPy BPTT), ``torch`` (its autograd twin, torchref) and ``fused``
(``nn.RNN``/``nn.LSTM``/``nn.GRU`` with an embedding and a linear readout:
compare.benchmarks.fused). The repeats are interleaved (manual, torch, fused, manual, ...), so a
noisy spell slows each alike; the median is reported, with manual / fused as a ratio measured in
the same run, and the other processes' share of the CPUs over the run beside it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from compare.benchmarks.flops import LoadMonitor
from compare.benchmarks.timing import CLIP, INIT_SEED, LEARNING_RATE, BenchConfig, timed_batches
from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser, comma_list

PEER_CONFIGS = {
    "seed": BenchConfig("seed", hidden_size=100, batch_size=1, steps=100),
    "large": BenchConfig("large", hidden_size=512, batch_size=128, steps=2),
}
PEER_IMPLS = ("manual", "torch", "fused")
CELL_NAMES = ("rnn", "lstm", "gru")


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m compare.bench --peers", description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(PEER_CONFIGS), help="comma-separated, from seed, large")
    parser.add_argument("--cells", default=",".join(CELL_NAMES), help="comma-separated, from rnn, lstm, gru")
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts, each timed in turn")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per implementation; the median counts")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per repeat (default: per config)")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    return parser


def make_peer_engine(impl: str, cell: str, params: dict, vocab_size: int, hidden_size: int) -> Any:
    from compare.benchmarks.fused import FusedEngine
    from compare.model.engines import make_engine

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
    for impl in PEER_IMPLS:
        engines[impl] = make_peer_engine(impl, cell, params, vocab_size, config.hidden_size)
        engines[impl].reset_hidden(config.batch_size)
        time_steps(engines[impl], batches[:2])  # warm-up: allocations, first-call costs
    rates: dict = {impl: [] for impl in PEER_IMPLS}
    for _ in range(repeats):
        for impl, engine in engines.items():
            rates[impl].append(steps * config.chars_per_step / time_steps(engine, batches[2:]))
    return {impl: statistics.median(values) for impl, values in rates.items()}


def measure(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from compare.data.corpus import PYDOC_TOPICS, Vocab, builtin_corpus
    from compare.training.loop import set_threads

    text = builtin_corpus(PYDOC_TOPICS)  # the text the other speed tables were measured on
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text)
    plan = [(t, c, cell) for t in args.thread_counts for c in args.config_names for cell in args.cell_names]
    load = LoadMonitor().start()
    rows = []
    for threads, config_name, cell in tqdm(plan, desc="bench peers", unit="cell", disable=None):
        set_threads(threads)
        config = PEER_CONFIGS[config_name]
        steps = args.steps or config.steps
        rates = measure_cell(config, cell, tokens, len(vocab), args.repeats, steps)
        rows.append({"config": config_name, "cell": cell, "threads": threads, "chars_per_sec": rates})
        rows[-1]["manual_vs_fused"] = rates["manual"] / rates["fused"]
    return {"rows": rows, "other_load_pct": load.other_load_pct()}


def format_table(document: dict) -> str:
    lines = [
        "| config | cell | threads | manual | torch twin | fused nn module | manual / fused |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in document["rows"]:
        config = PEER_CONFIGS[row["config"]]
        shape = f"H{config.hidden_size} B{config.batch_size} T{config.seq_length}"
        rates = row["chars_per_sec"]
        lines.append(
            f"| {shape} | {row['cell']} | {row['threads']} | {rates['manual']:,.0f} | {rates['torch']:,.0f} "
            f"| {rates['fused']:,.0f} | {row['manual_vs_fused']:.2f}x |"
        )
    load = document["other_load_pct"]
    lines.append("")
    lines.append(
        "chars/s, the median of the interleaved repeats; other processes used "
        + (f"{load:.0f}% of the CPUs meanwhile." if load is not None else "an unknown share of the CPUs.")
    )
    return "\n".join(lines)


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
    for flag, value in (("--repeats", args.repeats), ("--steps", args.steps)):
        if value is not None and value <= 0:
            parser.error(f"{flag} must be positive, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench --peers", peers_command, argv)


def peers_command(argv: list) -> int:
    args = parse_args(argv)
    document = measure(args)
    print(format_table(document))
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        Path(args.json).write_text(json.dumps({"settings": settings, **document}, indent=1) + "\n")
    return 0
