"""Run directories: which one a training writes, one training at a time in each, and what a kill leaves.

    <logdir>/<run-name>/.lock           held (flock) by the training that owns the run; holds its pid
    <logdir>/<run-name>/<impl>/*.npz    the checkpoints (compare.model.checkpoint)
    <logdir>/<run-name>/<dir>/events.out.tfevents.*, <impl>/config.json   TensorBoard's (compare.training.logger)

Rules (compare.training.config applies the first when it merges a resume's settings):

- a new training (no --resume) never replaces the checkpoints of a run directory it did not start,
  unless --overwrite says to: then what the earlier training left (checkpoints, events, config.json)
  is deleted first, so that nothing of it is taken for the new run's. The default run name is always
  a new directory (compare.training.loop.default_run_name).

- a resume writes into --logdir/--run-name when they are typed; otherwise into the run directory
  that holds the checkpoint it resumes from; a checkpoint kept outside any run directory starts a
  new run directory under --logdir (default runs/). The logdir and run name stored in the
  checkpoint are never used: a copy must not write into the run it was copied from.
- a resume never replaces a checkpoint of a later step than the one it starts from.
- one process trains into a run directory at a time (under torchrun, rank 0 holds the lock).
- temporary files of a save that was killed midway are removed when a training next opens the run.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from compare.cli.errors import UsageError
from compare.model.checkpoint import BEST, IMPL_DIRS, LATEST, CheckpointError, checkpoint_step, find_checkpoint

LOCK_FILE = ".lock"
# What compare.model.checkpoint.atomic_write names its temporary file: .<name>.<uuid4 hex>.tmp
TEMPORARY = re.compile(r"^\..+\.npz\.[0-9a-f]{32}\.tmp$")


def run_name_problem(name: str | None) -> str | None:
    """--run-name names one directory under --logdir: not a path, not '.', '..' or empty."""
    if name is None:
        return None
    separators = {"/", "\\", os.sep, os.altsep or "/", "\0"}
    if name in ("", ".", "..") or any(separator in name for separator in separators):
        return (
            f"--run-name {name!r} must be one plain directory name, made under --logdir "
            "(no '/', not '.', '..' or empty): e.g. --run-name my-run, and --logdir for where it goes"
        )
    return None


def resume_source(resume: str) -> Path:
    """The checkpoint ``--resume`` names (compare.model.checkpoint.find_checkpoint), or why there is none.

    A run directory that holds only best.npz (its latest.npz lost) is named as such, with the
    flag that resumes from it.
    """
    try:
        return find_checkpoint(resume)
    except CheckpointError as error:
        best = only_best(resume)
        if best is None:
            raise
        raise CheckpointError(
            f"{error}; it holds only {best} (the lowest validation loss so far): "
            f"to continue from that, pass --resume {best}"
        ) from error


def only_best(path: str) -> Path | None:
    if not Path(path).is_dir():
        return None
    try:
        return find_checkpoint(path, names=(BEST,))
    except CheckpointError:
        return None


@contextmanager
def owning(run_dir: Path) -> Iterator[None]:
    """Hold the exclusive lock on ``run_dir`` inside; UsageError, naming the holder, if another process has it."""
    if os.name != "posix":  # flock is POSIX; elsewhere runs are not locked
        yield
        return
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UsageError(
                f"{run_dir} is in use by {holder(handle)}, which is training into it; wait for it to "
                "finish (or stop it), or pass --run-name NAME to train into a new run directory"
            ) from None
        os.ftruncate(handle, 0)
        os.write(handle, f"{os.getpid()} {socket.gethostname()}\n".encode())
        try:
            yield
        finally:
            os.ftruncate(handle, 0)  # an empty lock file: no owner (the lock itself goes with the handle)
    finally:
        os.close(handle)


def holder(handle: int) -> str:
    """'process <pid>' (and its host, if not this one) from the lock file, as its owner wrote it."""
    os.lseek(handle, 0, os.SEEK_SET)
    words = os.read(handle, 1000).decode("utf-8", "replace").split()
    if not words:
        return "another process"  # it has just taken the lock and not written its pid yet
    host = f" on {words[1]}" if len(words) > 1 and words[1] != socket.gethostname() else ""
    return f"process {words[0]}{host}"


def remove_stray_temporaries(run_dir: Path) -> list[Path]:
    """Delete the temporary files that a save killed midway left next to the checkpoints; returns them."""
    removed = []
    for impl in IMPL_DIRS:
        for path in sorted((run_dir / impl).glob(".*.tmp")):
            if TEMPORARY.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def newer_checkpoint_problem(run_dir: Path, impls: Iterable[str], source: Path, step: int) -> str | None:
    """A resume from ``source`` (at ``step``) must not replace a checkpoint of ``run_dir`` of a later step."""
    for impl in impls:
        for name in (LATEST, BEST):
            path = run_dir / impl / name
            if not path.is_file() or path.resolve() == source.resolve():
                continue
            try:
                existing = checkpoint_step(path)
            except CheckpointError:  # a file that cannot be read holds nothing to lose
                continue
            if existing > step:
                return (
                    f"{path} is at step {existing}, newer than the checkpoint this resume starts from "
                    f"({source}, step {step}), and training here would replace it: pass --run-name NAME "
                    f"to continue from step {step} in a new run directory, or --resume {path} to "
                    f"continue from step {existing}"
                )
    return None


def checkpoints_in(run_dir: Path) -> list[Path]:
    """The checkpoints (latest.npz, best.npz of each implementation) that ``run_dir`` holds."""
    paths = (run_dir / impl / name for impl in IMPL_DIRS for name in (LATEST, BEST))
    return [path for path in paths if path.is_file()]


def described(path: Path, run_dir: Path) -> str:
    """'manual/latest.npz (step 60)': the checkpoint's name in its run and, if it can be read, its step."""
    try:
        return f"{path.relative_to(run_dir)} (step {checkpoint_step(path)})"
    except CheckpointError:
        return str(path.relative_to(run_dir))


