"""Checkpoints that both implementations write and read: one versioned ``.npz`` file, saved, loaded
and found (a file, a run directory, or the newest run under --logdir).

Why ``.npz`` with a JSON header and not safetensors: both store float64 arrays bit for
bit and neither runs code on load (we read no pickle, and import no module a header names:
a cell of your own loads only with --cell, compare.model.cells.checkpoint_cell). ``.npz`` needs
no new dependency (NumPy is what ``manual`` already speaks, safetensors is not
installed here), and any NumPy can open a checkpoint with ``np.load``. safetensors'
metadata is a flat string-to-string map, so the nested config would end up as a JSON
string anyway.

Layout, version 1; every entry is a plain array:

    header               uint8: UTF-8 JSON {format, version, impl, step, updates,
                         vocab, data_sha256, cell_sha256, config, progress}; cell_sha256 is the
                         SHA-256 of a plugged-in cell's source (null for a built-in cell; absent
                         from checkpoints written before it was recorded)
    params/<name>        float64, for every parameter (U W V b c, U2 W2 b2 ... with layers)
    accumulators/<name>  float64: the optimizer's statistic of squared gradients (AdaGrad's running
                         sum, RMSProp's running mean, Adam's second moment)
                         (none when config.optimizer is hf, which keeps no such statistic)
    moments/<name>       float64, only when config.optimizer is adam: its first moment
    damping              float64 (), only when config.optimizer is hf: its Levenberg-Marquardt lambda
    hidden               float64 (L, P, B, H): the state carried into the next chunk
    torch_rng_state      uint8: torch.get_rng_state()

No NumPy generator state is stored because training keeps none: the weights are drawn
from --seed once, and each TensorBoard sample from its own generator seeded with
seed + step, so a resumed run draws the same numbers without it.

Each implementation's run directory holds ``latest.npz`` (written every
--checkpoint-every steps, at the end and when interrupted) and ``best.npz`` (lowest
validation loss so far). A file is replaced atomically, so a crash while saving
leaves the previous good file in place.

Loading reads the file without trusting it: compare.model.checkpoint_reading checks the header
field by field, then each array by what it declares, before anything is used.

Without --checkpoint, compare.sample and compare.demo take the newest run under --logdir: the
run directory (``<logdir>/<run>``) holding the checkpoint written last, the largest modification
time among its ``<impl>/latest.npz`` and ``<impl>/best.npz``. A run that is still training is
newest while it saves; a run name or a directory's own time says nothing of when training wrote.
Only file times are read: no checkpoint is opened to choose, and loading the one chosen imports
no module it names (compare.model.cells.checkpoint_cell). Before training writes anything,
``check_writable_directory`` makes sure it can write under --logdir.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from compare.cli.errors import UsageError
from compare.model.cells import CellError, cell_digest, checkpoint_cell
from compare.model.checkpoint_reading import (
    FORMAT,
    FORMAT_VERSION,
    IMPL_DIRS,
    CheckpointError,
    check_values,
    expected_arrays,
    model_shapes,
    read_header,
    read_member,
)
from compare.model.init import estimated_memory, memory_problem
from compare.model.state import EngineState

LATEST = "latest.npz"
BEST = "best.npz"
TRAIN_COMMAND = "python -m compare.train"
NEWEST_RULE = "the newest run under --logdir: the one whose latest.npz or best.npz was written last"


@dataclass
class RunProgress:
    """Running figures of one implementation's run, carried across a resume."""

    smooth_loss: float  # exponential moving average of the training loss
    seconds: float = 0.0  # time spent inside training steps, for chars/sec
    val_loss: float | None = None  # the latest validation loss
    best_val_loss: float | None = None  # the lowest validation loss so far: best.npz's


@dataclass
class Checkpoint:
    impl: str  # the implementation that wrote it; either one can read it
    step: int  # training steps done; with the config it fixes the data position
    vocab: str  # the characters, in token-id order
    data_sha256: str  # of the training text, so that a resume on other text is refused
    config: dict[str, Any]  # the TrainConfig, as a dict
    progress: RunProgress
    engine: EngineState
    torch_rng_state: np.ndarray  # uint8, from torch.get_rng_state()


