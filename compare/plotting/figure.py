"""The loss figure: smooth and validation loss per implementation; with --impl both, the comparison panel.

matplotlib is an optional extra (pip install -e ".[plot]"); only this module needs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.plotting.events import PlotError, RunCurves, Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# The two implementations train to the same curve, so the second is dashed over the first.
IMPL_STYLES: dict[str, dict[str, Any]] = {  # keyword arguments of Axes.plot, per implementation
    "manual": {"color": "#1f77b4", "linestyle": "-"},
    "torch": {"color": "#ff7f0e", "linestyle": "--"},
}
# Not the implementations' colours: these lines are about both. Each label is the line's caption.
COMPARISON_STYLES: dict[str, dict[str, Any]] = {  # keyword arguments of Axes.plot, per comparison tag
    "agree/grad_rel_max": {
        "label": "implementation error: largest relative gradient difference, same weights, state and batch",
        "color": "#2ca02c",
        "linewidth": 1.4,
    },
    "agree/loss": {
        "label": "implementation error: relative loss difference, same weights, state and batch",
        "color": "#98df8a",
        "linewidth": 0.8,
    },
    "chaos/max_abs_param": {
        "label": "chaos: largest parameter difference of the two free-running trajectories",
        "color": "#d62728",
        "linewidth": 1.4,
    },
}


def draw_figure(curves: RunCurves, width: float, height: float, dpi: int) -> Figure:
    """A matplotlib Figure: the losses on top, the comparison (when there is one) below."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    panels = 2 if curves.comparison else 1
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    axes = figure.subplots(panels, 1, sharex=True, squeeze=False, height_ratios=[3, 2][:panels])[:, 0]
    draw_losses(axes[0], curves)
    if curves.comparison:
        draw_comparison(axes[1], curves.comparison)
    axes[-1].set_xlabel("training step")
    return figure


def draw_losses(axes: Axes, curves: RunCurves) -> None:
    for impl in curves.impls:
        style = IMPL_STYLES[impl.impl]
        axes.plot(
            impl.smooth.steps, impl.smooth.values, label=f"{impl.impl}: smooth training loss", linewidth=1.4, **style
        )
        if impl.val.steps:
            axes.plot(
                impl.val.steps,
                impl.val.values,
                label=f"{impl.impl}: validation loss",
                marker="o",
                markersize=4,
                linewidth=0.8,
                color=style["color"],
                linestyle=":",
            )
    axes.set_title(f"{curves.run_name}: loss")
    axes.set_ylabel("loss (nats per character)")
    axes.grid(True, alpha=0.3)
    axes.legend()


def draw_comparison(axes: Axes, comparison: dict[str, Series]) -> None:
    """The implementation error (flat, at rounding level) and the chaos (growing), on one log scale."""
    for tag, series in comparison.items():
        # log10; an exact 0 (bit-identical) was logged a decade below the dtype's rounding, and is drawn there
        logged = zip(series.steps, series.values, strict=True)
        points = [(step, 10.0**value) for step, value in logged]
        if points:
            steps, values = zip(*points, strict=True)
            axes.plot(steps, values, **COMPARISON_STYLES[tag])
    axes.set_yscale("log")
    axes.set_title("manual vs torch: implementation error (flat) and chaos (growing)")
    axes.set_ylabel("difference")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small")


def require_matplotlib() -> None:
    """PlotError with the install command, before any time is spent reading events."""
    try:
        import matplotlib  # noqa: F401  # imported only to learn whether it is installed
    except ImportError:
        raise PlotError('matplotlib is not installed; pip install -e ".[plot]"') from None


def figure_problem(out: str | Path | None) -> str | None:
    """Why a command's --out figure could not be drawn (no directory to write it in, no matplotlib), or None:
    asked before the work, not after it."""
    if not out:
        return None
    if not Path(out).absolute().parent.is_dir():
        return f"--out {out}: no such directory to write it in"
    try:
        require_matplotlib()
    except PlotError as error:
        return f"--out: {error}"
    return None


def save_png(figure: Figure, out: Path) -> None:
    try:
        figure.savefig(out, format="png")  # Figure.savefig renders with Agg: no display needed
    except OSError as error:
        raise PlotError(f"{out}: cannot write it ({error.strerror or error})") from None
