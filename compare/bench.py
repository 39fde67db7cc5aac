"""Speed of the implementations side by side, and the memory of training on a large file.

    python -m compare.bench                                   # seed, mid, large, then the scaling sweeps
    python -m compare.bench --configs seed --impls naive,manual --json speed.json
    python -m compare.bench --memory --no-speed --no-scaling  # compare.train on 100 MB, ASCII and multibyte
    python -m compare.bench --demo --checkpoint runs/quickstart  # the demo server under 200 hammering clients
    python -m compare.bench --rtrl                            # BPTT, RTRL, reverse and forward autograd as H grows
    python -m compare.bench --optimizers --out optimizers.png  # each optimizer trained side by side

Implementations (``--impls``):

* ``naive``: a per-character loop in the style of min-char-rnn (``compare.benchmarks.naive``);
* ``manual``: this project's NumPy BPTT and AdaGrad (``manual``);
* ``torch``: the same model in PyTorch, autograd, eager (``torchref``);
* ``torch-compiled``: that model's forward and backward under ``torch.compile``.

Configurations (``--configs``), float32, seq_length 25 throughout: ``seed`` (hidden 100,
batch 1, as in min-char-rnn), ``mid`` (hidden 256, batch 32), ``large`` (hidden 512, batch 128).

Everything runs in this one process, one implementation after another (their repeats
interleaved), with the same number of threads in NumPy's BLAS and in torch, from the same
initial weights on the same batches. Speed is characters per second, the median of the
repeats after a few untimed warm-up steps; its FLOP rate counts the multiply-adds of
``compare.benchmarks.flops`` and is compared with the machine's own float32 matmul peak on the
same number of threads: measured before, between and after the configurations, on 1 thread and on
every core, the best of each counting. A rate above that peak is flagged (the peak was measured
under load), and a run in which other processes took more than 10% of the CPUs is not called clean.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from compare.benchmarks.flops import PEAK_MATRIX_SIZE, available_cores
from compare.benchmarks.memory import MB, TARGET_CONSTANT, TARGET_RATIO, TEXT_KINDS
from compare.benchmarks.suite import BenchSettings, run
from compare.benchmarks.timing import CONFIGS, IMPLS, RNN_ONLY_IMPLS, Timer
from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser, comma_list
from compare.model.cells import CELL_HELP, cell_problem, record_name
from compare.model.init import memory_problem

OMP_POLICIES = ("passive", "active", "unset")


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m compare.bench",
        description="Time the naive, manual, torch and torch-compiled implementations side by side, "
        "and measure the memory of compare.train on a large file.",
    )
    add_what_flags(parser.add_argument_group("what to measure"))
    add_how_flags(parser.add_argument_group("how to measure"))
    out = parser.add_argument_group("output")
    out.add_argument("--json", metavar="PATH", default=None, help="also write the results to PATH as JSON")
    out.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=True, help="show a progress bar on stderr"
    )
    return parser


def add_what_flags(what: argparse._ArgumentGroup) -> None:
    what.add_argument(
        "--distributed",
        action="store_true",
        help="instead: throughput with 1 and 2 processes (python -m compare.bench_distributed)",
    )
    what.add_argument(
        "--peers",
        action="store_true",
        help="instead: every cell in manual, torch and PyTorch's fused nn module, on 1 and 2 threads "
        "(python -m compare.bench --peers --help)",
    )
    what.add_argument(
        "--calls",
        action="store_true",
        help="instead: the C calls, Python calls and operators one seed-config training step executes, "
        "for the frozen f287690 baseline and manual (python -m compare.bench --calls --help)",
    )
    what.add_argument(
        "--demo",
        action="store_true",
        help="instead: the demo server's short requests (the page, the info) while 200 clients hammer "
        "POST /api/generate (python -m compare.bench --demo --help)",
    )
    what.add_argument(
        "--cells",
        action="store_true",
        help="instead: rnn, lstm and gru at about equal parameter counts, or the cells given with --cell "
        "(python -m compare.bench_cells)",
    )
    what.add_argument(
        "--cell",
        default="rnn",
        metavar="CELL",
        help=f"the cell the speed and scaling tables time in manual and torch (naive and torch-compiled: rnn only; "
        f"default: rnn); {CELL_HELP}",
    )
    what.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated configurations to time, from {', '.join(CONFIGS)}",
    )
    what.add_argument(
        "--impls", default=",".join(IMPLS), help=f"comma-separated implementations to time, from {', '.join(IMPLS)}"
    )
    what.add_argument(
        "--speed", action=argparse.BooleanOptionalAction, default=True, help="time the configurations (the first table)"
    )
    what.add_argument(
        "--scaling",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time manual and torch as hidden size doubles (64 to 1024, batch 1) and as batch "
        "size doubles (1 to 256, hidden 256): the second table",
    )
    what.add_argument(
        "--memory",
        action="store_true",
        help="also measure peak memory of compare.train on a generated text file, and encode time",
    )
    what.add_argument(
        "--memory-mb", default="100", help="comma-separated sizes of the generated text files, in MB (e.g. 100,300)"
    )
    what.add_argument(
        "--memory-text",
        default=",".join(TEXT_KINDS),
        help="comma-separated kinds of generated text: ascii (one byte a character), multibyte (curly quotes, "
        "dashes and a 4-byte emoji in every copy of the corpus)",
    )


def add_how_flags(how: argparse._ArgumentGroup) -> None:
    how.add_argument(
        "--threads",
        type=int,
        default=available_cores(),
        help="threads for NumPy's BLAS and for torch alike (default: every core this process may use)",
    )
    how.add_argument(
        "--steps",
        type=int,
        default=None,
        help="timed training steps per repeat, for every configuration "
        "(default: each configuration's own: seed 200, mid 10, large 2; sweeps ~1000 characters)",
    )
    how.add_argument("--warmup", type=int, default=2, help="untimed training steps before the clock starts")
    how.add_argument("--repeats", type=int, default=3, help="timed repeats per implementation; the median is reported")
    how.add_argument(
        "--peak-size",
        type=int,
        default=PEAK_MATRIX_SIZE,
        help="n of the n x n float32 matmul that measures the peak; a smaller one is quicker, but not the same peak",
    )
    how.add_argument(
        "--omp-wait-policy",
        choices=OMP_POLICIES,
        default=None,
        help="OMP_WAIT_POLICY for torch's OpenMP threads, set before torch is imported (default: the "
        "environment's; unset, the library spins a while, then sleeps: on the idle reference machine "
        "that was 1.1-1.8x faster for torch than passive, which only wins when other processes "
        "compete for the cores)",
    )
    how.add_argument(
        "--flush-denormals",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="set the CPU to flush denormal floats to zero (torch.set_flush_denormal), for every "
        "implementation alike: after a few AdaGrad steps float32 softmax outputs underflow into "
        "denormals, which made the large configuration's output-layer products up to 7x slower",
    )


def parse_args(argv: list[str] | None = None) -> BenchSettings:
    parser = build_parser()
    args = parser.parse_args(argv)
    problem = args_problem(args)
    if problem:
        parser.error(problem)  # one line on stderr, exit code 2
    return BenchSettings(
        configs=comma_list(args.configs),
        impls=comma_list(args.impls),
        threads=args.threads,
        timer=Timer(repeats=args.repeats, warmup_steps=args.warmup, steps=args.steps, cell=record_name(args.cell)),
        speed=args.speed,
        scaling=args.scaling,
        memory=args.memory,
        memory_mb=[float(size) for size in comma_list(args.memory_mb)],
        memory_text=comma_list(args.memory_text),
        json=args.json,
        progress=args.progress,
        omp_wait_policy=args.omp_wait_policy or os.environ.get("OMP_WAIT_POLICY", "unset").lower(),
        omp_wait_policy_flag=args.omp_wait_policy is not None,
        flush_denormals=args.flush_denormals,
        peak_size=args.peak_size,
    )


def args_problem(args: argparse.Namespace) -> str | None:
    """A one-line description of the first invalid flag, or None."""
    unknown_configs = [name for name in comma_list(args.configs) if name not in CONFIGS]
    if unknown_configs or not comma_list(args.configs):
        return f"--configs: unknown or empty {unknown_configs or args.configs!r}; choose from {', '.join(CONFIGS)}"
    unknown_impls = [name for name in comma_list(args.impls) if name not in IMPLS]
    if unknown_impls or not comma_list(args.impls):
        return f"--impls: unknown or empty {unknown_impls or args.impls!r}; choose from {', '.join(IMPLS)}"
    for flag, value, least in (
        ("--threads", args.threads, 1),
        ("--steps", args.steps, 1),
        ("--warmup", args.warmup, 0),
        ("--repeats", args.repeats, 1),
        ("--peak-size", args.peak_size, 1),
    ):
        if value is not None and value < least:
            return f"{flag} must be at least {least}, got {value}"
    if not memory_sizes_valid(args.memory_mb):
        return f"--memory-mb: expected comma-separated positive sizes in MB, got {args.memory_mb!r}"
    peak_bytes = 3 * 4 * args.peak_size**2  # two float32 n x n factors and their product
    if problem := memory_problem(peak_bytes, f"--peak-size {args.peak_size:,}", "lower --peak-size"):
        return problem
    if args.memory:  # compare.train on the largest file: at most the target the bench checks (benchmarks/memory.py)
        largest = max(float(size) for size in comma_list(args.memory_mb))
        needed = int(TARGET_RATIO * largest * MB + TARGET_CONSTANT)
        if problem := memory_problem(needed, f"--memory-mb {largest:g}", "lower --memory-mb"):
            return problem
    unknown_texts = [kind for kind in comma_list(args.memory_text) if kind not in TEXT_KINDS]
    if unknown_texts or not comma_list(args.memory_text):
        kinds = ", ".join(TEXT_KINDS)
        return f"--memory-text: unknown or empty {unknown_texts or args.memory_text!r}; choose from {kinds}"
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        return f"--json {args.json}: the directory {Path(args.json).resolve().parent} does not exist"
    if not (args.speed or args.scaling or args.memory):
        return "nothing to do: --no-speed and --no-scaling without --memory"
    if args.cell != "rnn":
        problem = cell_problem(args.cell)
        if problem:
            return problem
        if args.speed and not [impl for impl in comma_list(args.impls) if impl not in RNN_ONLY_IMPLS]:
            return f"--cell {args.cell}: --impls {args.impls} are the vanilla RNN's only; add manual or torch"
    return None


def memory_sizes_valid(text: str) -> bool:
    """Whether ``text`` is a non-empty comma list of finite positive numbers."""
    try:
        sizes = [float(size) for size in comma_list(text)]
    except ValueError:
        return False
    return bool(sizes) and all(0 < size < float("inf") for size in sizes)


def apply_omp_wait_policy(policy: str) -> None:
    """Set OMP_WAIT_POLICY for torch's OpenMP runtime; it is read once, when torch is first imported."""
    if policy == "unset":
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = policy.upper()
    if "torch" in sys.modules:
        print("note: torch was imported before --omp-wait-policy could take effect", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli("python -m compare.bench", bench_command, argv)


def bench_command(argv: list) -> int:
    if "--distributed" in argv:  # data-parallel throughput with 1 and 2 processes
        from compare.benchmarks.distributed import main as distributed_main

        return distributed_main([arg for arg in argv if arg != "--distributed"])
    if "--peers" in argv:  # every cell against PyTorch's fused module, on 1 thread and on 2
        from compare.benchmarks.peers import main as peers_main

        return peers_main([arg for arg in argv if arg != "--peers"])
    if "--calls" in argv:  # what one step executes: calls and operators, before and after
        from compare.benchmarks.calls import main as calls_main

        return calls_main([arg for arg in argv if arg != "--calls"])
    if "--second-order" in argv:  # H v by hand against autograd's, each beside its own gradient
        from compare.benchmarks.second_order import main as second_order_main

        return second_order_main([arg for arg in argv if arg != "--second-order"])
    if "--demo" in argv:  # the demo server under clients that retry a 503 at once
        from compare.benchmarks.demo_load import main as demo_main

        return demo_main([arg for arg in argv if arg != "--demo"])
    if "--memory-curve" in argv:  # peak memory against time, plain and checkpointed, by hand and by autograd
        from compare.benchmarks.saved import curve_main

        return curve_main([arg for arg in argv if arg != "--memory-curve"])
    if "--saved" in argv:  # what each backward keeps: the hand cache against autograd's saved tensors
        from compare.benchmarks.saved import main as saved_main

        return saved_main([arg for arg in argv if arg != "--saved"])
    if "--rtrl" in argv:  # the four routes to the gradient as H grows: BPTT, RTRL, reverse and forward autograd
        from compare.benchmarks.forward_cost import main as forward_cost_main

        return forward_cost_main([arg for arg in argv if arg != "--rtrl"])
    if any(arg.split("=")[0] == "--optimizers" for arg in argv):  # each optimizer through compare.train
        from compare.benchmarks.optimizers import main as optimizers_main

        return optimizers_main(argv)  # its own parser reads --optimizers [LIST]
    if "--cells" in argv:  # rnn, lstm and gru at about equal parameter counts
        from compare.benchmarks.cells import main as cells_main

        return cells_main([arg for arg in argv if arg != "--cells"])
    settings = parse_args(argv)
    skipped = [impl for impl in settings.impls if impl in RNN_ONLY_IMPLS]
    if settings.timer.cell != "rnn" and skipped and settings.speed:
        print(
            f"note: --cell {settings.timer.cell}: {', '.join(skipped)} skipped (the vanilla RNN's only)",
            file=sys.stderr,
        )
    if settings.omp_wait_policy_flag:
        apply_omp_wait_policy(settings.omp_wait_policy)  # before anything imports torch
    document = run(settings)
    if settings.json:
        Path(settings.json).write_text(json.dumps(document, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
