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
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

import numpy as np

from compare.cli.errors import UsageError
from compare.model.cells import cell_problem, manual_cell
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
    """Read and check a checkpoint; CheckpointError says what is wrong with it, naming the field.

    The file is untrusted input: the header is checked field by field, and each array by
    the dtype and shape its .npy header declares, before its data is read, so a hand-edited
    or foreign file is refused in one line and a small file cannot make us allocate gigabytes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file; give a .npz written by compare.train")
    try:
        with zipfile.ZipFile(path) as archive:
            header = read_header(archive, path)
            expected = expected_arrays(header)
            arrays = {name: read_member(archive, name, spec, path) for name, spec in expected.items()}
    except CheckpointError:  # a ValueError too, but already the message to show
        raise
    except OSError as error:
        raise CheckpointError(f"{path}: cannot read it ({error.strerror or error})") from error
    except (ValueError, EOFError, zipfile.BadZipFile, zlib.error) as error:  # not an .npz, or truncated
        raise unreadable(path) from error
    present = {name: array for name, array in arrays.items() if array is not None}  # all but perhaps hidden
    for name, array in present.items():
        check_values(array, name, expected[name], path)
    names = list(model_shapes(header["config"], len(header["vocab"])))
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
        config=header["config"],
        progress=RunProgress(**header["progress"]),
        engine=engine,
        torch_rng_state=present["torch_rng_state"],
    )


def unreadable(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: not a readable .npz checkpoint (truncated, or not written by "
        f"compare.train); use another one, such as the run's {BEST}"
    )


MAX_HEADER_BYTES = 64 << 20  # the vocabulary (at most 0x110000 characters) and the settings fit in far less
MAX_RNG_STATE_BYTES = 1 << 20  # torch's CPU generator state is about 5 KB


@dataclass(frozen=True)
class ArraySpec:
    """What an array of a checkpoint must be: its dtype kind ('f' real floating, 'u' unsigned) and shape."""

    kind: str
    shape: tuple[int, ...] | None  # None: one dimension of at most max_size entries
    required: bool = True
    max_size: int = 0


def read_member(archive: zipfile.ZipFile, name: str, spec: ArraySpec, path: Path) -> np.ndarray | None:
    """The array ``name`` of the .npz, once the dtype and shape its .npy header declares match ``spec``."""
    try:
        info = archive.getinfo(f"{name}.npy")
    except KeyError:
        if spec.required:
            raise CheckpointError(f"{path}: the array {name} is missing from the checkpoint; {REWRITE}") from None
        return None
    with archive.open(info) as file:
        shape, fortran, dtype = read_npy_header(file)
        check_declared(name, spec, shape, dtype, path)
        return read_data(file, shape, fortran, dtype)


def read_data(file: IO[bytes], shape: tuple[int, ...], fortran: bool, dtype: np.dtype) -> np.ndarray:
    """The array data that follows a .npy header, read straight into an array of the declared (checked) size."""
    if dtype.hasobject:  # never unpickle; the dtype checks above allow only numbers, this is the last guard
        raise ValueError("an object array")
    array = np.empty(shape[::-1] if fortran else shape, dtype=dtype)
    buffer = array.reshape(-1).view(np.uint8).data  # a memoryview of the array's bytes
    filled = 0
    while filled < len(buffer):
        count = file.readinto(buffer[filled:])  # type: ignore[attr-defined]  # IO[bytes] lacks it; ZipExtFile has it
        if not count:
            raise EOFError(f"the data stops after {filled} of {len(buffer)} bytes")
        filled += count
    return array.T if fortran else array


def read_npy_header(file: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) from the header of a .npy stream, which is left at the start of the data."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        return np.lib.format.read_array_header_1_0(file)
    if version == (2, 0):
        return np.lib.format.read_array_header_2_0(file)
    raise ValueError(f".npy format version {version}")


def check_declared(name: str, spec: ArraySpec, shape: tuple[int, ...], dtype: np.dtype, path: Path) -> None:
    if dtype.kind != spec.kind or (spec.kind == "u" and dtype.itemsize != 1):
        wanted = "uint8" if spec.kind == "u" else "a real floating-point type (float64)"
        raise CheckpointError(f"{path}: {name} holds {dtype.name} values, expected {wanted}; {REWRITE}")
    if spec.shape is None:
        if len(shape) != 1 or not 0 < shape[0] <= spec.max_size:
            raise CheckpointError(
                f"{path}: {name} has shape {shape}, expected one dimension of at most {spec.max_size:,}; {REWRITE}"
            )
    elif tuple(shape) != spec.shape:
        raise CheckpointError(f"{path}: {name} has shape {tuple(shape)}, expected {spec.shape}; {REWRITE}")


REWRITE = "the file was edited or not written by compare.train: use another checkpoint, such as the run's best.npz"


def check_values(array: np.ndarray, name: str, spec: ArraySpec, path: Path) -> None:
    """Floating arrays must be finite; AdaGrad's accumulators, sums of squares, also >= 0."""
    if spec.kind != "f":
        return
    if not np.isfinite(array).all():
        raise CheckpointError(f"{path}: {name} holds values that are not finite (NaN or Inf); {REWRITE}")
    if name.startswith("accumulators/") and (array < 0).any():
        raise CheckpointError(f"{path}: {name} holds negative values (it is a sum of squares); {REWRITE}")


