"""The header of a checkpoint (format version 1): its fields, their JSON types, and the checks on them.

The header is untrusted input (a file may be hand-edited or foreign), so every field is checked
before any of it is used; a problem is reported as 'field is ..., expected ...', and the
commands turn it into one line (CheckpointError, a UsageError: exit code 2). Reading the file
itself is compare.model.checkpoint_reading; writing it, compare.model.checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from compare.cli.errors import UsageError
from compare.model.init import SIZE_LIMITS, SIZES_DOC, param_shapes

FORMAT = "bptt-compare-checkpoint"
FORMAT_VERSION = 1
IMPL_DIRS = ("manual", "torch")  # the implementations that write checkpoints, each into its own directory
REWRITE = "the file was edited or not written by compare.train: use another checkpoint, such as the run's best.npz"


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be found, read or used; the message says which and why.

    A UsageError, so the commands report it in one line with exit code 2.
    """


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
    "overwrite": False,  # what a run was started with, stored with the rest; a resume never uses it
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


def model_shapes(config: dict[str, Any], vocab_size: int) -> dict[str, tuple[int, ...]]:
    """{name: shape} of the model a checkpoint's config describes (cell and layers default to the seed model)."""
    return param_shapes(vocab_size, config["hidden_size"], config.get("cell", "rnn"), config.get("num_layers", 1))
