"""Elastic restarts: a training that torchrun restarted resumes from its run directory on its own.

    TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 torchrun --max-restarts 3 ... -m compare.train --run-name my-run ...

With ``--max-restarts N``, when a worker dies torchrun stops the others and starts every worker
again with the same command line, TORCHELASTIC_RESTART_COUNT counting the restarts. Started
again as typed, the command would begin at step 0 (or at the checkpoint --resume named, older
than what the run has saved since). So a restarted worker resumes from the latest checkpoint
of its run directory instead, exactly as ``--resume <run directory>`` would. That needs a run
directory that every attempt can name: under ``--max-restarts`` the run must have a
``--run-name`` (or a ``--resume`` inside a run directory), since the default name holds the
time of the first attempt, which a restart cannot know.

(TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 is for torchrun itself: without it the restarted workers
wait forever on the rendezvous store of the first attempt, pytorch issue #135712.)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from compare.cli.errors import UsageError
from compare.model.checkpoint import IMPL_DIRS, LATEST
from compare.training.config import TrainConfig, parse_args
from compare.training.ranks import is_main_process


def restart_count(environ: Mapping[str, str] = os.environ) -> int:
    """How many times torchrun has restarted this worker's group (0: the first attempt, or no torchrun)."""
    return int(environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def max_restarts(environ: Mapping[str, str] = os.environ) -> int:
    return int(environ.get("TORCHELASTIC_MAX_RESTARTS", "0"))


def latest_in(run_dir: Path) -> bool:
    """Whether the run directory holds a latest.npz of either implementation."""
    return any((run_dir / impl / LATEST).is_file() for impl in IMPL_DIRS)


def restarted_config(argv: list[str], config: TrainConfig, environ: Mapping[str, str] = os.environ) -> TrainConfig:
    """``config`` for this attempt: on a restart, the typed flags plus ``--resume <run directory>``.

    A restart that finds no checkpoint yet (the first attempt died before its first save)
    starts from the beginning, as the first attempt did. UsageError when restarts are allowed
    but the run directory could not be found again.
    """
    if max_restarts(environ) > 0 and config.run_name is None:
        raise UsageError(
            f"torchrun --max-restarts {max_restarts(environ)} restarts a failed run, which then resumes "
            "from its run directory: name it with --run-name NAME (the default name holds the start time, "
            "which a restart cannot know)"
        )
    if restart_count(environ) == 0:
        return config
    assert config.run_name is not None  # a restart needs max_restarts > 0, and the check above
    run_dir = Path(config.logdir) / config.run_name
    if not latest_in(run_dir):
        return config
    resumed = parse_args([*argv, "--resume", str(run_dir)])  # the last --resume typed is the one argparse keeps
    if is_main_process(environ):
        print(f"torchrun restarted this run (restart {restart_count(environ)}): resuming from {run_dir}")
    return resumed
