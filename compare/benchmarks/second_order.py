"""The Hessian-vector product's cost: ``python -m compare.bench --second-order`` (docs/second-order.md).

    python -m compare.bench --second-order                 # rnn, H 100 B 1 and H 512 B 128, T 25, float32
    python -m compare.bench --second-order --cell lstm --repeats 9
    python -m compare.bench --second-order --configs seed   # the seed configuration alone

For each configuration, in one run and interleaved (so that a change in the machine's load falls on
every route alike): the hand-written gradient (``manual.forward`` + ``manual.backward``), the
hand-written H v (``manual.forward`` + ``manual.hessian.hessian_vector_product``, whose backward pass
computes the gradient too), autograd's gradient through the twin, and autograd's H v by double
backward (``torchref.second``). Median seconds per call, and each H v's ratio to its own gradient.
Targets (issue 30): the hand-written H v within 3x the hand-written gradient, and faster than autograd's;
a line under the table says, per configuration, which are met.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

import manual
import torchref
from compare.cli.parser import CommandParser, comma_list
from compare.model.init import init_params
from manual import hessian
from torchref import second

CONFIGS = {"seed": (100, 1, 25), "large": (512, 128, 25)}  # name -> (H, B, T)
HAND_TARGET = 3.0  # the hand-written H v at most this many times the hand-written gradient
VOCAB_SIZE = 65  # a text's worth of characters (tiny Shakespeare's 65)


def routes(cell: str, hidden_size: int, batch_size: int, steps: int) -> dict[str, Callable[[], object]]:
    """The four timed calls on one random float32 problem, each from the same weights, batch and direction."""
    rng = np.random.default_rng(0)
    params = {
        name: value.astype(np.float32) for name, value in init_params(VOCAB_SIZE, hidden_size, 0, cell, 1).items()
    }
    vector = {name: rng.normal(size=value.shape).astype(np.float32) for name, value in params.items()}
    inputs = rng.integers(0, VOCAB_SIZE, size=(batch_size, steps))
    targets = rng.integers(0, VOCAB_SIZE, size=(batch_size, steps))
    state0 = manual.zero_state(cell, 1, batch_size, hidden_size, np.float32)
    model = torchref.CharRNN(params, cell=cell, dtype=torch.float32)
    batch = (torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(state0))
    tangent = {name: torch.from_numpy(value) for name, value in vector.items()}

    def manual_gradient() -> object:
        _, cache = manual.forward(params, inputs, targets, state0, cell)
        return manual.backward(cache)

    def manual_hvp() -> object:
        _, cache = manual.forward(params, inputs, targets, state0, cell)
        return hessian.hessian_vector_product(cache, vector)

    def torch_gradient() -> object:
        loss, _ = model.loss(*batch)
        return torch.autograd.grad(loss, list(model.parameters()))

    def torch_hvp() -> object:
        return second.hessian_vector_product(model, *batch, tangent)

    return {
        "manual gradient": manual_gradient,
        "manual H v": manual_hvp,
        "autograd gradient": torch_gradient,
        "autograd H v": torch_hvp,
    }


def median_seconds(calls: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall seconds per call of each, after one untimed call each; the repeats interleaved."""
    for call in calls.values():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def config_label(hidden_size: int, batch_size: int, steps: int) -> str:
    return f"H {hidden_size}, B {batch_size}, T {steps}"


def targets_line(config: str, seconds: dict[str, float]) -> str:
    """Whether one configuration meets the two targets, in a sentence."""
    hand = seconds["manual H v"] / seconds["manual gradient"]
    versus = seconds["autograd H v"] / seconds["manual H v"]
    within = "met" if hand <= HAND_TARGET else "missed"
    faster = "met" if versus > 1 else "missed"
    return (
        f"{config}: the hand-written H v costs {hand:.2f}x its gradient (target at most {HAND_TARGET:g}x: {within}); "
        f"autograd's H v costs {versus:.2f}x the hand-written one (target above 1x: {faster})."
    )


def format_row(config: str, seconds: dict[str, float]) -> str:
    hand = seconds["manual H v"] / seconds["manual gradient"]
    auto = seconds["autograd H v"] / seconds["autograd gradient"]
    versus = seconds["autograd H v"] / seconds["manual H v"]
    cells = [f"{seconds[name] * 1e3:.2f}" for name in seconds]
    return f"| {config} | " + " | ".join(cells) + f" | {hand:.2f}x | {auto:.2f}x | {versus:.2f}x |"


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(
        prog="python -m compare.bench --second-order",
        description="H v by hand against autograd's, each beside its own gradient, float32.",
    )
    parser.add_argument("--cell", choices=sorted(hessian.R_PASSES), default="rnn", help="(default: %(default)s)")
    choices = ", ".join(f"{name} ({config_label(*sizes)})" for name, sizes in CONFIGS.items())
    parser.add_argument(
        "--configs", default=",".join(CONFIGS), help=f"comma-separated, from {choices} (default: %(default)s)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per route; the median (default: 5)")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch's threads (default: 1, as NumPy's BLAS on a busy machine)"
    )
    args = parser.parse_args(argv)
    for flag in ("repeats", "threads"):
        if getattr(args, flag) <= 0:
            parser.error(f"--{flag} must be positive, got {getattr(args, flag)}")
    names = comma_list(args.configs)
    if not names or set(names) - set(CONFIGS):
        parser.error(f"--configs {args.configs!r}: choose from {', '.join(CONFIGS)}")
    torch.set_num_threads(args.threads)  # a thread pool woken for each small op costs more than it gives at B 1
    print(
        f"{args.cell}, float32, one layer, vocabulary {VOCAB_SIZE}; median ms per call of {args.repeats}, "
        f"torch on {torch.get_num_threads()} thread(s)\n"
    )
    print(
        "| config | manual gradient | manual H v | autograd gradient | autograd H v "
        "| manual H v / gradient | autograd H v / gradient | autograd H v / manual H v |"
    )
    print("|---|" + "---:|" * 7)
    verdicts = []
    for name in names:
        config = config_label(*CONFIGS[name])
        seconds = median_seconds(routes(args.cell, *CONFIGS[name]), args.repeats)
        print(format_row(config, seconds), flush=True)
        verdicts.append(targets_line(config, seconds))
    print()
    print("\n\n".join(verdicts))  # each a paragraph of its own: Markdown would read a line under the table as a row
    return 0
