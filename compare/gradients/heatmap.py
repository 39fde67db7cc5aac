"""gradcheck --diagnose's picture: log10 of the per-step relative errors, time step x row.

The rows of each layer: dL/dx_proj_t per gate block, then (a cell that traces) dL/dh_t and the carry
into each part of the carried state (docs/cells.md#per-step-gradients-trace).

matplotlib is an optional extra (pip install -e ".[plot]"); only this module needs it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from compare.cli.errors import UsageError
from compare.gradients.backward_location import AGREE, Diagnosis

FLOOR = 1e-17  # errors of exactly 0 (a block that is zero on both sides) are drawn at this value, below rounding


def save_heatmap(diagnosis: Diagnosis, path: Path) -> None:
    """Write the heat map PNG: one row per (layer, quantity) (diagnosis.heat_rows), one column per time step 1..T."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display is needed or wanted
        import matplotlib.pyplot as plt
    except ImportError:
        raise UsageError('--heatmap needs matplotlib: pip install -e ".[plot]"') from None
    assert diagnosis.heat is not None  # the diagnosis got as far as the per-step comparison
    heat = np.log10(np.maximum(diagnosis.heat, FLOOR))
    rows, steps = heat.shape
    figure, axes = plt.subplots(figsize=(4.5 + 0.5 * steps, 2.0 + 0.4 * rows))
    image = axes.imshow(heat, aspect="auto", cmap="magma", vmin=np.log10(FLOOR), vmax=0)
    axes.set_xticks(range(steps), [str(t + 1) for t in range(steps)])
    axes.set_yticks(range(rows), diagnosis.heat_rows)
    axes.set_xlabel("time step t (the backward runs from the right)")
    axes.set_ylabel("dL/dx_proj_t of the gate, or")
    if diagnosis.step is not None and diagnosis.layer is not None:
        axes.set_title(
            f"first wrong: layer {diagnosis.layer}, step {diagnosis.step}, {diagnosis.quantity}, "
            f"gate {', '.join(diagnosis.gates)}"
        )
    colorbar = figure.colorbar(image, ax=axes)
    colorbar.set_label(f"log10 relative error\n(wrong above {np.log10(AGREE):.0f})")
    figure.tight_layout()
    try:
        figure.savefig(path, dpi=100)
    except OSError as error:
        raise UsageError(f"--heatmap {path}: cannot write it ({error.strerror or error})") from None
    finally:
        plt.close(figure)
