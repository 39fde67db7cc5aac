"""Reading a checkpoint without trusting it: the header field by field, then each array by what it declares.

A checkpoint is untrusted input (a file may be hand-edited or foreign), so every header field is
checked (its JSON type, its range) before any of it is used, and a problem is reported as
'field is ..., expected ...'; the commands turn it into one line (CheckpointError, a UsageError:
exit code 2). Then each array's .npy header (dtype and shape) is checked against what the
checkpoint's header says it must hold before its data is read, and against the size the archive
declares for it, so a hand-edited or foreign file is refused in one line and a small file cannot
make us allocate gigabytes. Nothing is ever unpickled, and no module the header names is imported
(the cell is compare.model.cells.checkpoint_cell's to resolve). compare.model.checkpoint holds the
format, and saves, loads and finds checkpoints.
"""

from __future__ import annotations

import json
import math
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from compare.cli.errors import UsageError
from compare.model.cells import manual_cell
from compare.model.init import SIZE_LIMITS, SIZES_DOC, param_shapes

FORMAT = "bptt-compare-checkpoint"
FORMAT_VERSION = 1
IMPL_DIRS = ("manual", "torch")  # the implementations that write checkpoints, each into its own directory
REWRITE = "the file was edited or not written by compare.train: use another checkpoint, such as the run's best.npz"
MAX_HEADER_BYTES = 64 << 20  # the vocabulary (at most 0x110000 characters) and the settings fit in far less
MAX_HEADER_DEPTH = 4  # the header nests 2 deep (header, config); deeper JSON is not one of ours


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be found, read or used; the message says which and why.

    A UsageError, so the commands report it in one line with exit code 2.
    """


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
    except RecursionError as error:  # JSON nested thousands deep: the parser runs out of stack
        raise too_deep(path) from error
    if json_depth(header) > MAX_HEADER_DEPTH:  # before any check recurses into it (repr, say)
        raise too_deep(path)
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
    return header


def too_deep(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: the header's JSON nests deeper than {MAX_HEADER_DEPTH} levels; not a {FORMAT} file: "
        "give a .npz written by compare.train"
    )


def json_depth(value: object) -> int:
    """How deep JSON ``value`` nests (a scalar 0, [] or {} 1), without recursion: a hostile file may nest deep."""
    deepest, pending = 0, [(value, 0)]
    while pending:
        value, depth = pending.pop()
        if isinstance(value, dict | list):
            deepest = max(deepest, depth + 1)
            pending.extend((item, depth + 1) for item in (value.values() if isinstance(value, dict) else value))
    return deepest


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_str(value: object) -> bool:
    return isinstance(value, str)


def is_bool(value: object) -> bool:
    return isinstance(value, bool)


def is_none(value: object) -> bool:
    return value is None


def is_sha256(value: object) -> bool:
    return isinstance(value, str) and len(value) == 64 and not value.strip("0123456789abcdef")


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
            "grad",
            "optimizer",
            "lr_schedule",
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
            "segment_length",
            "lr_decay_every",
        ),
        (is_int,),
    ),
    **dict.fromkeys(("max_steps", "threads", "eval_every"), (is_int, is_none)),
    **dict.fromkeys(("val_frac", "lr", "clip", "dist_timeout", "adagrad_eps", "clip_norm", "lr_decay"), (is_number,)),
    "overwrite": (is_bool,),
}
TYPE_NAMES: dict[Callable[[object], bool], str] = {
    is_bool: "true or false",
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
    "grad": "bptt",  # reverse mode: the only gradient there was before --grad
    "segment_length": 0,  # 0: plain BPTT, every step kept (checkpointed BPTT came later)
    "optimizer": "adagrad",  # the only optimizer there was
    "clip_norm": 0.0,  # no clipping by the global norm
    "lr_schedule": "constant",
    "lr_decay": 0.97,  # unused with a constant rate: the default
    "lr_decay_every": 1,
    "overwrite": False,  # what a run was started with, stored with the rest; a resume never uses it
}
POSITIVE_CONFIG = ("hidden_size", "num_layers", "batch_size", "seq_length")
PROGRESS_TYPES: dict[str, tuple[Callable[[object], bool], ...]] = {
    "smooth_loss": (is_number,),
    "seconds": (is_number,),
    "val_loss": (is_number, is_none),
    "best_val_loss": (is_number, is_none),
}


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
    for key in ("data_sha256", "cell_sha256"):  # cell_sha256: null for a built-in cell; absent before it was recorded
        if key in header and not (is_sha256(header[key]) or (key == "cell_sha256" and header[key] is None)):
            return f"{key} is {header[key]!r}, expected 64 hexadecimal digits"
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
    for key, limit in SIZE_LIMITS.items():  # before any shape is built from them
        if key in config and config[key] > limit:
            return f"config.{key} is {config[key]:,}, expected at most {limit:,} (see {SIZES_DOC})"
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


def type_problem(name: str, value: object, types: tuple[Callable[[object], bool], ...]) -> str | None:
    if any(check(value) for check in types):
        return None
    return f"{name} is {value!r}, expected {' or '.join(TYPE_NAMES[check] for check in types)}"


@dataclass(frozen=True)
class ArraySpec:
    """What an array of a checkpoint must be: its dtype kind ('f' real floating, 'u' unsigned) and shape."""

    kind: str
    shape: tuple[int, ...]
    required: bool = True


def expected_arrays(header: dict[str, Any]) -> dict[str, ArraySpec]:
    """Every array the checkpoint that ``header`` describes holds, with its dtype kind and shape.

    ``header["config"]["cell"]`` must be a cell already vouched for (compare.model.cells.checkpoint_cell):
    its module gives the shapes.
    """
    config = header["config"]
    shapes = model_shapes(config, len(header["vocab"]))
    kinds = {"adam": ("params", "accumulators", "moments"), "hf": ("params",)}.get(
        config.get("optimizer", "adagrad"), ("params", "accumulators")
    )
    specs = {f"{kind}/{name}": ArraySpec("f", shape) for kind in kinds for name, shape in shapes.items()}
    if config.get("optimizer") == "hf":
        specs["damping"] = ArraySpec("f", ())  # Hessian-free's lambda
    parts = manual_cell(config["cell"]).STATE_PARTS
    hidden_shape = (config["num_layers"], parts, config["batch_size"], config["hidden_size"])
    specs["hidden"] = ArraySpec("f", hidden_shape, required=False)  # absent before the first step
    specs["torch_rng_state"] = ArraySpec("u", (torch_rng_state_bytes(),))
    return specs


def model_shapes(config: dict[str, Any], vocab_size: int) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model a checkpoint's config describes (cell and layers default to the seed model)."""
    return param_shapes(vocab_size, config["hidden_size"], config.get("cell", "rnn"), config.get("num_layers", 1))


