"""The loss plot of a run, as the original write-up's Figure 2 showed its training.

    python -m compare.plot runs/<run>                  # writes runs/<run>/loss.png
    python -m compare.plot runs/<run> --out loss.png --width 9 --height 6 --dpi 120

Reads the TensorBoard event files that compare.train wrote (runs/<run>/manual and
runs/<run>/torch, whichever exist) and draws, for each implementation, the smooth
training loss as a line and the validation loss as dots, in nats per character. A run
trained with --impl both also has runs/<run>/diff: a second panel then shows how far
the implementations drifted apart, on a log scale.

matplotlib is an optional extra: pip install -e ".[plot]".
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

from compare.checkpoint import IMPL_DIRS

SMOOTH_TAG = "loss/smooth"
VAL_TAG = "loss/val"
DRIFT_TAGS = ("diff/max_abs_param", "diff/loss")
DRIFT_DIR = "diff"
# The two implementations train to the same curve, so the second is dashed over the first.
IMPL_STYLES = {"manual": {"color": "#1f77b4", "linestyle": "-"}, "torch": {"color": "#ff7f0e", "linestyle": "--"}}
# Not the implementations' colours: these lines are about both. The per-step loss difference is
# noisy, so it is drawn thin and translucent under the parameter difference.
DRIFT_STYLES = {
    "diff/max_abs_param": {"label": "largest parameter difference", "color": "#2ca02c", "linewidth": 1.4},
    "diff/loss": {"label": "training loss difference", "color": "#7f7f7f", "linewidth": 0.6, "alpha": 0.6},
}


class PlotError(ValueError):
    """A run directory that cannot be plotted; the message says why."""


@dataclass
class Series:
    """One scalar tag of one event directory: values by step."""

    steps: list
    values: list


@dataclass
class ImplCurves:
    """The losses one implementation logged."""

    impl: str
    smooth: Series  # loss/smooth: the 0.999 moving average of the training loss
    val: Series  # loss/val: the held-out text


@dataclass
class RunCurves:
    """Everything the figure is drawn from."""

    run_name: str
    impls: list  # ImplCurves, in IMPL_DIRS order
    drift: dict = field(default_factory=dict)  # tag -> Series; empty unless trained with --impl both


def read_scalars(directory: Path, tags) -> dict:
    """{tag: Series} for the ``tags`` present in the event files of ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    present = set(accumulator.Tags()["scalars"])
    return {tag: Series([event.step for event in accumulator.Scalars(tag)],
                        [event.value for event in accumulator.Scalars(tag)])
            for tag in tags if tag in present}


def read_run(run_dir: str | Path) -> RunCurves:
    """The curves of runs/<run>; PlotError if it holds no implementation's losses."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise PlotError(f"{run_dir}: no such run directory")
    impls = []
    for impl in IMPL_DIRS:
        scalars = read_scalars(run_dir / impl, (SMOOTH_TAG, VAL_TAG)) if (run_dir / impl).is_dir() else {}
        if SMOOTH_TAG in scalars:
            impls.append(ImplCurves(impl, scalars[SMOOTH_TAG], scalars.get(VAL_TAG, Series([], []))))
    if not impls:
        raise PlotError(f"{run_dir}: no {SMOOTH_TAG} in {' or '.join(IMPL_DIRS)}/; "
                        f"expected a run directory written by python -m compare.train (runs/<run>)")
    drift = read_scalars(run_dir / DRIFT_DIR, DRIFT_TAGS) if (run_dir / DRIFT_DIR).is_dir() else {}
    return RunCurves(run_dir.resolve().name, impls, drift)


def draw_figure(curves: RunCurves, width: float, height: float, dpi: int):
    """A matplotlib Figure: the losses on top, the drift (when there is one) below."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    panels = 2 if curves.drift else 1
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False, height_ratios=[2, 1][:panels])[:, 0]
    draw_losses(axes[0], curves)
    if curves.drift:
        draw_drift(axes[1], curves.drift)
    axes[-1].set_xlabel("training step")
    return figure


def draw_losses(axes, curves: RunCurves) -> None:
    for impl in curves.impls:
        style = IMPL_STYLES[impl.impl]
        axes.plot(impl.smooth.steps, impl.smooth.values, label=f"{impl.impl}: smooth training loss",
                  linewidth=1.4, **style)
        if impl.val.steps:
            axes.plot(impl.val.steps, impl.val.values, label=f"{impl.impl}: validation loss", marker="o",
                      markersize=4, linewidth=0.8, color=style["color"], linestyle=":")
    axes.set_title(f"{curves.run_name}: loss")
    axes.set_ylabel("loss (nats per character)")
    axes.grid(True, alpha=0.3)
    axes.legend()


def draw_drift(axes, drift: dict) -> None:
    for tag, series in drift.items():
        # A log scale cannot show 0 (bit-identical steps), so those points are left out.
        positive = [(step, value) for step, value in zip(series.steps, series.values) if value > 0]
        if positive:
            steps, values = zip(*positive)
            axes.plot(steps, values, zorder=2 if tag == "diff/max_abs_param" else 1, **DRIFT_STYLES[tag])
    axes.set_yscale("log")
    axes.set_title("manual vs torch: drift")
    axes.set_ylabel("absolute difference")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()


@dataclass
class PlotConfig:
    run_dir: str
    out: str | None = None  # None: <run_dir>/loss.png
    width: float = 8.0  # inches
    height: float = 6.0  # inches
    dpi: int = 100


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage block) before exiting with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> PlotConfig:
    parser = OneLineErrorParser(prog="python -m compare.plot",
                                description="Plot a run's smooth training loss and validation loss per step.")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run directory written by compare.train (runs/<run>)")
    output = parser.add_argument_group("output")
    output.add_argument("--out", default=None, help="the PNG to write (default: RUN_DIR/loss.png)")
    output.add_argument("--width", type=float, default=PlotConfig.width,
                        help="figure width in inches (default: %(default)s)")
    output.add_argument("--height", type=float, default=PlotConfig.height,
                        help="figure height in inches (default: %(default)s)")
    output.add_argument("--dpi", type=int, default=PlotConfig.dpi,
                        help="pixels per inch: the PNG is width*dpi by height*dpi pixels (default: %(default)s)")
    config = PlotConfig(**vars(parser.parse_args(argv)))
    for flag, value in (("--width", config.width), ("--height", config.height), ("--dpi", config.dpi)):
        if not (math.isfinite(value) and value > 0):
            parser.error(f"{flag} must be a positive number, got {value}")
    return config


def main(argv=None) -> int:
    config = parse_args(argv)
    program = "python -m compare.plot"
    out = Path(config.out) if config.out else Path(config.run_dir) / "loss.png"
    try:
        require_matplotlib()
        curves = read_run(config.run_dir)
        save_png(draw_figure(curves, config.width, config.height, config.dpi), out)
    except PlotError as error:
        print(f"{program}: error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


def require_matplotlib() -> None:
    """PlotError with the install command, before any time is spent reading events."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise PlotError('matplotlib is not installed; pip install -e ".[plot]"') from None


def save_png(figure, out: Path) -> None:
    try:
        figure.savefig(out, format="png")  # Figure.savefig renders with Agg: no display needed
    except OSError as error:
        raise PlotError(f"{out}: cannot write it ({error.strerror or error})") from None


if __name__ == "__main__":
    sys.exit(main())
