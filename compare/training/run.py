"""A run directory and what is in it: the Run the training loop works with, its checkpoints saved and restored,
the directory's lock and rules, and a run that torchrun restarted.

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
so the refusal to replace a run's checkpoints (above) gives way. ``--overwrite`` is
refused under ``--max-restarts``: every attempt would begin by deleting what the ones before it saved.

(TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1 is for torchrun itself: without it the restarted workers
wait forever on the rendezvous store of the first attempt, pytorch issue #135712.)"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from compare.cli.errors import TrainingFailed, UsageError
from compare.data.corpus import StreamBatches, Vocab
from compare.model.checkpoint import (
    BEST,
    IMPL_DIRS,
    LATEST,
    Checkpoint,
    CheckpointError,
    RunProgress,
    checkpoint_step,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from compare.training.config import TrainConfig, config_conflicts, parse_args
from compare.training.parallel import is_main_process

if TYPE_CHECKING:
    from compare.model.engines import Engine
    from compare.training.agreement import Verdict
    from compare.training.config import ThreadChoice


LOCK_FILE = ".lock"
# What compare.model.checkpoint.atomic_write names its temporary file: .<name>.<uuid4 hex>.tmp
TEMPORARY = re.compile(r"^\..+\.npz\.[0-9a-f]{32}\.tmp$")


@dataclass
class Run:
    """Everything the training loop works with."""

    config: TrainConfig
    vocab: Vocab
    data_sha256: str
    batches: StreamBatches
    val_batches: StreamBatches | None  # None with --val-frac 0
    engines: list[Engine]
    progress: dict[str, RunProgress]  # impl name -> its progress
    initial_loss: float  # ln V: the loss of a uniform prediction, and roughly of the initial weights
    losses: dict[str, list[float]] = field(default_factory=dict)  # impl name -> training loss of every step run here
    saved_steps: dict[str, int] = field(default_factory=dict)  # impl name -> step of the latest.npz written here
    is_main: bool = True  # writes files and prints: the only process, or rank 0 under torchrun
    torch_threads: ThreadChoice | None = None  # what torch ran on and why (torch/config.json records it)
    agreement: Verdict | None = None  # --impl both: the largest implementation error measured in this run so far

    @property
    def run_dir(self) -> Path:
        assert self.config.run_name is not None  # train() names the run before it builds one
        return Path(self.config.logdir) / self.config.run_name

    def save(self, engine: Engine, step: int, filename: str = LATEST) -> None:
        """Write ``engine``'s checkpoint to <run_dir>/<impl>/<filename>."""
        import torch  # here, not at the top: a bad --data is reported before torch's import second

        checkpoint = Checkpoint(
            impl=engine.name,
            step=step,
            vocab=self.vocab.chars,
            data_sha256=self.data_sha256,
            config=asdict(self.config),
            progress=self.progress[engine.name],
            engine=engine.export_state(),
            torch_rng_state=torch.get_rng_state().numpy(),
        )
        path = self.run_dir / engine.name / filename
        try:
            if self.is_main:  # one writer; under torchrun every rank took part in export_state's gather
                save_checkpoint(path, checkpoint)
        except OSError as error:  # disk full, quota, file system gone: the old file is still whole
            then = "start again" if self.nothing_saved(engine.name) else f"continue with --resume {self.run_dir}"
            raise TrainingFailed(
                f"could not save {path} at step {step} ({error.strerror or error}); "
                f"{self.kept_checkpoint(engine.name)}: free some space, then {then}"
            ) from error
        if filename == LATEST:
            self.saved_steps[engine.name] = step

    def nothing_saved(self, impl: str) -> bool:
        return impl not in self.saved_steps and not self.config.resume

    def kept_checkpoint(self, impl: str) -> str:
        """What a failed run leaves to continue from, for its error message."""
        if impl in self.saved_steps:
            path = self.run_dir / impl / LATEST
            return f"the last good checkpoint, {path} (step {self.saved_steps[impl]}), is intact"
        if self.config.resume:
            return "the checkpoint it resumed from is intact"
        return "no checkpoint had been saved yet"


def restore(run: Run) -> int:
    """Load each engine's checkpoint from ``run.config.resume``; returns the step they are at."""
    import torch  # as in Run.save

    assert run.config.resume is not None  # train() restores only a run given --resume
    checkpoints = [
        load_checkpoint(find_checkpoint(run.config.resume, engine.name), run.config.cell) for engine in run.engines
    ]
    for checkpoint in checkpoints:
        if checkpoint.data_sha256 != run.data_sha256:
            raise CheckpointError(
                "the training text differs from the one the checkpoint was trained on; "
                "pass the same --data (and --encoding) as that run"
            )
        conflicts = config_conflicts(checkpoint.config, asdict(run.config))
        if conflicts:
            raise CheckpointError(f"settings differ from the checkpoint's: {'; '.join(conflicts)}")
    if len({checkpoint.step for checkpoint in checkpoints}) > 1:
        raise CheckpointError(
            f"the implementations' checkpoints are at different steps: "
            f"{[checkpoint.step for checkpoint in checkpoints]}"
        )
    for engine, checkpoint in zip(run.engines, checkpoints, strict=True):
        engine.load_state(checkpoint.engine)
        run.progress[engine.name] = checkpoint.progress
    torch.set_rng_state(torch.from_numpy(checkpoints[0].torch_rng_state))
    return checkpoints[0].step


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
