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
from tiny_runs import train_argv

from compare.model.checkpoint import load_checkpoint

IMPLS = ("manual", "torch")


def run_twice(directory: Path, dtype: str) -> list:
    """Two identical runs, as two processes started together: their run directories.

    Both implementations train side by side in each (one data order), 60 steps (an epoch is 42).
    """
    processes = {}
    for run_name in ("first", "second"):
        argv = train_argv(directory, run_name, impl="both", dtype=dtype, max_steps=60)
        processes[run_name] = subprocess.Popen(
            [sys.executable, "-m", "compare.train", *argv],
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
    for process in processes.values():
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0, stderr
    return [directory / "runs" / run_name for run_name in processes]


def loss_curve(impl_dir: Path) -> list:
    events = EventAccumulator(str(impl_dir), size_guidance={"scalars": 0})
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars("loss/train")]


@pytest.mark.exactness
@pytest.mark.slow  # four processes that import torch: about 15 s
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_same_flags_give_the_same_run_bit_for_bit(tmp_path, dtype):
    first, second = run_twice(tmp_path, dtype)
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
