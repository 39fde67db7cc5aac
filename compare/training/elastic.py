"""Elastic restarts: a training that torchrun restarted resumes from its run directory on its own.

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --max-restarts 3 ... -m compare.train --run-name my-run ...

With ``--max-restarts N``, when a worker dies torchrun stops the others and starts every worker
again with the same command line. Started again as typed, the command would begin at step 0
(or at the checkpoint --resume named, older than what the run has saved since). So under
``--max-restarts`` (TORCHELASTIC_MAX_RESTARTS > 0) a run directory that already holds a
latest.npz is continued, exactly as ``--resume <run directory>`` would. The test is on the
directory, not on TORCHELASTIC_RESTART_COUNT: torchrun counts restarts per machine, and a machine
whose own worker did not fail restarts with a count of 0, so the count differs between ranks
while the directory (on a file system every machine shares, as any resume needs) does not.
A run directory every attempt can name is needed: under ``--max-restarts`` the run must have a
``--run-name`` (or a ``--resume`` inside a run directory), since the default name is the first
number not yet taken under --logdir, which a restart would not find again.

An attempt that finds no latest.npz starts from the beginning, over whatever an attempt that died
before its first save of latest.npz left (a best.npz, event files): it is the same run begun again,
so the refusal to replace a run's checkpoints (compare.training.rundir) gives way. ``--overwrite`` is
refused under ``--max-restarts``: every attempt would begin by deleting what the ones before it saved.

(TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 is for torchrun itself: without it the restarted workers
wait forever on the rendezvous store of the first attempt, pytorch issue #135712.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from compare.cli.errors import UsageError
from compare.model.checkpoint import IMPL_DIRS, LATEST
from compare.training.config import TrainConfig
from compare.training.flags import parse_args
from compare.training.ranks import is_main_process
from compare.training.rundir import checkpoints_in


def max_restarts(environ: Mapping[str, str] = os.environ) -> int:
    return int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


def latest_in(run_dir: Path) -> bool:
    """Whether the run directory holds a latest.npz of either implementation."""
    return any((run_dir / impl / LATEST).is_file() for impl in IMPL_DIRS)


def restarted_config(argv: list[str], config: TrainConfig, environ: Mapping[str, str] = os.environ) -> TrainConfig:
    """``config`` for this attempt: under --max-restarts, with ``--resume <run directory>`` once it has a checkpoint.

    A restart that finds no checkpoint yet (the first attempt died before its first save)
    starts from the beginning, as the first attempt did. UsageError when restarts are allowed
    but the run directory could not be found again.
    """
    if max_restarts(environ) == 0:
        return config
    if config.run_name is None:
        raise UsageError(
            f"torchrun --max-restarts {max_restarts(environ)} restarts a failed run, which then resumes "
            "from its run directory: name it with --run-name NAME (the default name, the first free number "
            "under --logdir, would name a new directory on a restart)"
        )
    if config.overwrite:
        raise UsageError(
            f"torchrun --max-restarts {max_restarts(environ)} resumes a failed run from its run directory, which "
            "--overwrite would delete on every restart: leave out --overwrite and pass a new --run-name"
        )
    run_dir = Path(config.logdir) / config.run_name
    if not latest_in(run_dir):  # nothing to resume: begin again, over what an attempt left (the docstring)
        return replace(config, overwrite=True) if checkpoints_in(run_dir) else config
    resumed = parse_args([*argv, "--resume", str(run_dir)])  # the last --resume typed is the one argparse keeps
    if is_main_process(environ):
        attempt = environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        print(f"torchrun --max-restarts (this machine's restart {attempt}): resuming from {run_dir}")
    return resumed
