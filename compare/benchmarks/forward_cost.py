"""bench --rtrl: what each route to the gradient costs per time step as H grows (docs/forward.md#cost).

    python -m compare.bench --rtrl                       # H = 8, 16, 32, 64; T = 25, B = 1; rnn
    python -m compare.bench --rtrl --sizes 8,16,32,64,128 --cell lstm
    python -m compare.bench --rtrl --out rtrl-cost.png    # the figure too: log-log, fitted and theory slopes

The four routes of gradcheck --routes (compare.gradients.routes): BPTT and RTRL by hand, reverse- and
forward-mode autograd. Time: the median over --repeats chunks (after one untimed) divided by T, torch on
one thread. Peak memory: what the hand-written routes allocate above what they start with (tracemalloc
sees every NumPy array); torch's allocations are outside its view, so the autograd routes have none.
A route past forward mode's cost (compare.model.init.forward_mode_cost) is left out at that size.
The exponents are least-squares slopes of log(cost) against log(H), printed beside the theory:
RTRL O(H^4) time, O(H^3) memory; BPTT O(H^2) per step, O(T*H) memory for the activations (plus the
O(H^2 + H*V) gradients themselves, which dominate at B = 1).
"""

from __future__ import annotations

import os
import statistics
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import manual
from compare.cli.errors import UsageError
from compare.cli.parser import CommandParser, comma_list
from compare.data.corpus import Vocab, builtin_corpus
from compare.model.init import FORWARD_MODE_BYTES, forward_mode_cost, init_params
from compare.plotting.events import PlotError
from compare.plotting.figure import figure_problem, save_png
from manual import rtrl
from torchref import forward
from torchref.model import CharRNN

ROUTES = ("bptt", "rtrl", "reverse", "forward")
THEORY: dict[str, tuple[int, int | None]] = {  # (time per step, memory) exponents of H; None: not measured
    "bptt": (2, 1),
    "rtrl": (4, 3),
    "reverse": (2, None),
    "forward": (4, None),
}
THEORY_NOTES = {  # (time, memory): what the exponent counts, where it needs saying
    "bptt": ("", " (activations; the gradients are 2)"),
    "forward": (" (one tangent per parameter: H^2 of them, each H^2 a step)", ""),
}
Fit = tuple[float, float]  # the exponent over every size, and over the two largest alone


def route_step(route: str, params: dict, cell: str, inputs: np.ndarray, targets: np.ndarray) -> Callable[[], object]:
    """One chunk's gradient by ``route``, as a function of nothing: what is timed."""
    state0 = manual.zero_state(cell, 1, inputs.shape[0], params["W"].shape[1])
    if route == "bptt":
        return lambda: manual.backward(manual.forward(params, inputs, targets, state0, cell)[1])
    if route == "rtrl":
        influence0 = rtrl.zero_influence(params, cell, inputs.shape[0])
        return lambda: rtrl.chunk(params, inputs, targets, state0, influence0, cell)
    model = CharRNN(params, cell=cell, dtype=torch.float64)
    batch = (torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(state0))
    if route == "reverse":
        return lambda: model.loss(*batch)[0].backward()
    function = forward.loss_function(model, *batch)
    return lambda: forward.forward_gradient(function, forward.params_of(model))


def measure(step: Callable[[], object], repeats: int, steps: int, traced: bool) -> tuple[float, int | None]:
    """(seconds per time step, the median over repeats; peak bytes allocated, or None when not traced)."""
    step()  # untimed: first-call costs
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append((time.perf_counter() - start) / steps)
    peak = None
    if traced:
        tracemalloc.start()
        step()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return statistics.median(times), peak


def slope(sizes: list[int], values: list[float]) -> float:
    """The least-squares exponent p of values ~ H^p."""
    return float(np.polyfit(np.log(sizes), np.log(values), 1)[0])


def fitted_exponents(measured: dict[int, tuple[float, int | None]], which: int) -> Fit | None:
    """The exponents of time (``which`` 0) or peak memory (1) over the measured sizes; None if fewer than 2."""
    values = [measured[size][which] for size in measured]
    if len(values) < 2 or any(value is None for value in values):
        return None
    sizes, numbers = list(measured), [float(value) for value in values if value is not None]
    return slope(sizes, numbers), slope(sizes[-2:], numbers[-2:])