def save_checkpoint(path: str | Path, checkpoint: Checkpoint) -> None:
    """Write ``checkpoint`` to ``path`` atomically (parent directories are created)."""
    header = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "impl": checkpoint.impl,
        "step": checkpoint.step,
        "updates": checkpoint.engine.updates,
        "vocab": checkpoint.vocab,
        "data_sha256": checkpoint.data_sha256,
        "cell_sha256": cell_digest(checkpoint.config["cell"]),  # the run's own cell: already imported to train
        "config": checkpoint.config,
        "progress": asdict(checkpoint.progress),
    }
    # Any, not np.ndarray: numpy's stub would match a ** of arrays against savez's allow_pickle: bool
    # (a keyword no name here can be).
    arrays: dict[str, Any] = {"header": np.frombuffer(json.dumps(header).encode("utf-8"), dtype=np.uint8)}
    for name in checkpoint.engine.params:
        arrays[f"params/{name}"] = np.asarray(checkpoint.engine.params[name], dtype=np.float64)
        if checkpoint.engine.accumulators:  # Hessian-free keeps none
            arrays[f"accumulators/{name}"] = np.asarray(checkpoint.engine.accumulators[name], dtype=np.float64)
        if checkpoint.engine.moments is not None:
            arrays[f"moments/{name}"] = np.asarray(checkpoint.engine.moments[name], dtype=np.float64)
    if checkpoint.engine.damping is not None:
        arrays["damping"] = np.float64(checkpoint.engine.damping)
    if checkpoint.engine.hidden is not None:
        arrays["hidden"] = np.asarray(checkpoint.engine.hidden, dtype=np.float64)
    arrays["torch_rng_state"] = np.asarray(checkpoint.torch_rng_state, dtype=np.uint8)
    atomic_write(Path(path), lambda file: np.savez(file, **arrays))


def atomic_write(path: Path, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    The rename is atomic, so ``path`` always holds either the old file or the complete
    new one. On any error (or Ctrl-C) the temporary file is removed and ``path`` is untouched.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename cannot cross file systems; a unique name, so two writers never
    # share it; open() rather than mkstemp so the file gets the usual permissions, not 0600.
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "xb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())  # the bytes are on disk before the name points at them
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)


def fsync_directory(directory: Path) -> None:
    """Make a rename inside ``directory`` survive a power cut (POSIX; Windows cannot open directories)."""
    if os.name != "posix":
        return
    handle = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


def load_checkpoint(path: str | Path, cell: str | None = None) -> Checkpoint:
    """Read and check a checkpoint; CheckpointError says what is wrong with it, naming the field.

    The file is untrusted input: the header is checked field by field, and each array by
    the dtype and shape its .npy header declares, before its data is read, so a hand-edited
    or foreign file is refused in one line and a small file cannot make us allocate gigabytes.
    ``cell`` is the --cell the user typed (None: none): the only way a cell of your own is
    imported (compare.model.cells.checkpoint_cell); the checkpoint's config then names it.
    """
    path = Path(path)
    with opened(path) as archive:
        header = read_header(archive, path)
        try:
            header["config"]["cell"] = checkpoint_cell(header["config"]["cell"], header.get("cell_sha256"), cell)
        except CellError as error:
            raise CheckpointError(f"{path}: {error}") from None
        config = header["config"]
        vocab_size = len(header["vocab"])
        needed = estimated_memory(
            vocab_size, config["hidden_size"], config["cell"], config["num_layers"], config["batch_size"]
        )
        problem = memory_problem(needed, f"{path}: loading it", "use a machine with more memory")
        if problem:
            raise CheckpointError(problem)
        expected = expected_arrays(header)
        arrays = {name: read_member(archive, name, spec, path) for name, spec in expected.items()}
    present = {name: array for name, array in arrays.items() if array is not None}  # all but perhaps hidden
    for name, array in present.items():
        check_values(array, name, expected[name], path)
    names = list(model_shapes(config, vocab_size))
    engine = EngineState(
        params={name: present[f"params/{name}"] for name in names},
        accumulators={name: present[f"accumulators/{name}"] for name in names if f"accumulators/{name}" in present},
        updates=header["updates"],
        hidden=present.get("hidden"),
        moments={name: present[f"moments/{name}"] for name in names} if config["optimizer"] == "adam" else None,
        damping=float(present["damping"]) if "damping" in present else None,
    )
    return Checkpoint(
        impl=header["impl"],
        step=header["step"],
        vocab=header["vocab"],
        data_sha256=header["data_sha256"],
        config=config,
        progress=RunProgress(**header["progress"]),
        engine=engine,
        torch_rng_state=present["torch_rng_state"],
    )


def checkpoint_step(path: str | Path) -> int:
    """The step a checkpoint is at, from its header alone (checked; no array read, no cell resolved)."""
    path = Path(path)
    with opened(path) as archive:
        return int(read_header(archive, path)["step"])


