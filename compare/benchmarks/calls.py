"""What one training step executes, counted: ``python -m compare.bench --calls``.

    python -m compare.bench --calls                       # baseline and manual, rnn lstm gru, H100 B1 T25
    python -m compare.bench --calls --cells rnn --json calls.json

At batch 1 a step is microseconds of arithmetic and the Python-level operations around it
are the cost. For the frozen f287690 vanilla step (``baseline``, compare.benchmarks.baseline:
the "before") and for ``manual`` with each cell, float32 on the built-in corpus: a few
warm-up steps, then one step counted by count_operations (C calls, Python calls,
operators; below, what each includes and what none does), then the time per
step, measured apart from the counting (the counters slow a step many times over): the
median of interleaved repeats, on the threads NumPy's BLAS was given (``--threads``).

The counter: C calls, Python calls and operators (CPython 3.11's hooks). Their number is the
measure of how much a rewrite saves. Three counts, all taken while ``count_operations(step)``
runs ``step()`` (the call of ``step`` itself is not counted; everything it runs, at any depth, is):

    C calls       every call, from Python code, of something not written in Python: the
                  profiler's 'c_call' events (built-in functions and methods: len, float,
                  np.empty, np.add.at, ndarray.sum, ...), plus the call sites that entered
                  neither a Python frame nor a 'c_call', counted from the CALL opcode
                  (ufuncs called by name: np.tanh, np.multiply; NumPy's array-function
                  dispatchers written in C: np.dot, np.vdot; classes written in C)
    Python calls  the profiler's 'call' events: every Python frame entered, called from
                  Python or from C (a dataclass's __init__, NumPy's functions written in
                  Python such as np.stack and np.clip, with everything they call counted
                  too), and every resumption of a generator
    operators     executed BINARY_OP (a + b, a += b, a @ b), BINARY_SUBSCR (x[t]),
                  STORE_SUBSCR (x[t] = y), DELETE_SUBSCR, COMPARE_OP (a > b) and
                  UNARY_NEGATIVE / UNARY_INVERT opcodes (sys.settrace with f_trace_opcodes)

Not counted: what C code does inside (a BLAS call, the loops of a ufunc, a C function that
calls another C function), calls and operators in the code that calls ``step``, and the cost
of anything. The operator opcodes cannot see their operands' types: a dict look-up
(``params["V"]``) or integer arithmetic (``t + 1``) counts as one operator, as an array
operation does. The counts depend on the path the step takes (the clip runs only on a
gradient with an entry out of range), so they are of one step, with its data.
"""

from __future__ import annotations

import argparse
import dis
import json
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

from compare.benchmarks.peers import CELL_NAMES, PEER_CONFIGS, make_peer_engine, time_steps
from compare.benchmarks.timing import INIT_SEED, BenchConfig, timed_batches
from compare.cli.errors import CliError, run_cli
from compare.cli.parser import CommandParser, comma_list

SEED = PEER_CONFIGS["seed"]


# ----- the counter ---------------------------------------------------------------------------------

COUNTED_PYTHON = (3, 11)  # the opcodes below are 3.11's; another version's bytecode is not counted
OPERATOR_NAMES = (
    "BINARY_OP",
    "BINARY_SUBSCR",
    "STORE_SUBSCR",
    "DELETE_SUBSCR",
    "COMPARE_OP",
    "UNARY_NEGATIVE",
    "UNARY_INVERT",
)
# .get: the module imports on any version; count_operations refuses to count on another than 3.11
CALL_OPCODES = frozenset(dis.opmap.get(name, -1) for name in ("CALL", "CALL_FUNCTION_EX"))
OPERATOR_OPCODES = frozenset(dis.opmap.get(name, -1) for name in OPERATOR_NAMES)
EXTENDED_ARG = dis.opmap["EXTENDED_ARG"]


class UncountedPython(CliError):
    """The counts are defined on CPython 3.11's bytecode and profiler events."""


