"""The losses a run logged, read back from its TensorBoard event files.

A run directory holds runs/<run>/manual and runs/<run>/torch, whichever were trained, and
runs/<run>/both for a run trained with --impl both: the implementation error (agree/*) and
the trajectories' drift (chaos/*), both logged in log10.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from compare.model.checkpoint import IMPL_DIRS

SMOOTH_TAG = "loss/smooth"
VAL_TAG = "loss/val"
COMPARISON_TAGS = ("agree/grad_rel_max", "agree/loss", "chaos/max_abs_param")  # log10 values
BOTH_DIR = "both"


class PlotError(ValueError):
    """A run directory that cannot be plotted; the message says why."""


@dataclass
class Series:
    """One scalar tag of one event directory: values by step, and when each was logged."""

    steps: list[int]
    values: list[float]
    wall_times: list[float] = field(default_factory=list)  # seconds since the epoch, as TensorBoard keeps them


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
    impls: list[ImplCurves]  # in IMPL_DIRS order
    comparison: dict[str, Series] = field(default_factory=dict)  # tag -> log10 Series; empty but for --impl both


def read_scalars(directory: Path, tags: Iterable[str]) -> dict[str, Series]:
    """{tag: Series} for the ``tags`` present in the event files of ``directory``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})  # 0: keep every point
    accumulator.Reload()
    present = set(accumulator.Tags()["scalars"])
    series = {}
    for tag in tags:
        if tag in present:
            events = accumulator.Scalars(tag)
            series[tag] = Series(
                [event.step for event in events],
                [event.value for event in events],
                [event.wall_time for event in events],
            )
    return series


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
        raise PlotError(
            f"{run_dir}: no {SMOOTH_TAG} in {' or '.join(IMPL_DIRS)}/; "
            f"expected a run directory written by python -m compare.train (runs/<run>)"
        )
    comparison = read_scalars(run_dir / BOTH_DIR, COMPARISON_TAGS) if (run_dir / BOTH_DIR).is_dir() else {}
    return RunCurves(run_dir.resolve().name, impls, comparison)