def theory_column(route: str, which: int) -> str:
    exponent = THEORY[route][which]
    return "" if exponent is None else f"H^{exponent}{THEORY_NOTES.get(route, ('', ''))[which]}"


def main(argv: list[str] | None = None) -> int:
    parser = CommandParser(prog="python -m compare.bench --rtrl", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="8,16,32,64", help="comma-separated hidden sizes (default: %(default)s)")
    parser.add_argument("--cell", choices=["rnn", "lstm", "gru"], default="rnn", help="(default: %(default)s)")
    parser.add_argument("--seq-length", type=int, default=25, metavar="T", help="(default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="timed chunks per route and size (default: %(default)s)")
    parser.add_argument("--out", metavar="PNG", help="also draw time and memory against H, log-log (needs matplotlib)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in comma_list(args.sizes)]
    except ValueError:
        parser.error(f"--sizes must be comma-separated positive integers, got {args.sizes!r}")
    if not sizes or min(sizes) <= 0 or max(sizes) > 512:
        parser.error(f"--sizes must be between 1 and 512 (RTRL is O(H^4) a step), got {args.sizes!r}")
    if args.seq_length <= 0 or args.repeats <= 0:
        parser.error("--seq-length and --repeats must be positive")
    if problem := figure_problem(args.out):
        parser.error(problem)
    torch.set_num_threads(1)
    text = builtin_corpus()
    vocab = Vocab.from_text(text)
    tokens = vocab.encode(text[: args.seq_length + 1]).astype(np.int64)
    inputs, targets = tokens[None, :-1], tokens[None, 1:]
    load_before = os.getloadavg()[0]
    found: dict[str, dict[int, tuple[float, int | None]]] = {route: {} for route in ROUTES}
    print(f"{args.cell}, T = {args.seq_length}, B = 1, vocabulary {len(vocab)}, float64, torch on 1 thread")
    print()
    print("| H | " + " | ".join(f"{route} µs/step | {route} peak MB" for route in ROUTES) + " |")
    print("|---:|" + "---:|---:|" * len(ROUTES))
    for size in sizes:
        params = init_params(len(vocab), size, 0, args.cell)
        cost = forward_mode_cost(len(vocab), size, args.cell, 1, args.seq_length)
        held = {"rtrl": cost.influence_bytes, "forward": cost.jacfwd_bytes}
        cells = []
        for route in ROUTES:
            if held.get(route, 0) > FORWARD_MODE_BYTES:
                cells += ["", ""]
                continue
            step = route_step(route, params, args.cell, inputs, targets)
            seconds, peak = measure(step, args.repeats, args.seq_length, traced=route in ("bptt", "rtrl"))
            found[route][size] = (seconds, peak)
            cells += [f"{seconds * 1e6:,.1f}", "" if peak is None else f"{peak / 1e6:,.3f}"]
        print(f"| {size} | " + " | ".join(cells) + " |", flush=True)
    print()
    # every size, and the two largest alone: at small H a step is mostly per-call overhead, flat in H
    print("| route | time exponent, all | the two largest | theory | memory exponent, all | the two largest | theory |")
    print("|---|---:|---:|---|---:|---:|---|")
    fits = {route: (fitted_exponents(found[route], 0), fitted_exponents(found[route], 1)) for route in ROUTES}
    for route, (time_fit, memory_fit) in fits.items():
        if time_fit is None:
            continue
        memory = ["", ""] if memory_fit is None else [f"{exponent:.2f}" for exponent in memory_fit]
        cells = [f"{time_fit[0]:.2f}", f"{time_fit[1]:.2f}", theory_column(route, 0), *memory, theory_column(route, 1)]
        print(f"| {route} | " + " | ".join(cells) + " |")
    print()
    print(f"load average {load_before:.2f} before, {os.getloadavg()[0]:.2f} after, on {os.cpu_count()} CPUs")
    if args.out:
        from compare.plotting.forward_figure import draw_cost

        title = f"{args.cell}, T = {args.seq_length}, B = 1"
        try:
            save_png(draw_cost(found, fits, THEORY, title), Path(args.out))
        except PlotError as error:
            raise UsageError(str(error)) from None
    return 0