def torch_rng_state_bytes() -> int:
    """The size of torch's CPU generator state, which torch.set_rng_state takes at exactly this size."""
    import torch  # here: only a whole load needs it, and the commands that load import torch anyway

    return torch.get_rng_state().numel()


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
        if math.prod(shape) * dtype.itemsize > info.file_size:  # the archive holds less than the array needs
            raise EOFError(f"{name} declares more data than its {info.file_size} bytes")
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
    if tuple(shape) != spec.shape:
        raise CheckpointError(f"{path}: {name} has shape {tuple(shape)}, expected {spec.shape}; {REWRITE}")


def check_values(array: np.ndarray, name: str, spec: ArraySpec, path: Path) -> None:
    """Floating arrays must be finite; the optimizer's accumulators, (means of) squares, also >= 0."""
    if spec.kind != "f":
        return
    if not np.isfinite(array).all():
        raise CheckpointError(f"{path}: {name} holds values that are not finite (NaN or Inf); {REWRITE}")
    if name.startswith("accumulators/") and (array < 0).any():
        raise CheckpointError(f"{path}: {name} holds negative values (it is a sum of squares); {REWRITE}")
    if name == "damping" and not array > 0:
        raise CheckpointError(f"{path}: damping must be positive (Hessian-free's lambda), got {array}; {REWRITE}")