def expected_arrays(header: dict[str, Any]) -> dict[str, ArraySpec]:
    """Every array the checkpoint that ``header`` describes holds, with its dtype kind and shape."""
    config = header["config"]
    shapes = model_shapes(config, len(header["vocab"]))
    specs = {
        f"{kind}/{name}": ArraySpec("f", shape) for kind in ("params", "accumulators") for name, shape in shapes.items()
    }
    parts = manual_cell(config["cell"]).STATE_PARTS
    hidden_shape = (config["num_layers"], parts, config["batch_size"], config["hidden_size"])
    specs["hidden"] = ArraySpec("f", hidden_shape, required=False)  # absent before the first step
    specs["torch_rng_state"] = ArraySpec("u", None, max_size=MAX_RNG_STATE_BYTES)
    return specs


def read_header(archive: zipfile.ZipFile, path: Path) -> dict[str, Any]:
    """The header, checked field by field (CheckpointError names the first bad one)."""
    try:
        with archive.open("header.npy") as file:
            shape, fortran, dtype = read_npy_header(file)
            if dtype.kind != "u" or dtype.itemsize != 1 or len(shape) != 1 or shape[0] > MAX_HEADER_BYTES:
                raise CheckpointError(
                    f"{path}: the header is a {dtype.name} array of shape {shape}, not UTF-8 JSON "
                    f"bytes of at most {MAX_HEADER_BYTES:,}; not a {FORMAT} file: give a .npz written by compare.train"
                )
            raw = read_data(file, shape, fortran, dtype)
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(
            f"{path}: no readable header; not a {FORMAT} file: give a .npz written by compare.train"
        ) from error
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a {FORMAT} file: give a .npz written by compare.train")
    version = header.get("version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: written by a newer bptt-compare (format version {version}; this one "
            f"reads version {FORMAT_VERSION}): update bptt-compare to use it"
        )
    if not is_int(version) or version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {version!r}, which this code cannot read (it reads version {FORMAT_VERSION})"
        )
    problem = header_problem(header)
    if problem:
        raise CheckpointError(f"{path}: {problem}; {REWRITE}")
    problem = cell_problem(header["config"]["cell"])  # a plugged-in cell: its module must still load
    if problem:
        raise CheckpointError(
            f"{path}: config.cell, the cell it was trained with, does not load: {problem}; put its module back, "
            "or on PYTHONPATH"
        )
    return header


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_str(value: object) -> bool:
    return isinstance(value, str)


def is_none(value: object) -> bool:
    return value is None


