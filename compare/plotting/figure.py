"""The loss figure: smooth and validation loss per implementation, and the drift panel.

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
# Not the implementations' colours: these lines are about both. The per-step loss difference is
# noisy, so it is drawn thin and translucent under the parameter difference.
DRIFT_STYLES: dict[str, dict[str, Any]] = {  # keyword arguments of Axes.plot, per drift tag
    "diff/max_abs_param": {"label": "largest parameter difference", "color": "#2ca02c", "linewidth": 1.4},
    "diff/loss": {"label": "training loss difference", "color": "#7f7f7f", "linewidth": 0.6, "alpha": 0.6},
}


def draw_figure(curves: RunCurves, width: float, height: float, dpi: int) -> Figure:
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


def draw_drift(axes: Axes, drift: dict[str, Series]) -> None:
    for tag, series in drift.items():
        # A log scale cannot show 0 (bit-identical steps), so those points are left out.
        positive = [(step, value) for step, value in zip(series.steps, series.values, strict=True) if value > 0]
        if positive:
            steps, values = zip(*positive, strict=True)
            axes.plot(steps, values, zorder=2 if tag == "diff/max_abs_param" else 1, **DRIFT_STYLES[tag])
    axes.set_yscale("log")
    axes.set_title("manual vs torch: drift")
    axes.set_ylabel("absolute difference")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()


def require_matplotlib() -> None:
    """PlotError with the install command, before any time is spent reading events."""
    try:
        import matplotlib  # noqa: F401  # imported only to learn whether it is installed
    except ImportError:
        raise PlotError('matplotlib is not installed; pip install -e ".[plot]"') from None


def save_png(figure: Figure, out: Path) -> None:
    try:
        figure.savefig(out, format="png")  # Figure.savefig renders with Agg: no display needed
    except OSError as error:
        raise PlotError(f"{out}: cannot write it ({error.strerror or error})") from None