def overwrite_problem(run_dir: Path) -> str | None:
    """A new training into ``run_dir`` would replace the checkpoints there: what it holds, and what to pass instead."""
    found = checkpoints_in(run_dir)
    if not found:
        return None
    # --resume of the directory takes latest.npz; where only best.npz is left, that file is what resumes
    resume = run_dir if any(path.name == LATEST for path in found) else found[0]
    return (
        f"{run_dir} already holds the checkpoints of a training ({', '.join(described(p, run_dir) for p in found)}), "
        f"which a new training would replace: pass --resume {resume} to continue it, --run-name NAME to train "
        "anew in a new run directory, or --overwrite to replace it"
    )


def clear_previous_run(run_dir: Path) -> list[Path]:
    """What an earlier training left in ``run_dir`` (checkpoints, event files, config.json), deleted; returns it."""
    removed = []
    for directory in sorted(path for path in run_dir.iterdir() if path.is_dir()):  # <impl>/, and both/'s events
        events = sorted(directory.glob("events.out.tfevents.*"))
        for path in [directory / LATEST, directory / BEST, directory / "config.json", *events]:
            if path.is_file():
                path.unlink()
                removed.append(path)
    return removed


@contextmanager
def opening(
    run_dir: Path,
    impls: list[str],
    resumed: tuple[Path, int] | None,
    is_main: bool,
    agree: Callable[[str], str],
    overwrite: bool = False,
) -> Iterator[None]:
    """Own ``run_dir`` for the body: lock it, clean it, and check that nothing it must keep would be replaced.

    ``resumed`` is the checkpoint a resume starts from and its step (None for a new run): a resume
    must not replace a newer checkpoint, a new run any checkpoint unless ``overwrite``. Only the
    main process (rank 0 under torchrun) touches the directory; ``agree`` hands its verdict to every
    rank, so that all of them stop with the same one-line error.
    """
    with ExitStack() as stack:
        problem, removed, replaced = "", [], []
        if is_main:
            try:
                stack.enter_context(owning(run_dir))
                removed = remove_stray_temporaries(run_dir)
                if resumed is not None:
                    problem = newer_checkpoint_problem(run_dir, impls, *resumed) or ""
                elif overwrite:
                    replaced = clear_previous_run(run_dir)
                else:
                    problem = overwrite_problem(run_dir) or ""
            except UsageError as error:
                problem = str(error)
            except OSError as error:
                problem = f"cannot lock {run_dir} ({error.strerror or error}); choose a --logdir you can write to"
        problem = agree(problem)
        if problem:
            raise UsageError(problem)
        if removed:
            files = "file" if len(removed) == 1 else "files"
            print(
                f"removed {len(removed)} temporary {files} left in {run_dir} by a save that was "
                f"interrupted: {', '.join(path.name for path in removed)}"
            )
        if replaced:
            print(
                f"a new training replaces the one in {run_dir}: deleted "
                f"{', '.join(str(path.relative_to(run_dir)) for path in replaced)}"
            )
        yield