# The JSON type of each TrainConfig setting (this package sits below compare.training; a test keeps the
# two lists equal). A setting missing from a checkpoint is not required unless REQUIRED_CONFIG names it.
CONFIG_TYPES: dict[str, tuple[Callable[[object], bool], ...]] = {
    **dict.fromkeys(
        (
            "impl",
            "corpus",
            "encoding",
            "errors",
            "cell",
            "dtype",
            "device",
            "logdir",
            "loss_reduction",
            "adagrad_eps_placement",
        ),
        (is_str,),
    ),
    **dict.fromkeys(("data", "run_name", "resume"), (is_str, is_none)),
    **dict.fromkeys(
        (
            "val_max_chars",
            "hidden_size",
            "num_layers",
            "seq_length",
            "batch_size",
            "epochs",
            "seed",
            "log_every",
            "agree_every",
            "sample_every",
            "sample_length",
            "checkpoint_every",
            "gradflow_every",
        ),
        (is_int,),
    ),
    **dict.fromkeys(("max_steps", "threads", "eval_every"), (is_int, is_none)),
    **dict.fromkeys(("val_frac", "lr", "clip", "dist_timeout", "adagrad_eps"), (is_number,)),
}
TYPE_NAMES: dict[Callable[[object], bool], str] = {
    is_str: "a string",
    is_none: "null",
    is_int: "an integer",
    is_number: "a number",
}
REQUIRED_CONFIG = ("hidden_size", "batch_size", "lr", "clip")  # the shapes, and what sampling reads
# Settings added after format version 1 was first written, and what a checkpoint without them meant.
CONFIG_ADDED_LATER = {
    "cell": "rnn",
    "num_layers": 1,
    "val_max_chars": 0,  # 0: validated on all the held-out text
    "gradflow_every": 0,  # 0: no gradient-flow scalars
    "corpus": "pydoc-topics",  # the only built-in corpus there was: the pydoc topics whole
    "loss_reduction": "mean",  # PyTorch's conventions, the only ones before these settings existed
    "adagrad_eps": 1e-10,
    "adagrad_eps_placement": "outside",
}
POSITIVE_CONFIG = ("hidden_size", "num_layers", "batch_size", "seq_length")
PROGRESS_TYPES: dict[str, tuple[Callable[[object], bool], ...]] = {
    "smooth_loss": (is_number,),
    "seconds": (is_number,),
    "val_loss": (is_number, is_none),
    "best_val_loss": (is_number, is_none),
}


def type_problem(name: str, value: object, types: tuple[Callable[[object], bool], ...]) -> str | None:
    if any(check(value) for check in types):
        return None
    return f"{name} is {value!r}, expected {' or '.join(TYPE_NAMES[check] for check in types)}"


def header_problem(header: dict[str, Any]) -> str | None:
    """The first header field that is missing or wrong, as 'field is ..., expected ...'; None if all are good.

    Fills in CONFIG_ADDED_LATER in ``header["config"]`` when a checkpoint predates them.
    """
    for key in ("impl", "step", "updates", "vocab", "data_sha256", "config", "progress"):
        if key not in header:
            return f"the header has no {key}"
    if header["impl"] not in IMPL_DIRS:
        return f"impl is {header['impl']!r}, expected one of {', '.join(IMPL_DIRS)}"
    for key in ("step", "updates"):
        if not is_int(header[key]) or header[key] < 0:
            return f"{key} is {header[key]!r}, expected an integer >= 0"
    vocab = header["vocab"]
    if not isinstance(vocab, str) or not vocab:
        return f"vocab is {vocab!r}, expected the training text's characters as a string"
    if len(set(vocab)) != len(vocab):
        return "vocab repeats characters, so token ids would be ambiguous"
    digest = header["data_sha256"]
    if not isinstance(digest, str) or len(digest) != 64 or digest.strip("0123456789abcdef"):
        return f"data_sha256 is {digest!r}, expected 64 hexadecimal digits"
    return config_problem(header["config"]) or progress_problem(header["progress"])


def config_problem(config: object) -> str | None:
    if not isinstance(config, dict):
        return f"config is {type(config).__name__}, expected an object of settings"
    for key, default in CONFIG_ADDED_LATER.items():
        config.setdefault(key, default)
    for key in REQUIRED_CONFIG:
        if key not in config:
            return f"config.{key} is missing"
    for key, value in config.items():
        problem = type_problem(f"config.{key}", value, CONFIG_TYPES[key]) if key in CONFIG_TYPES else None
        if problem:
            return problem
    for key in POSITIVE_CONFIG:
        if key in config and config[key] <= 0:
            return f"config.{key} is {config[key]}, expected a positive integer"
    return None


def progress_problem(progress: object) -> str | None:
    if not isinstance(progress, dict):
        return f"progress is {type(progress).__name__}, expected an object"
    if "smooth_loss" not in progress:
        return "progress.smooth_loss is missing"
    for key, value in progress.items():
        if key not in PROGRESS_TYPES:
            return f"progress.{key} is not a field this code knows ({', '.join(PROGRESS_TYPES)})"
        problem = type_problem(f"progress.{key}", value, PROGRESS_TYPES[key])
        if problem:
            return problem
    return None


def model_shapes(config: dict[str, Any], vocab_size: int) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model a checkpoint's config describes (cell and layers default to the seed model)."""
    return param_shapes(vocab_size, config["hidden_size"], config.get("cell", "rnn"), config.get("num_layers", 1))


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
