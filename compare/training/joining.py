"""Joining and leaving the ranks of one data-parallel run, and what a lost rank leaves behind."""

from __future__ import annotations

import datetime
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from compare.cli.errors import TrainingFailed, UsageError
from compare.model.checkpoint import LATEST, CheckpointError, checkpoint_step
from compare.training.distributed import DataParallel, RankLost, StopVote, short_reason
from compare.training.ranks import backend_for, batch_split_problem

if TYPE_CHECKING:
    from compare.training.config import TrainConfig
    from compare.training.stop import StopRequest

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What signal.signal takes and returns: a function, SIG_DFL or SIG_IGN, or None for a handler not set from Python.
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextmanager
def join_ranks(config: TrainConfig, stop: StopRequest) -> Iterator[DataParallel]:
    """This process's DataParallel for one training run.

    In a process torchrun started: check that the batch splits evenly, join the process group
    (timeout --dist-timeout), let Ctrl-C and SIGTERM be voted on (StopVote), and leave the group
    at the end. In any other process: a DataParallel of one rank, and nothing else.
    """
    parallel = DataParallel.from_environment(config.dist_timeout)
    if not parallel.launched:
        yield parallel
        return
    problem = batch_split_problem(config.batch_size, parallel.world_size)
    if config.loss_reduction == "sum":  # the ranks average their gradients: that is the mean loss's gradient
        problem = "--loss-reduction sum (--preset original) trains in one process: run it without torchrun"
    if problem:
        raise UsageError(problem)
    import torch
    import torch.distributed as dist

    if config.device == "cuda":
        torch.cuda.set_device(parallel.local_rank)
    try:
        dist.init_process_group(backend_for(config), timeout=datetime.timedelta(seconds=config.dist_timeout))
    except RuntimeError as error:  # the others never came (DistStoreError), or the address is taken
        raise TrainingFailed(
            f"rank {parallel.rank} could not join the other {parallel.world_size - 1} "
            f"within --dist-timeout {config.dist_timeout:g} s ({short_reason(error)})"
        ) from error
    parallel.stop_vote = StopVote(stop)
    previous_handlers = install_handlers(parallel.stop_vote.handle)
    try:
        yield parallel
    finally:
        install_handlers(previous_handlers)
        try:
            dist.destroy_process_group()
        except RuntimeError:  # a group whose peer is gone may fail to tear down: the error that ended the run stands
            pass


def install_handlers(handlers: SignalHandler | dict[int, SignalHandler]) -> dict[int, SignalHandler]:
    """Point SIGINT and SIGTERM at ``handlers`` (one handler, or a dict by signal); returns the previous ones."""
    if threading.current_thread() is not threading.main_thread():  # Python allows signal handlers only there
        return {}
    if not isinstance(handlers, dict):
        handlers = {number: handlers for number in STOP_SIGNALS}
    return {
        number: signal.signal(number, handler) for number, handler in handlers.items() if handler is not None
    }  # None: a handler not set from Python, which cannot be put back


def describe_checkpoint(path: Path) -> str:
    """What a rank that lost the others can say about the checkpoint rank 0 keeps at ``path``."""
    if not path.exists():
        return f"no checkpoint at {path} yet"
    try:
        return f"the last checkpoint, {path} (step {checkpoint_step(path)}), is intact"
    except CheckpointError as error:
        return f"the checkpoint {path} cannot be read ({error})"


def lost_rank_error(error: RankLost, run_dir: Path, impls: Iterable[str], latest: str) -> TrainingFailed:
    """``error`` with what the run leaves: the checkpoint each implementation can continue from."""
    kept = "; ".join(describe_checkpoint(run_dir / impl / latest) for impl in impls)
    return TrainingFailed(f"{error}; {kept}; after fixing the cause, continue with --resume {run_dir}")


@contextmanager
def naming_kept_checkpoints(run_dir: Path, impls: Iterable[str]) -> Iterator[None]:
    """Inside: a RankLost becomes the error a user needs, which also names the checkpoints kept."""
    try:
        yield
    except RankLost as error:
        raise lost_rank_error(error, run_dir, impls, LATEST) from error
