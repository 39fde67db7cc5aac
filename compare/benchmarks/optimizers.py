"""bench --optimizers: every optimizer trained side by side on the built-in corpus, loss against steps and
against wall time (--out: the same runs as a figure).

Each run is ``python -m compare.train`` itself, in its own process, at the defaults (rnn, H 100, T 25, B 1,
float32, --impl manual, the same seed, so the same initial weights and the same batches), each optimizer at
its usual rate (RATES), logging every step, validating once at the end. What the table and the figure show
is read back from the TensorBoard events each run wrote: loss/train per step and when it was logged,
speed/chars_per_sec (the steps' own time) and loss/val.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from compare.cli.errors import TrainingFailed, UsageError
from compare.cli.parser import CommandParser, comma_list
from compare.model.state import OPTIMIZERS
from compare.plotting.events import PlotError, Series, read_scalars
from compare.training.config import TrainConfig

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# each optimizer's usual --lr: AdaGrad's is min-char-rnn's, RMSProp's char-rnn's, Adam's PyTorch's default, HF's
# Martens' full step
RATES = {"adagrad": 0.05, "rmsprop": 2e-3, "adam": 1e-3, "hf": 1.0}
DEFAULT_STEPS = 3000
WINDOW_ENDS = (1 / 6, 1 / 3, 2 / 3, 1)  # the table's windows end at these fractions of the steps
WINDOWS_PER_RUN = 12  # each window is a twelfth of the steps long: 251-500, ..., 2751-3000 of 3000
SMOOTHING_WINDOWS = 30  # the figure's curves: the mean of the last steps / 30 losses
TAGS = ("loss/train", "loss/val", "speed/chars_per_sec")


@dataclass
class Trained:
    """One optimizer's run, as its events tell it."""

    optimizer: str
    lr: float
    losses: Series  # loss/train at every step, with the wall time it was logged at
    val_loss: float
    ms_per_step: float  # the steps' own time (compare.train's chars/s), logging and validation left out

    def wall_seconds(self) -> list[float]:
        """Seconds since step 1 was logged, at every step: TensorBoard's relative time axis."""
        return [time - self.losses.wall_times[0] for time in self.losses.wall_times]


def available() -> list[str]:
    """The optimizers compare.train knows that have a usual rate here."""
    return [name for name in RATES if name in OPTIMIZERS]


def train_command(optimizer: str, lr: str, steps: int, threads: int, logdir: str) -> list[str]:
    """The compare.train flags of one run (after ``python -m compare.train``)."""
    settings = f"--impl manual --optimizer {optimizer} --lr {lr} --max-steps {steps} --eval-every {steps} --log-every 1"
    return [*settings.split(), "--threads", str(threads), "--logdir", logdir, "--run-name", optimizer]


def train_one(optimizer: str, steps: int, threads: int, logdir: Path) -> Trained:
    """compare.train in a fresh process, in ``logdir`` (also its working directory); its events read back."""
    flags = train_command(optimizer, f"{RATES[optimizer]:g}", steps, threads, str(logdir))
    finished = subprocess.run(
        [sys.executable, "-m", "compare.train", *flags],
        cwd=logdir,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
    )
    if finished.returncode != 0:  # its own one line, as a usage error (2) or a failed training (1)
        lines = finished.stderr.strip().splitlines() or ["(nothing on stderr)"]
        failure = UsageError if finished.returncode == 2 else TrainingFailed
        raise failure(f"--optimizers {optimizer}: compare.train exited {finished.returncode}: {lines[-1]}")
    scalars = read_scalars(logdir / optimizer / "manual", TAGS)
    speed = scalars["speed/chars_per_sec"].values[-1]
    defaults = TrainConfig()  # every run keeps compare.train's batch and chunk sizes
    return Trained(
        optimizer,
        RATES[optimizer],
        scalars["loss/train"],
        scalars["loss/val"].values[-1],
        1000 * defaults.batch_size * defaults.seq_length / speed,
    )


