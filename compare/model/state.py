"""The state an engine exports and loads: what a checkpoint stores and a resume restores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EngineState:
    """Everything an engine needs to continue training exactly, as float64 NumPy arrays."""

    params: dict[str, np.ndarray]  # name -> array, see compare.model.init.param_shapes
    accumulators: dict[str, np.ndarray]  # AdaGrad's sum of squared gradients: same names and shapes as params
    updates: int  # AdaGrad steps taken (torch's 'step'; with lr_decay = 0 it changes no number)
    hidden: np.ndarray | None  # (L, P, B, H) state carried into the next chunk; None before any step
