"""Same seed and flags, same run: loss curves and final weights identical bit for bit.

Each run is a separate process, so nothing carries over between them (memory layout,
thread pools, hash seeds): what a user sees when they run the command twice.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from compare.checkpoint import load_checkpoint
from tiny_runs import train_argv

IMPLS = ("manual", "torch")


def run_training(directory: Path, run_name: str, dtype: str) -> Path:
    """Both implementations side by side (one process, one data order), 60 steps: the run directory."""
    argv = train_argv(directory, run_name, impl="both", dtype=dtype, max_steps=60)  # epochs are 42 steps
    result = subprocess.run([sys.executable, "-m", "compare.train", *argv], cwd=directory, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return directory / "runs" / run_name


def loss_curve(impl_dir: Path) -> list:
    events = EventAccumulator(str(impl_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("loss/train")]


@pytest.mark.slow  # four processes that import torch: about 20 s
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_same_flags_give_the_same_run_bit_for_bit(tmp_path, dtype):
    first, second = (run_training(tmp_path, name, dtype) for name in ("first", "second"))
    for impl in IMPLS:
        curve = loss_curve(first / impl)
        assert len(curve) == 60
        assert curve == loss_curve(second / impl), impl  # every logged loss, exactly
        final = [load_checkpoint(run / impl / "latest.npz") for run in (first, second)]
        for kind in ("params", "accumulators"):
            for name, value in getattr(final[0].engine, kind).items():
                # float64 in the checkpoint: the weights of a float32 run are stored exactly
                assert np.array_equal(value, getattr(final[1].engine, kind)[name]), (impl, kind, name)
        assert np.array_equal(final[0].engine.hidden, final[1].engine.hidden)
        assert final[0].progress.smooth_loss == final[1].progress.smooth_loss  # the float64 sum of every loss
        assert final[0].progress.val_loss == final[1].progress.val_loss
