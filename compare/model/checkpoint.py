"""Checkpoints that both implementations write and read: one versioned ``.npz`` file.

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
    accumulators/<name>  float64: AdaGrad's running sum of squared gradients
    hidden               float64 (L, P, B, H): the state carried into the next chunk
    torch_rng_state      uint8: torch.get_rng_state()

No NumPy generator state is stored because training keeps none: the weights are drawn
from --seed once, and each TensorBoard sample from its own generator seeded with
seed + step, so a resumed run draws the same numbers without it.

Each implementation's run directory holds ``latest.npz`` (written every
--checkpoint-every steps, at the end and when interrupted) and ``best.npz`` (lowest
validation loss so far). A file is replaced atomically, so a crash while saving
leaves the previous good file in place.
"""

from __future__ import annotations

import json
import os
import uuid
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from compare.model.cells import CellError, cell_digest, checkpoint_cell
from compare.model.checkpoint_header import FORMAT, FORMAT_VERSION, IMPL_DIRS, CheckpointError, model_shapes
from compare.model.checkpoint_reading import check_values, expected_arrays, read_header, read_member
from compare.model.init import estimated_memory, memory_problem
from compare.model.state import EngineState

LATEST = "latest.npz"
BEST = "best.npz"


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
        arrays[f"accumulators/{name}"] = np.asarray(checkpoint.engine.accumulators[name], dtype=np.float64)
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
        accumulators={name: present[f"accumulators/{name}"] for name in names},
        updates=header["updates"],
        hidden=present.get("hidden"),
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
