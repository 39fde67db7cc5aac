"""bench --saved: what each backward keeps, by hand and by autograd, for one training step of each cell;
bench --memory-curve: what checkpointed BPTT trades for it, peak memory against time per character
(--out: the same rows as a figure, memory against time, log-log).

By hand: the arrays manual.forward's cache holds (walked field by field; views counted once, by the array
they view; the parameters left out, since both sides keep those anyway). By autograd: every tensor the
torch twin's forward saves for its backward, seen by ``torch.autograd.graph.saved_tensors_hooks``, counted
once per storage (data_ptr), parameters left out, grouped by the shape and by the operation (grad_fn) that
saved it.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

import manual
import torchref
from compare.model.init import init_params, size_problem
from compare.plotting.figure import IMPL_STYLES
from manual import checkpointed
from torchref import checkpointed as torch_checkpointed

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

CELL_NAMES = ("rnn", "lstm", "gru")


def hand_cache_bytes(cache: manual.Cache) -> Counter[str]:
    """Bytes by what they are: field name -> bytes, each underlying array once, parameters left out."""
    parameters = {id(value) for value in cache.params.values()}
    seen: set[int] = set(parameters)
    kept: Counter[str] = Counter()

    def add(label: str, value: Any) -> None:
        if isinstance(value, np.ndarray):
            owner = value if value.base is None else value.base
            if id(owner) not in seen and id(value) not in parameters:
                seen.add(id(owner))
                kept[label] += owner.nbytes
        elif is_dataclass(value) and not isinstance(value, type):
            for field in fields(value):
                add(field.name, getattr(value, field.name))
        elif isinstance(value, list):
            for item in value:
                add(label, item)

    for field in fields(cache):
        if field.name != "params":
            add(field.name, getattr(cache, field.name))
    return kept


def autograd_saved_bytes(
    model: torchref.CharRNN, inputs: torch.Tensor, targets: torch.Tensor, state0: torch.Tensor
) -> tuple[Counter[str], Counter[str]]:
    """(bytes by grad_fn, bytes by shape) of what autograd saves, each storage once, parameters left out."""
    parameter_storages = {param.untyped_storage().data_ptr() for param in model.parameters()}
    storages: dict[int, tuple[str, int]] = {}  # data_ptr -> (shape, bytes)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameter_storages:
            storages.setdefault(pointer, (str(tuple(tensor.shape)), tensor.untyped_storage().nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = model.loss(inputs, targets, state0)
    by_shape: Counter[str] = Counter()
    for shape, size in storages.values():
        by_shape[shape] += size
    by_operation: Counter[str] = Counter()
    counted: set[int] = set()
    nodes, visited = [loss.grad_fn], set()
    while nodes:  # the graph, to name the operation that saved each storage
        node = nodes.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for attribute in dir(node):
            if attribute.startswith("_saved_"):
                value = getattr(node, attribute)
                if isinstance(value, torch.Tensor):
                    pointer = value.untyped_storage().data_ptr()
                    if pointer in storages and pointer not in counted:
                        counted.add(pointer)
                        by_operation[type(node).__name__] += storages[pointer][1]
        nodes.extend(next_node for next_node, _ in node.next_functions)
    return by_operation, by_shape


def measure(cell: str, layers: int, hidden: int, steps: int, vocab: int = 65) -> dict[str, Any]:
    params = init_params(vocab, hidden, 0, cell=cell, num_layers=layers)
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, vocab, size=(2, 1, steps))
    state0 = manual.zero_state(cell, layers, 1, hidden)
    _, cache = manual.forward(params, inputs, targets, state0, cell)
    hand = hand_cache_bytes(cache)
    model = torchref.CharRNN(params, cell=cell)
    as_tensor = torch.from_numpy
    by_operation, by_shape = autograd_saved_bytes(model, as_tensor(inputs), as_tensor(targets), as_tensor(state0))
    return {"hand": hand, "autograd_by_operation": by_operation, "autograd_by_shape": by_shape}


def kib(size: int) -> str:
    return f"{size / 1024:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compare.bench --saved", description=__doc__)
    parser.add_argument("--hidden", default="100", help="comma-separated hidden sizes (default 100)")
    parser.add_argument("--steps", default="25,100", help="comma-separated sequence lengths T (default 25,100)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.hidden.split(",")]
        lengths = [int(length) for length in args.steps.split(",")]
    except ValueError:
        parser.error(f"--hidden and --steps take comma-separated integers, got {args.hidden!r} and {args.steps!r}")
    if min(sizes + lengths) < 1:
        parser.error("--hidden and --steps must be at least 1")
    print(
        "| cell | layers | H | T | hand cache KiB | autograd saved KiB | hand / autograd | hand peak KiB | "
        "autograd peak KiB | hand, by what | autograd, top operations |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|")
    one_call = argparse.Namespace(threads=1, repeats=1, no_progress=True)
    for cell in CELL_NAMES:
        for layers in (1, 2):
            for hidden in sizes:
                for steps in lengths:
                    result = measure(cell, layers, hidden, steps)
                    hand, saved = sum(result["hand"].values()), sum(result["autograd_by_shape"].values())
                    what = ", ".join(f"{name} {kib(size)}" for name, size in result["hand"].most_common())
                    top = ", ".join(
                        f"{name} {kib(size)}" for name, size in result["autograd_by_operation"].most_common(4)
                    )
                    peaks = [
                        curve_cell_in_subprocess(side, cell, hidden, steps, 0, one_call, layers, "float64")[
                            "peak_bytes"
                        ]
                        for side in SIDES
                    ]
                    print(
                        f"| {cell} | {layers} | {hidden} | {steps} | {kib(hand)} | {kib(saved)} | "
                        f"{hand / saved:.2f} | {kib(peaks[0])} | {kib(peaks[1])} | {what} | {top} |"
                    )
    return 0


# bench --memory-curve: peak memory against time per character, plain and checkpointed, by hand and by autograd

CURVE_STEPS = "100,1000,10000"
CURVE_SEGMENTS = "10,100,sqrt"  # sqrt: the segment length near sqrt(T), where T/k saved states meet one segment
SIDES = ("hand", "autograd")
PEAK_MEASURE = (
    "peak: the growth of the process's resident memory over one forward + backward (VmHWM, reset through "
    "/proc/self/clear_refs just before, minus VmRSS then), in a fresh process per cell of the table, after a "
    "warm-up on 10 steps and malloc_trim: one measure for NumPy's and torch's allocators alike (tracemalloc "
    "does not see torch's); it counts pages touched, so below about 1 MiB it is coarse"
)


def segment_lengths(steps: int, wanted: list[str]) -> list[int]:
    """The k of ``wanted`` ('sqrt' rounded) below T, each once, ascending: k >= T is the plain backward."""
    lengths = {round(math.sqrt(steps)) if word == "sqrt" else int(word) for word in wanted}
    return sorted(length for length in lengths if 1 <= length < steps)


def curve_step(
    side: str, cell: str, hidden: int, steps: int, segment_length: int, layers: int = 1, dtype: str = "float32"
) -> Callable[[], object]:
    """One forward + backward of T = ``steps`` characters, one stream; segment_length 0: plain."""
    params = {name: value.astype(dtype) for name, value in init_params(65, hidden, 0, cell, layers).items()}
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, 65, size=(2, 1, steps))
    state0 = manual.zero_state(cell, layers, 1, hidden, np.dtype(dtype))
    if side == "hand":
        if segment_length:
            return lambda: checkpointed.backward(
                checkpointed.forward(params, inputs, targets, state0, cell, segment_length=segment_length)[2]
            )
        return lambda: manual.backward(manual.forward(params, inputs, targets, state0, cell)[1])
    model = torchref.CharRNN(params, cell=cell, dtype=getattr(torch, dtype))
    batch = (torch.from_numpy(inputs), torch.from_numpy(targets), torch.from_numpy(state0))

    def autograd_step() -> object:
        model.zero_grad(set_to_none=True)
        if segment_length:
            loss, _ = torch_checkpointed.loss(model, *batch, segment_length)
        else:
            loss, _ = model.loss(*batch)
        loss.backward()
        return loss

    return autograd_step


def status_kib(field: str) -> int:
    """VmRSS or VmHWM of this process, in KiB (/proc/self/status)."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field} (a bug; report it)")


