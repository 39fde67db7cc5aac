"""docs/forward.md's figures: the cost of the four routes against H, and truncation's error against K.

The cost figure (bench --rtrl --out): time and peak memory per step against H, log-log, one
curve per route with its fitted slope in the legend, and the theory's slope as a dashed guide
through the route's largest size (where the asymptotics should hold). The truncation figure
(gradflow --truncation --out): per cell, the relative error and 1 - cosine of the truncated
gradient against K on top, and the gradient-flow curve g_k / g_0 against k below, both log-log.
matplotlib is an optional extra, as for compare.plot.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from compare.plotting.flow_figure import STATE_STYLES

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

ROUTE_COLOURS = {"bptt": "#1f77b4", "rtrl": "#d62728", "reverse": "#2ca02c", "forward": "#ff7f0e"}
QUANTITIES = (("time per step (s)", 1.0), ("peak memory (MB)", 1e-6))  # (axis label, unit from s or bytes)


def draw_cost(
    found: dict[str, dict[int, tuple[float, int | None]]],
    fits: dict[str, tuple[tuple[float, float] | None, tuple[float, float] | None]],
    theory: dict[str, tuple[int, int | None]],
    title: str,
) -> Figure:
    """Two panels, time and memory; ``found`` route -> H -> (seconds, peak bytes or None) as bench --rtrl measured,
    ``fits`` route -> ((time slope over all H, over the two largest) or None, the same for memory),
    ``theory`` route -> (time exponent, memory exponent or None)."""
    from matplotlib.figure import Figure  # no pyplot: no GUI backend, no global figure list

    figure = Figure(figsize=(12.0, 4.5), dpi=100, layout="constrained")
    panels = figure.subplots(1, 2)
    measured_sizes = sorted({size for measured in found.values() for size in measured})
    for which, (axes, (label, unit)) in enumerate(zip(panels, QUANTITIES, strict=True)):
        for route, measured in found.items():
            fit, exponent = fits[route][which], theory[route][which]
            points = [(size, values[which]) for size, values in measured.items() if values[which] is not None]
            if fit is None or exponent is None or not points:
                continue
            sizes = np.array([size for size, _ in points], dtype=float)
            amounts = np.array([amount for _, amount in points], dtype=float) * unit
            colour = ROUTE_COLOURS[route]
            axes.plot(
                sizes,
                amounts,
                marker="o",
                color=colour,
                label=f"{route}: slope {fit[0]:.2f} (all H), {fit[1]:.2f} (two largest)",
            )
            guide = amounts[-1] * (sizes / sizes[-1]) ** exponent  # through the largest H, the theory's slope
            axes.plot(
                sizes, guide, color=colour, linestyle="--", linewidth=0.8, label=f"{route}: H^{exponent} (theory)"
            )
        axes.set_xscale("log", base=2)
        axes.set_xticks(measured_sizes, labels=[str(size) for size in measured_sizes])
        axes.minorticks_off()
        axes.set_yscale("log")
        axes.set_xlabel("hidden size H")
        axes.set_ylabel(label)
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize="small")
    panels[0].set_title(f"{title}: time per step")
    panels[1].set_title("peak memory (hand-written routes; tracemalloc)")
    return figure


def draw_truncation(tables: dict[str, list], flows: dict[str, np.ndarray]) -> Figure:
    """A column per cell: the truncated gradient's error against K on top, g_k / g_0 against k below.

    ``tables`` and ``flows`` are keyed by model, "<cell> <state>" (state init or trained), as gradflow --truncation
    prints them: ``tables[model]`` its TruncationRows (compare.gradients.truncation, which draws through this
    module, so it is not imported here), ``flows[model]`` g_k / g_0 for k = 0..the longest K.
    """
    from matplotlib.figure import Figure

    cells = list(dict.fromkeys(model.split()[0] for model in tables))
    figure = Figure(figsize=(4.5 * len(cells), 7.0), dpi=100, layout="constrained")
    grid = figure.subplots(2, len(cells), squeeze=False, sharex="col")
    for column, cell in enumerate(cells):
        error_axes, flow_axes = grid[0, column], grid[1, column]
        for model, rows in tables.items():
            if model.split()[0] == cell:
                state = model.split()[1]
                draw_errors(error_axes, rows, STATE_STYLES[state], state)
                draw_reach(flow_axes, flows[model], STATE_STYLES[state], state)
        error_axes.set_title(cell)
        flow_axes.set_xlabel("K (characters per chunk); k (lag)")
        for axes in (error_axes, flow_axes):
            axes.set_xscale("log")
            axes.set_yscale("log")
            axes.grid(True, which="major", alpha=0.3)
            axes.legend(fontsize="small")
    grid[0, 0].set_ylabel("truncated against exact gradient (U, W, b)")
    grid[1, 0].set_ylabel(r"$\|\partial L_T / \partial h_{T-k}\| \;/\; \|\partial L_T / \partial h_T\|$")
    return figure


def draw_errors(axes: Axes, rows: list, style: dict[str, Any], state: str) -> None:
    """||g_K - g|| / ||g|| (solid) and 1 - cosine (dotted) against K; a log scale leaves out an exact 0."""
    lengths = np.array([row.length for row in rows], dtype=float)
    errors = np.array([row.relative_error for row in rows])
    misalignment = np.array([1.0 - row.cosine for row in rows])
    shown = errors > 0
    axes.plot(lengths[shown], errors[shown], marker="o", label=f"{state}: relative error", **style)
    shown = misalignment > 0
    axes.plot(lengths[shown], misalignment[shown], marker="s", linestyle=":", label=f"{state}: 1 - cosine", **style)


def draw_reach(axes: Axes, flow: np.ndarray, style: dict[str, Any], state: str) -> None:
    """g_k / g_0 for k >= 1 (k = 0 is 1, and a log axis has no 0); an underflow to 0 is left out."""
    lags = np.arange(len(flow))
    shown = (lags > 0) & (flow > 0)
    axes.plot(lags[shown], flow[shown], linewidth=1.4, label=f"{state}: gradient flow", **style)
