"""Training speed of every cell in both implementations, at about equal parameter counts.

    python -m compare.bench_cells                 # rnn H128, lstm H56, gru H68 (~42k parameters each)
    python -m compare.bench --cells               # the same, from the main benchmark
    python -m compare.bench_cells --cell compare.examples.mgu --hidden-size 80   # a cell of your own (docs/cells.md)

The sizes are those of the README's "RNN, LSTM or GRU?" table; the batch shape is its
training run's (B 4, T 50), float32, on the built-in corpus, from the shared initializer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser
from compare.data.corpus import PYDOC_TOPICS, StreamBatches, Vocab, builtin_corpus
from compare.model.cells import CELL_HELP, cell_label, cell_problem
from compare.model.init import SIZE_LIMITS, init_params, param_shapes, size_problem

if TYPE_CHECKING:
    from compare.model.engines import Engine

EQUAL_SIZE_CELLS = {"rnn": 128, "lstm": 56, "gru": 68}  # hidden sizes giving ~42k parameters with V = 103


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="python -m compare.bench_cells", description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=4, help="B, streams per batch")
    parser.add_argument("--seq-length", type=int, default=50, help="T, characters per chunk")
    parser.add_argument("--num-layers", type=int, default=1, help="stacked layers")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="repeats; the median is reported")
    parser.add_argument("--threads", type=int, default=None, help="threads for NumPy's BLAS and torch alike")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    parser.add_argument(
        "--cell", action="append", metavar="CELL", help=f"time this cell instead, repeatable; {CELL_HELP}"
    )
    parser.add_argument(
        "--hidden-size", type=int, default=64, metavar="H", help="H of a --cell that is not built in (default: 64)"
    )
    return parser


def cells_to_time(args: argparse.Namespace) -> dict[str, int]:
    """--cell value -> hidden size: the built-ins at equal size, or the --cell values asked for."""
    if not args.cell:
        return dict(EQUAL_SIZE_CELLS)
    return {cell: EQUAL_SIZE_CELLS.get(cell, args.hidden_size) for cell in args.cell}


def chars_per_sec(engine: Engine, batches: list, repeats: int) -> float:
    """Median characters per second over ``repeats`` passes over ``batches`` (after one warm-up step)."""
    engine.reset_hidden(batches[0][0].shape[0])
    engine.train_step(*batches[0])
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for inputs, targets in batches:
            engine.train_step(inputs, targets)
        rates.append(sum(inputs.size for inputs, _ in batches) / (time.perf_counter() - start))
    return statistics.median(rates)


def measure(args: argparse.Namespace) -> list:
    from compare.model.engines import make_engine
    from compare.training.loop import set_threads

    set_threads(args.threads)
    text = builtin_corpus(PYDOC_TOPICS)  # the text the documented speeds were measured on
    vocab = Vocab.from_text(text)
    stream = StreamBatches(vocab.encode(text), args.batch_size, args.seq_length)
    batches = [stream.get_batch(index) for index in range(args.steps)]
    results = []
    for cell, hidden_size in cells_to_time(args).items():
        params = init_params(len(vocab), hidden_size, 0, cell, args.num_layers)
        count = sum(
            int(np.prod(shape)) for shape in param_shapes(len(vocab), hidden_size, cell, args.num_layers).values()
        )
        for impl in ("manual", "torch"):
            engine = make_engine(impl, params, lr=0.05, clip=5.0, dtype="float32", cell=cell)
            results.append(
                {
                    "cell": cell_label(cell),
                    "hidden_size": hidden_size,
                    "parameters": count,
                    "impl": impl,
                    "chars_per_sec": chars_per_sec(engine, batches, args.repeats),
                }
            )
    return results


def format_table(results: list) -> str:
    rows = ["| cell | hidden size | parameters | impl | chars/s |", "|---|---:|---:|---|---:|"]
    rows += [
        f"| {r['cell']} | {r['hidden_size']} | {r['parameters']:,} | {r['impl']} | {r['chars_per_sec']:,.0f} |"
        for r in results
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench_cells", cells_command, argv)


def cells_command(argv: list) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "seq_length", "num_layers", "steps", "repeats", "hidden_size"):
        if getattr(args, name) <= 0:
            build_parser().error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    problem = size_problem({name: getattr(args, name) for name in SIZE_LIMITS})
    if problem:
        build_parser().error(problem)
    for cell in args.cell or []:
        problem = cell_problem(cell)
        if problem:
            build_parser().error(problem)
    results = measure(args)
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"settings": vars(args), "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