@contextmanager
def opened(path: Path) -> Iterator[zipfile.ZipFile]:
    """The checkpoint's archive, open; any way reading it fails leaves as one CheckpointError naming the file."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; give a .npz written by compare.train")
    try:
        with zipfile.ZipFile(path) as archive:
            yield archive
    except CheckpointError:  # a ValueError too, but already the message to show
        raise
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from error
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # not an .npz, or truncated
        raise unreadable(path) from error


def unreadable(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable .npz checkpoint (truncated, or not written by "
        f"compare.train); use another one, such as the run's {BEST}"
    )


def find_checkpoint(path: str | Path, impl: str | None = None, names: Sequence[str] = (LATEST,)) -> Path:
    """The checkpoint file that ``path`` means for ``impl``.

    ``path`` is a checkpoint file, an implementation's run directory (runs/<run>/manual)
    or a run directory (runs/<run>). In a run directory <impl>/ is searched first, then
    the other implementation's directory (a checkpoint loads into either). ``names``
    are the file names to look for, in order of preference.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        raise CheckpointError(
            f"{path}: no such checkpoint file or run directory; give a .npz file, runs/<run> or runs/<run>/<impl>"
        )
    subdirs = sorted(IMPL_DIRS, key=lambda name: name != impl)  # impl's own directory first
    for directory in [path] + [path / name for name in subdirs]:
        for name in names:
            if (directory / name).is_file():
                return directory / name
    raise CheckpointError(f"{path}: no {' or '.join(names)} in it or in its {' or '.join(IMPL_DIRS)} subdirectory")


def run_dir_of(checkpoint_path: Path) -> Path | None:
    """runs/<run> for runs/<run>/<impl>/<file>; None for a file kept elsewhere."""
    parent = checkpoint_path.parent
    if parent.name not in IMPL_DIRS:
        parent = parent.resolve()  # "latest.npz" typed inside runs/<run>/manual has parent "."
    return parent.parent if parent.name in IMPL_DIRS else None


def checkpoint_or_newest(checkpoint: str | None, logdir: str) -> str:
    """``checkpoint`` as given, or the newest run under ``logdir`` (said on stderr, so that stdout stays the output)."""
    if checkpoint is not None:
        return checkpoint
    run_dir = newest_run(logdir)
    print(f"using {run_dir} (the newest run under {logdir.rstrip('/')}/)", file=sys.stderr)
    return str(run_dir)


def newest_run(logdir: str | Path) -> Path:
    """The run directory under ``logdir`` whose checkpoint was written last; UsageError when there is none."""
    logdir = Path(logdir)
    problem = not_a_directory(logdir)
    if problem:
        raise UsageError(
            f"--logdir {logdir}: {problem}; pass the directory {TRAIN_COMMAND} wrote its runs into, or --checkpoint"
        )
    try:
        written = checkpoint_times(logdir)
    except OSError as error:  # a directory we may not list
        raise UsageError(
            f"--logdir {logdir}: cannot list its runs ({error.strerror or error}); pass a --logdir you can read, "
            "or --checkpoint"
        ) from None
    if not written:
        raise UsageError(
            f"no run with a checkpoint under {logdir}/; train one first with {TRAIN_COMMAND}, "
            "or pass --checkpoint (or --logdir)"
        )
    return max(written, key=lambda run_dir: written[run_dir])


def checkpoint_times(logdir: Path) -> dict[Path, int]:
    """Each run directory under ``logdir`` that holds a checkpoint -> when it was last written (ns)."""
    written = {}
    if logdir.is_dir():
        for run_dir in sorted(logdir.iterdir()):  # sorted: equal times resolve the same way every time
            when = last_written(run_dir) if run_dir.is_dir() else None
            if when is not None:
                written[run_dir] = when
    return written


def last_written(run_dir: Path) -> int | None:
    """Modification time (ns) of the newest checkpoint in ``run_dir``'s implementation directories; None if none."""
    times = [
        (run_dir / impl / name).stat().st_mtime_ns
        for impl in IMPL_DIRS
        for name in (LATEST, BEST)
        if (run_dir / impl / name).is_file()
    ]
    return max(times, default=None)


def check_writable_directory(directory: Path, flag_value: str) -> None:
    """Create ``directory`` and write a file in it, so that an unwritable --logdir fails now."""
    probe = directory / f".write-test-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = not_a_directory(directory) or error.strerror or str(error)
        raise UsageError(
            f"--logdir {flag_value}: cannot write to {directory} ({reason}); choose a --logdir you can write to"
        ) from None


def not_a_directory(path: Path) -> str | None:
    """'<p> is a file, not a directory' for the first of ``path`` and its parents that exists and is
    no directory (a symlink to one is followed), or None when there is none."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a directory"
    return None