@dataclass
class OperationCounts:
    """What one call executed (see the module doc for what each count includes)."""

    c_functions: int = 0  # 'c_call' events: built-in functions and methods
    c_callables: int = 0  # call sites that entered no Python frame and no 'c_call': ufuncs, C dispatchers, C classes
    python_calls: int = 0  # 'call' events: Python frames entered, generators resumed
    operators: int = 0  # BINARY_OP, BINARY_SUBSCR, STORE_SUBSCR, ... opcodes executed

    @property
    def c_calls(self) -> int:
        return self.c_functions + self.c_callables

    @property
    def operations(self) -> int:
        return self.c_calls + self.python_calls + self.operators


@dataclass
class Counter:
    """The profile and trace functions of one count, and what they have seen so far."""

    counts: OperationCounts = field(default_factory=OperationCounts)
    depth: int = 0  # Python frames open below the counted call; 0: outside it
    call_pending: bool = False  # a CALL opcode ran and neither a frame nor a 'c_call' has followed yet
    opcodes: dict = field(default_factory=dict)  # code object -> its co_code, read once

    def profile(self, frame: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if self.depth > 0:
                self.counts.python_calls += 1
            self.depth += 1
            self.call_pending = False
        elif event == "return":
            self.depth -= 1
        elif event == "c_call" and self.depth > 0:
            self.counts.c_functions += 1
            self.call_pending = False

    def trace(self, frame: FrameType, event: str, arg: Any) -> Callable | None:
        if event == "call":
            frame.f_trace_lines = False
            frame.f_trace_opcodes = True
        elif event == "opcode":
            self.opcode(frame)
        return self.trace

    def opcode(self, frame: FrameType) -> None:
        """One opcode, about to execute; a CALL before it that entered nothing traced was a C callable."""
        if self.call_pending:
            self.counts.c_callables += 1
            self.call_pending = False
        code = self.code_bytes(frame.f_code)
        offset = frame.f_lasti
        while code[offset] == EXTENDED_ARG:  # the instruction it extends runs without an event of its own
            offset += 2
        if code[offset] in OPERATOR_OPCODES:
            self.counts.operators += 1
        elif code[offset] in CALL_OPCODES:
            self.call_pending = True

    def code_bytes(self, code: CodeType) -> bytes:
        if code not in self.opcodes:
            self.opcodes[code] = code.co_code
        return self.opcodes[code]


def count_operations(step: Callable[[], object]) -> OperationCounts:
    """Run ``step()`` once under the profiler and the opcode tracer; what it executed (not the call itself)."""
    if sys.version_info[:2] != COUNTED_PYTHON or sys.implementation.name != "cpython":
        raise UncountedPython(f"the operation counts are defined for CPython 3.11, not {sys.version.split()[0]}")
    counter = Counter()
    previous_profile, previous_trace = sys.getprofile(), sys.gettrace()
    sys.setprofile(counter.profile)  # the 'c_call' of settrace below comes at depth 0: not counted
    sys.settrace(counter.trace)
    try:
        step()
    finally:
        sys.settrace(previous_trace)
        sys.setprofile(previous_profile)
    return counter.counts


# ----- the benchmark -------------------------------------------------------------------------------


def build_parser() -> CommandParser:
    parser = CommandParser(prog="python -m compare.bench --calls", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--cells", default=",".join(CELL_NAMES), help="comma-separated manual cells, from rnn, lstm, gru"
    )
    parser.add_argument(
        "--hidden-size", type=int, default=SEED.hidden_size, help=f"H (default: {SEED.hidden_size}, the seed config's)"
    )
    parser.add_argument(
        "--batch-size", type=int, default=SEED.batch_size, help=f"B (default: {SEED.batch_size}, the seed config's)"
    )
    parser.add_argument("--warmup", type=int, default=3, help="untimed, uncounted steps before the count")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats per row, interleaved; the median counts")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch")
    parser.add_argument("--json", metavar="PATH", help="also write the results to PATH as JSON")
    return parser


def parse_args(argv: list) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.cell_names = comma_list(args.cells)
    unknown = [name for name in args.cell_names if name not in CELL_NAMES]
    if unknown or not args.cell_names:
        parser.error(f"--cells: unknown or empty {unknown or args.cells!r}; choose from {', '.join(CELL_NAMES)}")
    for flag, value, least in (
        ("--hidden-size", args.hidden_size, 1),
        ("--batch-size", args.batch_size, 1),
        ("--warmup", args.warmup, 0),
        ("--steps", args.steps, 1),
        ("--repeats", args.repeats, 1),
        ("--threads", args.threads, 1),
    ):
        if value < least:
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: the directory {Path(args.json).resolve().parent} does not exist")
    return args


