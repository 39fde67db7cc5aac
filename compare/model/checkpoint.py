"""Checkpoints that both implementations write and read: one versioned ``.npz`` file.

Why ``.npz`` with a JSON header and not safetensors: both store float64 arrays bit for
bit and neither runs code on load (we load with ``allow_pickle=False``). ``.npz`` needs
no new dependency (NumPy is what ``manual`` already speaks, safetensors is not
installed here), and any NumPy can open a checkpoint with ``np.load``. safetensors'
metadata is a flat string-to-string map, so the nested config would end up as a JSON
string anyway.

Layout, version 1; every entry is a plain array:

    header               uint8: UTF-8 JSON {format, version, impl, step, updates,
                         vocab, data_sha256, config, progress}
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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from compare.cli.errors import UsageError
from compare.model.init import param_shapes
from compare.model.state import EngineState

FORMAT = "bptt-compare-checkpoint"
FORMAT_VERSION = 1
LATEST = "latest.npz"
BEST = "best.npz"
IMPL_DIRS = ("manual", "torch")


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be found, read or used; the message says which and why.

    A UsageError, so the commands report it in one line with exit code 2.
    """


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


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and check a checkpoint; CheckpointError says what is wrong with it."""
    path = Path(path)
    arrays = read_arrays(path)
    header = read_header(arrays, path)
    names = list(model_shapes(header["config"], len(header["vocab"])))
    missing = [name for name in required_arrays(names) if name not in arrays]
    if missing:
        raise CheckpointError(f"{path}: arrays missing from the checkpoint: {', '.join(missing)}")
    engine = EngineState(
        params={name: arrays[f"params/{name}"] for name in names},
        accumulators={name: arrays[f"accumulators/{name}"] for name in names},
        updates=int(header["updates"]),
        hidden=arrays.get("hidden"),
    )
    checkpoint = Checkpoint(
        impl=header["impl"],
        step=int(header["step"]),
        vocab=header["vocab"],
        data_sha256=header["data_sha256"],
        config=header["config"],
        progress=RunProgress(**header["progress"]),
        engine=engine,
        torch_rng_state=arrays["torch_rng_state"],
    )
    check_shapes(checkpoint, path)
    return checkpoint


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array in the ``.npz`` at ``path``, read into memory."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; give a .npz written by compare.train")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from error
    except (ValueError, EOFError, zipfile.BadZipFile) as error:  # not an .npz, truncated, or holds pickles
        raise CheckpointError(
            f"{path}: not a readable .npz checkpoint (truncated, or not written by "
            f"compare.train); use another one, such as the run's {BEST}"
        ) from error


def read_header(arrays: dict[str, np.ndarray], path: Path) -> dict[str, Any]:
    try:
        header = json.loads(arrays["header"].tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path}: no readable header; not a {FORMAT} file: give a .npz written by compare.train"
        ) from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file: give a .npz written by compare.train")
    version = header.get("version")
    if isinstance(version, int) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer bptt-compare (format version {version}; this one "
            f"reads version {FORMAT_VERSION}): update bptt-compare to use it"
        )
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r}, which this code cannot read (it reads version {FORMAT_VERSION})"
        )
    return header


def required_arrays(names: Iterable[str]) -> list[str]:
    return [f"{kind}/{name}" for kind in ("params", "accumulators") for name in names] + ["torch_rng_state"]


def model_shapes(config: dict[str, Any], vocab_size: int) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model a checkpoint's config describes (cell and layers default to the seed model)."""
    return param_shapes(vocab_size, config["hidden_size"], config.get("cell", "rnn"), config.get("num_layers", 1))


def check_shapes(checkpoint: Checkpoint, path: Path) -> None:
    """The arrays must fit the checkpoint's own vocabulary and hidden size."""
    expected = model_shapes(checkpoint.config, len(checkpoint.vocab))
    stored = {"params": checkpoint.engine.params, "accumulators": checkpoint.engine.accumulators}
    for kind, arrays in stored.items():
        for name, shape in expected.items():
            if arrays[name].shape != shape:
                raise CheckpointError(f"{path}: {kind}/{name} has shape {arrays[name].shape}, expected {shape}")


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