def measure_curve_cell(
    side: str,
    cell: str,
    hidden: int,
    steps: int,
    segment_length: int,
    repeats: int,
    layers: int = 1,
    dtype: str = "float32",
) -> dict:
    """In this process: (peak growth bytes of the first call, median seconds per call over ``repeats``)."""
    import ctypes
    import gc

    curve_step(side, cell, hidden, min(steps, 10), min(segment_length, 10), layers, dtype)()  # first-use work
    step = curve_step(side, cell, hidden, steps, segment_length, layers, dtype)
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap handed back, so that the baseline is what is in use
    before = status_kib("VmRSS")
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear:
        clear.write("5")  # VmHWM := VmRSS
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
        if len(seconds) == 1:
            peak = (status_kib("VmHWM") - before) * 1024
    return {"peak_bytes": peak, "seconds": statistics.median(seconds)}


def curve_main(argv: list[str] | None = None) -> int:
    """python -m compare.bench --memory-curve: the table, one subprocess per cell."""
    from compare.cli.errors import UsageError
    from compare.cli.parser import CommandParser
    from compare.plotting.events import PlotError
    from compare.plotting.figure import figure_problem, save_png
    from compare.reporting.provenance import cpu_model, load_average

    parser = CommandParser(
        prog="python -m compare.bench --memory-curve",
        description="Peak memory and time per character of one forward + backward, plain and checkpointed "
        "(manual/checkpointed.py by hand, torch.utils.checkpoint by autograd), one stream, float32.",
    )
    parser.add_argument("--cells", default="rnn", help="comma-separated cells, from rnn, lstm, gru (default rnn)")
    parser.add_argument("--hidden", type=int, default=100, help="H (default 100)")
    parser.add_argument("--steps", default=CURVE_STEPS, help=f"comma-separated T (default {CURVE_STEPS})")
    parser.add_argument(
        "--segments",
        default=CURVE_SEGMENTS,
        help=f"comma-separated segment lengths k, 'sqrt' for the one nearest sqrt(T); those >= T are left out "
        f"(default {CURVE_SEGMENTS})",
    )
    parser.add_argument("--sides", default=",".join(SIDES), help="comma-separated: hand, autograd (default both)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per cell; the median is reported")
    parser.add_argument("--threads", type=int, default=1, help="threads for NumPy's BLAS and torch alike (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no line on stderr per cell")
    parser.add_argument("--out", metavar="PNG", help="draw the rows into this PNG too: memory against time")
    args = parser.parse_args(argv)
    cells, sides = args.cells.split(","), args.sides.split(",")
    if not set(cells) <= set(CELL_NAMES) or not set(sides) <= set(SIDES):
        parser.error(f"--cells takes {', '.join(CELL_NAMES)}; --sides takes {', '.join(SIDES)}")
    wanted = args.segments.split(",")
    try:
        all_steps = [int(steps) for steps in args.steps.split(",")]
        segments = [word if word == "sqrt" else str(int(word)) for word in wanted]
    except ValueError:
        parser.error(f"--steps takes integers and --segments integers or sqrt, got {args.steps!r}, {args.segments!r}")
    if min(all_steps) < 1 or args.hidden < 1 or args.repeats < 1 or args.threads < 1:
        parser.error("--steps, --hidden, --repeats and --threads must be at least 1")
    if problem := size_problem({"hidden_size": args.hidden, "seq_length": max(all_steps)}):
        parser.error(problem)
    if problem := figure_problem(args.out):
        parser.error(problem)
    load_before = load_average()
    rows = []
    for cell in cells:
        for steps in all_steps:
            plain: dict[str, dict] = {}
            for segment_length in [0, *segment_lengths(steps, segments)]:
                for side in sides:
                    result = curve_cell_in_subprocess(side, cell, args.hidden, steps, segment_length, args)
                    plain.setdefault(side, result)  # segment_length 0 comes first
                    rows.append((cell, steps, segment_length, side, result, plain[side]))
    print(
        f"machine: {cpu_model()}, {args.threads} thread(s) for NumPy's BLAS and torch; load average "
        f"{load_before or 0:.1f} before, {load_average() or 0:.1f} after; H {args.hidden}, B 1, float32, V 65"
    )
    print(PEAK_MEASURE + "; time: the median of --repeats calls; ratios: to the same side's plain backward.")
    print()
    print("| cell | T | method | side | peak MiB | µs per character | peak / plain | time / plain |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for cell, steps, segment_length, side, result, base in rows:
        method = f"k = {segment_length}" if segment_length else "plain"
        print(
            f"| {cell} | {steps} | {method} | {side} | {result['peak_bytes'] / 2**20:,.2f} | "
            f"{result['seconds'] / steps * 1e6:,.0f} | {result['peak_bytes'] / max(base['peak_bytes'], 1):.3f} | "
            f"{result['seconds'] / base['seconds']:.2f} |"
        )
    for summary in (gruslys_comparison(rows), target_verdict(rows)):
        if summary:
            print()
            print(summary)
    if args.out:
        try:
            save_png(draw_memory_curve(rows), Path(args.out))
        except PlotError as error:
            raise UsageError(str(error)) from None
    return 0


# Gruslys et al. (2016), "Memory-efficient backpropagation through time": at T = 1,000, 95% of the memory
# saved for about a third more time
GRUSLYS_STEPS, GRUSLYS_SAVED, GRUSLYS_TIME = 1000, 0.95, 4 / 3


def gruslys_comparison(rows: list) -> str:
    """One line: Gruslys et al.'s trade at T = 1,000 beside ours there, for each cell and side, at the
    measured k nearest sqrt(T); empty when T = 1,000 was not measured checkpointed."""
    points = []
    for cell, steps, segment_length, side, result, base in rows:
        if steps != GRUSLYS_STEPS or not segment_length:
            continue
        measured = {row[2] for row in rows if row[:2] == (cell, steps) and row[2]}
        if segment_length != min(measured, key=lambda length: abs(length - math.sqrt(steps))):
            continue
        saved = 1 - result["peak_bytes"] / max(base["peak_bytes"], 1)
        points.append(
            f"{cell} {'by hand' if side == 'hand' else 'by autograd'}, k = {segment_length}: {saved:.1%} saved "
            f"for {result['seconds'] / base['seconds']:.2f}x"
        )
    if not points:
        return ""
    return (
        f"Gruslys et al. (2016) at T = {GRUSLYS_STEPS:,}: {GRUSLYS_SAVED:.0%} of the memory saved for about "
        f"{GRUSLYS_TIME:.2f}x the time. Here at T = {GRUSLYS_STEPS:,}, the k nearest sqrt(T), memory saved "
        f"(1 - peak / plain) for the time of the plain backward: {'; '.join(points)}."
    )


# issue 31's target for the hand-written checkpointed backward at the longest stream
TARGET_STEPS, TARGET_PEAK, TARGET_TIME = 10_000, 0.10, 1.5


def target_verdict(rows: list) -> str:
    """One line: for each cell, whether checkpointing by hand at T = 10,000 keeps at most 10% of the plain
    backward's peak for at most 1.5x its time, and at which k; empty when T = 10,000 was not measured."""
    verdicts = []
    for cell in dict.fromkeys(row[0] for row in rows):
        trades = [
            (segment_length, result["peak_bytes"] / max(base["peak_bytes"], 1), result["seconds"] / base["seconds"])
            for row_cell, steps, segment_length, side, result, base in rows
            if (row_cell, steps, side) == (cell, TARGET_STEPS, "hand") and segment_length
        ]
        if not trades:
            continue
        met = [trade for trade in trades if trade[1] <= TARGET_PEAK and trade[2] <= TARGET_TIME]
        length, peak, seconds = min(met or trades, key=lambda trade: trade[2])  # the fastest (that meets it)
        verdict = "met" if met else "missed"
        verdicts.append(f"{cell} {verdict} (k = {length}: {peak:.1%} of the plain peak in {seconds:.2f}x its time)")
    if not verdicts:
        return ""
    return (
        f"Target, checkpointed by hand at T = {TARGET_STEPS:,} in at most {TARGET_PEAK:.0%} of the plain backward's "
        f"peak for at most {TARGET_TIME}x its time: {'; '.join(verdicts)}."
    )


SIDE_COLOURS = {"hand": IMPL_STYLES["manual"]["color"], "autograd": IMPL_STYLES["torch"]["color"]}
STEP_MARKERS = ("o", "s", "^", "D", "v", "P")  # one per T, in the order measured


def draw_memory_curve(rows: list, width: float = 12.0, height: float = 6.5, dpi: int = 100) -> Figure:
    """Peak memory against time per character, log-log, one panel per cell; one curve per side and T, from
    the plain backward through the checkpointed ones (each point labelled by its k), and a star where
    Gruslys et al.'s trade (95% saved, 1.33x the time) would put the plain backward of T = 1,000."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    cells = list(dict.fromkeys(row[0] for row in rows))
    all_steps = list(dict.fromkeys(row[1] for row in rows))
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    panels = figure.subplots(1, len(cells), squeeze=False)[0]
    for axes, cell in zip(panels, cells, strict=True):
        for side in dict.fromkeys(row[3] for row in rows):
            for steps in all_steps:
                curve = [row for row in rows if row[0] == cell and row[1] == steps and row[3] == side]
                draw_trade(axes, side, steps, STEP_MARKERS[all_steps.index(steps) % len(STEP_MARKERS)], curve)
        axes.set_xscale("log")
        axes.set_yscale("log")
        axes.set_title(f"{cell}: one forward + backward, plain and checkpointed")
        axes.set_xlabel("time per character (µs)")
        axes.grid(True, which="major", alpha=0.3)
    panels[0].set_ylabel("peak memory (MiB, growth of resident memory)")
    handles, labels = panels[0].get_legend_handles_labels()  # one legend for all panels, below them
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize="small")
    return figure


def draw_trade(axes: Axes, side: str, steps: int, marker: str, curve: list) -> None:
    """One side at one T: its plain point, then k from large to small (less memory, more time)."""
    curve = sorted(curve, key=lambda row: -row[2] if row[2] else -math.inf)  # plain first
    points = [(row[2], row[4]["seconds"] / steps * 1e6, row[4]["peak_bytes"] / 2**20) for row in curve]
    points = [point for point in points if point[2] > 0]  # a log scale cannot show a peak of 0 (a coarse one)
    if not points:
        return
    colour = SIDE_COLOURS[side]
    _, times, peaks = zip(*points, strict=True)
    axes.plot(times, peaks, color=colour, marker=marker, linewidth=1.2, label=f"{side}, T = {steps:,}")
    for segment_length, time_per_character, peak in points:
        text = f"k={segment_length}" if segment_length else f"plain T={steps:,}"
        axes.annotate(text, (time_per_character, peak), textcoords="offset points", xytext=(4, 3), fontsize=7)
    plain_time, plain_peak = times[0], peaks[0]
    if steps == GRUSLYS_STEPS and not points[0][0]:
        axes.plot(
            [plain_time * GRUSLYS_TIME],
            [plain_peak * (1 - GRUSLYS_SAVED)],
            linestyle="none",
            marker="*",
            markersize=11,
            color=colour,
            markerfacecolor="none",
            label=f"{side}: Gruslys et al.'s trade from the plain T = {steps:,}",
        )


def curve_cell_in_subprocess(
    side: str,
    cell: str,
    hidden: int,
    steps: int,
    segment_length: int,
    args: argparse.Namespace,
    layers: int = 1,
    dtype: str = "float32",
) -> dict:
    """measure_curve_cell in a fresh Python: its peak is this cell's alone."""
    import json
    import os
    import subprocess
    import sys

    if not args.no_progress:
        print(f"{cell} T {steps} k {segment_length or 'plain'} {side}", file=sys.stderr, flush=True)
    threads = str(args.threads)
    environ = {**os.environ, "OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "MKL_NUM_THREADS": threads}
    finished = subprocess.run(
        [sys.executable, "-m", "compare.benchmarks.saved", side, cell, str(hidden), str(steps), str(segment_length)]
        + [str(args.repeats), str(layers), dtype],
        capture_output=True,
        text=True,
        env=environ,
        check=True,
    )
    return json.loads(finished.stdout.splitlines()[-1])


if __name__ == "__main__":  # one measured step: python -m compare.benchmarks.saved SIDE CELL H T K REPEATS LAYERS DTYPE
    import json
    import sys

    side_, cell_, hidden_, steps_, segment_, repeats_, layers_, dtype_ = sys.argv[1:9]
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    sizes_ = (int(hidden_), int(steps_), int(segment_), int(repeats_), int(layers_))
    print(json.dumps(measure_curve_cell(side_, cell_, *sizes_[:4], layers=sizes_[4], dtype=dtype_)))
