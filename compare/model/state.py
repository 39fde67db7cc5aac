"""The state an engine exports and loads: what a checkpoint stores and a resume restores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# what --optimizer names; Adam alone keeps EngineState.moments, Hessian-free (hf) keeps only EngineState.damping
OPTIMIZERS = ("adagrad", "rmsprop", "adam", "hf")
# parameter-sized arrays each optimizer holds beside the parameters and their gradients, at the least: one
# statistic (AdaGrad, RMSProp), two moments (Adam), or CG's d, r, p, G p and (G + lambda I) p during a step (HF)
OPTIMIZER_ARRAYS = {"adagrad": 1, "rmsprop": 1, "adam": 2, "hf": 5}


@dataclass
class EngineState:
    """Everything an engine needs to continue training exactly, as float64 NumPy arrays."""

    params: dict[str, np.ndarray]  # name -> array, see compare.model.init.param_shapes
    # the optimizer's statistic of squared gradients, same names and shapes as params: AdaGrad's sum,
    # RMSProp's running mean, Adam's second moment; empty for Hessian-free, which keeps none
    accumulators: dict[str, np.ndarray]
    updates: int  # optimizer steps taken (torch's 'step'): Adam's bias correction reads it
    hidden: np.ndarray | None  # (L, P, B, H) state carried into the next chunk; None before any step
    moments: dict[str, np.ndarray] | None = None  # Adam's first moment (None for the other optimizers)
    damping: float | None = None  # Hessian-free's Levenberg-Marquardt lambda (None for the other optimizers)