def windows(steps: int) -> list[tuple[int, int]]:
    """The table's windows of steps, (first, last), 1-based and inclusive."""
    length = max(1, steps // WINDOWS_PER_RUN)
    ends = sorted({max(1, round(steps * fraction)) for fraction in WINDOW_ENDS})
    return [(max(1, end - length + 1), end) for end in ends]


def window_mean(losses: Series, first: int, last: int) -> float:
    inside = [value for step, value in zip(losses.steps, losses.values, strict=True) if first <= step <= last]
    return sum(inside) / len(inside)


def print_table(runs: list[Trained], steps: int) -> None:
    spans = windows(steps)
    heads = [f"{first}-{last}" if first < last else f"{last}" for first, last in spans]
    print(
        f"| optimizer | `--lr` | training loss, mean of steps {' | '.join(heads)} | validation loss at {steps} | "
        f"ms/step | wall s |"
    )
    print("|---|---|" + "---:|" * (len(spans) + 3))
    for run in runs:
        means = " | ".join(f"{window_mean(run.losses, first, last):.3f}" for first, last in spans)
        print(
            f"| {run.optimizer} | {run.lr:g} | {means} | {run.val_loss:.3f} | {run.ms_per_step:.2f} | "
            f"{run.wall_seconds()[-1]:.2f} |"
        )


def trailing_mean(values: list[float], length: int) -> list[float]:
    """At each step, the mean of the last ``length`` values (fewer at the start)."""
    means, total = [], 0.0
    for index, value in enumerate(values):
        total += value - (values[index - length] if index >= length else 0.0)
        means.append(total / min(index + 1, length))
    return means


def draw_optimizers(runs: list[Trained], steps: int, width: float = 12.0, height: float = 5.0) -> Figure:
    """Two panels: the smoothed training loss against steps, and against wall time; a curve per optimizer."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    length = max(1, steps // SMOOTHING_WINDOWS)
    figure = Figure(figsize=(width, height), dpi=100, layout="constrained")
    by_step, by_time = figure.subplots(1, 2, sharey=True)
    for run in runs:
        smoothed = trailing_mean(run.losses.values, length)
        label = f"{run.optimizer}, --lr {run.lr:g}"
        by_step.plot(run.losses.steps, smoothed, linewidth=1.2, label=label)
        by_time.plot(run.wall_seconds(), smoothed, linewidth=1.2, label=label)
    by_step.set_xlabel("training step")
    by_time.set_xlabel("wall time since step 1 (s, logging every step included)")
    by_step.set_ylabel(f"training loss, mean of the last {length} steps (nats per character)")
    for axes in (by_step, by_time):
        axes.grid(True, alpha=0.3)
    by_step.set_title("against steps")
    by_time.set_title("against wall time")
    by_step.legend()
    return figure


def build_parser() -> CommandParser:
    parser = CommandParser(
        prog="python -m compare.bench --optimizers",
        description="Train each optimizer with compare.train on the built-in corpus at the defaults (rnn, H 100, "
        "T 25, B 1, float32, --impl manual, one seed), each at its usual --lr; print the loss over windows of "
        "steps, the validation loss at the end and the time per step.",
    )
    names = available()
    parser.add_argument(
        "--optimizers",
        nargs="?",
        const=",".join(names),
        default=",".join(names),
        metavar="LIST",
        help=f"this benchmark; optionally the comma-separated optimizers, from {', '.join(names)} (default: all; "
        f"their rates: "
        f"{', '.join(f'{name} {RATES[name]:g}' for name in names)})",
    )
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS, help="training steps per optimizer")
    parser.add_argument("--threads", type=int, default=1, help="compare.train --threads: NumPy's BLAS and torch")
    parser.add_argument(
        "--logdir",
        help="keep the runs here, <logdir>/<optimizer>, for TensorBoard (default: a temporary directory, deleted)",
    )
    parser.add_argument("--out", metavar="PNG", help="draw the losses into this PNG too: against steps and wall time")
    parser.add_argument("--no-progress", action="store_true", help="no line on stderr per run")
    return parser


def main(argv: list[str] | None = None) -> int:
    """python -m compare.bench --optimizers: one compare.train per optimizer, then the table (and the figure)."""
    from compare.plotting.figure import figure_problem, save_png
    from compare.reporting.provenance import cpu_model, load_average

    parser = build_parser()
    args = parser.parse_args(argv)
    chosen = comma_list(args.optimizers)
    unknown = [name for name in chosen if name not in available()]
    if unknown or not chosen:
        parser.error(f"--optimizers: unknown or empty {unknown or args.optimizers!r}; choose from {available()}")
    if args.steps < 1 or args.threads < 1:
        parser.error(f"--steps and --threads must be at least 1, got {args.steps} and {args.threads}")
    if args.logdir and not Path(args.logdir).absolute().parent.is_dir():  # say so before the work, not after
        parser.error(f"--logdir {args.logdir}: no such directory to write it in")
    if problem := figure_problem(args.out):
        parser.error(problem)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-optimizers-") as scratch:
        logdir = Path(args.logdir).absolute() if args.logdir else Path(scratch)
        logdir.mkdir(exist_ok=True)
        runs = []
        for optimizer in chosen:
            if not args.no_progress:
                print(f"{optimizer}: {args.steps} steps at --lr {RATES[optimizer]:g}", file=sys.stderr, flush=True)
            runs.append(train_one(optimizer, args.steps, args.threads, logdir))
    load_after = load_average()
    print(
        f"machine: {cpu_model()}, {args.threads} thread(s) for NumPy's BLAS and torch; load average "
        f"{load_before or 0:.1f} before, {load_after or 0:.1f} after; rnn, H 100, T 25, B 1, float32, "
        f"--impl manual, seed {TrainConfig().seed}, the built-in corpus"
    )
    one_run = " ".join(train_command("OPTIMIZER", "LR", args.steps, args.threads, "DIR"))
    print(f"Each row is one run: `python -m compare.train {one_run}`")
    print()
    print_table(runs, args.steps)
    print()
    print(
        "Losses in nats per character, read from each run's TensorBoard events (loss/train, every step; loss/val). "
        "ms/step: the training steps' own time (compare.train's chars/s); wall s: from step 1 to the last, "
        "logging, checkpoints and validation included."
    )
    if args.out:
        try:
            save_png(draw_optimizers(runs, args.steps), Path(args.out))
        except PlotError as error:
            raise UsageError(str(error)) from None
    return 0