def planned_rows(cell_names: list) -> list:
    """(impl, cell) of every row: the baseline first (before), then manual for each cell (after)."""
    return [("baseline", "rnn"), *(("manual", cell) for cell in cell_names)]


def counted_row(impl: str, engine: Any, batch: tuple) -> dict:
    inputs, targets = batch
    counts: OperationCounts = count_operations(lambda: engine.train_step(inputs, targets))
    return {
        "c_calls": counts.c_calls,
        "c_functions": counts.c_functions,
        "c_callables": counts.c_callables,
        "python_calls": counts.python_calls,
        "operators": counts.operators,
        "operations": counts.operations,
    }


def measure(args: argparse.Namespace) -> dict:
    from tqdm import tqdm

    from compare.data.corpus import PYDOC_TOPICS, Vocab, builtin_corpus
    from compare.model.init import init_params
    from compare.training.loop import set_threads

    set_threads(args.threads)
    text = builtin_corpus(PYDOC_TOPICS)
    vocab = Vocab.from_text(text)
    config = BenchConfig("calls", args.hidden_size, args.batch_size, steps=args.steps)
    batches = timed_batches(vocab.encode(text), config, args.warmup + 1 + args.steps)
    warmup, counted, timed = batches[: args.warmup], batches[args.warmup], batches[args.warmup + 1 :]
    rows, engines = [], []
    for impl, cell in tqdm(planned_rows(args.cell_names), desc="bench calls", unit="row", disable=None):
        params = init_params(len(vocab), config.hidden_size, INIT_SEED, cell)
        engine = make_peer_engine(impl, cell, params, len(vocab), config.hidden_size)
        engine.reset_hidden(config.batch_size)
        time_steps(engine, warmup)
        rows.append({"impl": impl, "cell": cell, **counted_row(impl, engine, counted)})
        engines.append(engine)
    seconds: list = [[] for _ in engines]
    for _ in range(args.repeats):
        for index, engine in enumerate(engines):
            seconds[index].append(time_steps(engine, timed) / len(timed))
    for row, per_step in zip(rows, seconds, strict=True):
        row["us_per_step"] = 1e6 * statistics.median(per_step)
    shape = {"hidden_size": config.hidden_size, "batch_size": config.batch_size, "seq_length": config.seq_length}
    return {"rows": rows, **shape, "vocab_size": len(vocab), "warmup": args.warmup, "threads": args.threads}


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def format_table(document: dict) -> str:
    lines = [
        "| impl | cell | C calls | Python calls | operators | operations per step | µs per step |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in document["rows"]:
        lines.append(
            f"| {row['impl']} | {row['cell']} | {row['c_calls']:,} | {row['python_calls']:,} | {row['operators']:,} "
            f"| {row['operations']:,} | {row['us_per_step']:,.0f} |"
        )
    lines.append("")
    lines.append(
        f"One float32 step at H{document['hidden_size']} B{document['batch_size']} T{document['seq_length']} "
        f"(V {document['vocab_size']}), counted after {plural(document['warmup'], 'warm-up step')}; "
        "baseline: the f287690 vanilla step, frozen. "
        "C calls: built-in functions and methods, ufuncs and NumPy's C dispatchers called by name; "
        "Python calls: frames entered (NumPy's Python-level functions included); "
        "operators: executed operator and subscript opcodes, on arrays and on Python objects alike "
        "(compare/benchmarks/calls.py). "
        f"Time: the median of interleaved repeats without the counters, on {plural(document['threads'], 'thread')}."
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench --calls", calls_command, argv)


def calls_command(argv: list) -> int:
    args = parse_args(argv)
    document = measure(args)
    print(format_table(document))
    if args.json:
        settings = {key: value for key, value in vars(args).items() if key != "json"}
        Path(args.json).write_text(json.dumps({"settings": settings, **document}, indent=1) + "\n")
    return 0
