"""The gradient-flow figure: g_k / g_0 against the lag k, one panel per cell, log scale.

The hand-written curve is a line, autograd's is markers on it (every few lags, so that the
line stays visible); initialization and trained weights in two colours. matplotlib is an
optional extra, as for compare.plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compare.gradients.flow import THRESHOLD
from compare.gradients.flow_run import Curve

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

STATE_STYLES: dict[str, dict[str, Any]] = {  # keyword arguments of Axes.plot, per state
    "init": {"color": "#1f77b4"},
    "trained": {"color": "#d62728"},
}
MARKERS_PER_CURVE = 25  # autograd markers shown per curve


def draw_flow(curves: list[Curve], width: float = 12.0, height: float = 4.0, dpi: int = 100) -> Figure:
    """One panel per cell, in the order the curves come."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    cells = list(dict.fromkeys(curve.cell for curve in curves))
    figure = Figure(figsize=(width, height), dpi=dpi, layout="constrained")
    panels = figure.subplots(1, len(cells), squeeze=False)[0]  # own y ranges: a vanilla RNN falls far faster
    for axes, cell in zip(panels, cells, strict=True):
        for curve in curves:
            if curve.cell == cell:
                draw_curve(axes, curve)
        axes.axhline(THRESHOLD, color="#7f7f7f", linestyle="--", linewidth=0.8, label=f"{THRESHOLD:g} of k = 0")
        axes.set_yscale("log")
        axes.set_title(cell)
        axes.set_xlabel("lag k (steps back from the last step T)")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize="small")
    panels[0].set_ylabel(r"$\|\partial L_T / \partial h_{T-k}\| \;/\; \|\partial L_T / \partial h_T\|$")
    return figure


def draw_curve(axes: Axes, curve: Curve) -> None:
    """The manual line and the autograd markers of one curve, both divided by the manual g_0."""
    lags = np.arange(len(curve.manual))
    scale = curve.manual[0]
    shown = curve.manual > 0  # a log scale cannot show 0 (an underflow): those lags are left out
    style = STATE_STYLES[curve.state]
    axes.plot(lags[shown], curve.manual[shown] / scale, linewidth=1.4, label=f"{curve.state}: manual", **style)
    every = max(1, len(lags) // MARKERS_PER_CURVE)
    marked = shown & (lags % every == 0) & (curve.autograd > 0)
    axes.plot(
        lags[marked],
        curve.autograd[marked] / scale,
        linestyle="none",
        marker="o",
        markersize=5,
        markerfacecolor="none",
        label=f"{curve.state}: autograd",
        **style,
    )
