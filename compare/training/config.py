"""What ``python -m compare.train`` trains: the settings, their checks, and how a resume merges them.

A resumed run takes its settings from the checkpoint; the flags typed on the command line are applied
on top, and those that would change the model or the trajectory (hidden size, learning rate, seed, ...)
are refused with a one-line error. Where a resume writes is never taken from the checkpoint (see
compare.training.rundir).

``--preset original`` sets min-char-rnn's training rule (PRESETS; docs/original.md); the flags typed
beside it override it. The flags themselves, and parse_args, are in compare.training.flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from compare.data.corpus import DEFAULT_VAL_MAX_CHARS, PROSE, check_encoding
from compare.model.cells import BUILTIN_CELLS, cell_problem, flow_problem
from compare.model.checkpoint import CheckpointError, load_checkpoint, run_dir_of
from compare.model.init import SIZE_LIMITS, estimated_memory, memory_problem, size_problem
from compare.model.sampling import MAX_SAMPLE_LENGTH
from compare.training.ranks import DEFAULT_TIMEOUT_S
from compare.training.rundir import resume_source, run_name_problem

AGREE_EVERY = 10  # one extra manual and autograd forward/backward per 10 steps (docs/training.md: the cost)

# Settings a resume may change. Every other one shapes the model or the trajectory,
# so it must match the checkpoint (the training text itself is checked by its hash).
RESUME_MAY_CHANGE = frozenset(
    {
        "impl",
        "data",
        "encoding",
        "errors",
        "epochs",
        "max_steps",
        "threads",
        "logdir",
        "run_name",
        "log_every",
        "eval_every",
        "agree_every",
        "sample_every",
        "sample_length",
        "checkpoint_every",
        "gradflow_every",
        "resume",
        "overwrite",
        "device",
        "dist_timeout",
    }
)


@dataclass
class TrainConfig:
    impl: str = "manual"
    data: str | None = None  # None: the built-in corpus named by corpus
    corpus: str = PROSE  # which built-in corpus (compare.data.corpus.BUILTIN_CORPORA)
    encoding: str = "utf-8"  # of --data
    errors: str = "strict"  # what decoding does with bytes the encoding cannot read
    val_frac: float = 0.05  # 0: no validation (no loss/val, no best.npz)
    val_max_chars: int = DEFAULT_VAL_MAX_CHARS  # of the held-out split, validation uses at most this many; 0: all
    hidden_size: int = 100
    cell: str = "rnn"  # rnn, lstm, gru, or a cell's import path or file (compare.model.cells)
    num_layers: int = 1
    seq_length: int = 25
    batch_size: int = 1
    lr: float = 0.05  # the original's 0.1 latches some seeds on the prose corpus (docs/training.md)
    clip: float = 5.0
    loss_reduction: str = "mean"  # 'sum': minimize the sum over the T*B characters (min-char-rnn); logs stay per char
    adagrad_eps: float = 1e-10  # torch.optim.Adagrad's default
    adagrad_eps_placement: str = "outside"  # 'outside': sqrt(G) + eps (PyTorch); 'inside': sqrt(G + eps) (min-char-rnn)
    epochs: int = 12  # about a minute on 2 cores (docs/training.md)
    max_steps: int | None = None
    seed: int = 42
    dtype: str = "float32"
    threads: int | None = None
    device: str = "cpu"  # of the torch implementation; manual always runs on the CPU
    dist_timeout: float = DEFAULT_TIMEOUT_S  # seconds a data-parallel rank waits for the others
    logdir: str = "runs"
    run_name: str | None = None
    log_every: int = 100
    eval_every: int | None = None  # None: about ten validations per run (compare.training.loop.eval_interval)
    agree_every: int = AGREE_EVERY  # --impl both: steps between implementation-error measurements; 0: never
    sample_every: int = 5000
    sample_length: int = 200
    gradflow_every: int = 0  # steps between gradient-flow scalars (compare.gradients.flow); 0: never
    checkpoint_every: int = 1000
    resume: str | None = None  # a run directory or checkpoint file to continue from
    overwrite: bool = False  # a new training may replace the checkpoints a run directory holds (rundir.opening)


# min-char-rnn.py's training, field by field (docs/original.md says what each reproduces).
PRESETS: dict[str, dict[str, Any]] = {
    "original": {
        "cell": "rnn",
        "num_layers": 1,
        "hidden_size": 100,  # hidden_size = 100
        "seq_length": 25,  # seq_length = 25
        "batch_size": 1,  # one stream through the text
        "lr": 0.1,  # learning_rate = 1e-1
        "clip": 5.0,  # np.clip(dparam, -5, 5)
        "loss_reduction": "sum",  # loss += -np.log(...): the sum over the 25 characters
        "adagrad_eps": 1e-8,  # np.sqrt(mem + 1e-8)
        "adagrad_eps_placement": "inside",
        "dtype": "float64",  # NumPy's default
        "val_frac": 0.0,  # it trains on the whole text
        "sample_every": 100,  # if n % 100 == 0: sample 200 characters
        "sample_length": 200,
    }
}


def config_problem(config: TrainConfig) -> str | None:
    """A one-line description of the first invalid setting and how to fix it, or None."""
    defaults = TrainConfig()
    positive = (
        "hidden_size",
        "num_layers",
        "seq_length",
        "batch_size",
        "epochs",
        "log_every",
        "eval_every",
        "sample_every",
        "sample_length",
        "checkpoint_every",
    )
    for name in positive:
        if getattr(config, name) is not None and getattr(config, name) <= 0:
            return (
                f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)} "
                f"(the default is {getattr(defaults, name)})"
            )
    sizes = {name: getattr(config, name) for name in SIZE_LIMITS}
    if problem := size_problem(sizes):  # before the memory they need is estimated (compare.training.loop)
        return problem
    if not (math.isfinite(config.lr) and config.lr > 0):  # also rejects nan and inf
        return f"--lr must be a positive number, got {config.lr} (the default is {defaults.lr})"
    if config.gradflow_every < 0:
        return f"--gradflow-every must be >= 0 (0 turns it off), got {config.gradflow_every}"
    if not config.clip >= 0:
        return f"--clip must be >= 0 (0 turns clipping off), got {config.clip}"
    if config.gradflow_every and (problem := flow_problem(config.cell)):
        return f"--gradflow-every: {problem}; or leave --gradflow-every out"
    if config.agree_every < 0:
        return f"--agree-every must be >= 0 (0 turns the measurement off), got {config.agree_every}"
    if not (math.isfinite(config.adagrad_eps) and config.adagrad_eps > 0):
        return (
            f"--adagrad-eps must be a positive number, got {config.adagrad_eps} (the default is {defaults.adagrad_eps})"
        )
    for name, choices in (("loss_reduction", ("mean", "sum")), ("adagrad_eps_placement", ("outside", "inside"))):
        if getattr(config, name) not in choices:  # a checkpoint's value: argparse has checked typed ones
            return f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, got {getattr(config, name)!r}"
    if config.max_steps is not None and config.max_steps <= 0:
        return f"--max-steps must be positive (leave it out for no limit), got {config.max_steps}"
    if not 0 <= config.val_frac < 1:
        return f"--val-frac must be in [0, 1) (0 turns validation off), got {config.val_frac}"
    if not (config.val_max_chars == 0 or config.val_max_chars >= 2):
        return f"--val-max-chars must be 0 (all the held-out text) or at least 2, got {config.val_max_chars}"
    if not 0 <= config.seed < 2**63:
        return f"--seed must be in [0, 2^63), got {config.seed}"
    if config.threads is not None and config.threads <= 0:
        return f"--threads must be positive, got {config.threads}"
    if config.sample_length > MAX_SAMPLE_LENGTH:
        return f"--sample-length must be at most {MAX_SAMPLE_LENGTH:,}, got {config.sample_length:,}"
    if not config.dist_timeout > 0:
        return f"--dist-timeout must be a positive number of seconds, got {config.dist_timeout}"
    problem = run_name_problem(config.run_name) or cell_problem(config.cell)
    if problem:
        return problem
    return device_problem(config) or check_encoding(config.encoding)


def run_memory_problem(config: TrainConfig, vocab_size: int) -> str | None:
    """Whether the run's engines fit in the memory this machine has available (compare.model.init.estimated_memory)."""
    needed = estimated_memory(
        vocab_size,
        config.hidden_size,
        config.cell,
        config.num_layers,
        config.batch_size,
        config.seq_length,
        dtype_bytes=4 if config.dtype == "float32" else 8,
        engines=2 if config.impl == "both" else 1,
    )
    what = f"training (--hidden-size {config.hidden_size}, --num-layers {config.num_layers}, vocabulary {vocab_size})"
    return memory_problem(needed, what, "lower --hidden-size, --num-layers, --batch-size or --seq-length")


def device_problem(config: TrainConfig) -> str | None:
    """--device cuda needs the torch implementation and a GPU that torch can see."""
    if config.device != "cuda":
        return None
    if config.impl == "manual":
        return (
            "--device cuda places the torch implementation; --impl manual runs on the CPU only: "
            "use --impl torch or both, or --device cpu"
        )
    import torch

    if not torch.cuda.is_available():
        return (
            f"--device cuda: torch {torch.__version__} sees no CUDA GPU on this machine; "
            "use --device cpu (or a CUDA build of torch on a GPU machine)"
        )
    return None


def config_conflicts(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """'--flag value (checkpoint: value)' for each setting that differs but may not change on resume."""
    return [
        f"--{name.replace('_', '-')} {value} (checkpoint: {stored.get(name)})"
        for name, value in wanted.items()
        if name not in RESUME_MAY_CHANGE and value != stored.get(name)
    ]


def resumed_settings(resume: str, given: dict[str, Any]) -> dict[str, Any]:
    """The settings of the run that ``resume`` points at, with the ``given`` flags applied.

    ``given`` holds only what was typed on the command line (its --cell is how a cell of your own the
    checkpoint records is vouched for: compare.model.cells.checkpoint_cell). The run continues in the run
    directory that holds the checkpoint file unless --logdir or --run-name say otherwise; for a
    file kept outside any run directory, run_name is None: train() names a new run under --logdir
    (default runs/). The logdir and run name stored in the checkpoint are never used.
    """
    source = resume_source(resume)
    vouched = given.get("cell")  # how a cell of your own is vouched for; a built-in one is compared below
    stored = load_checkpoint(source, None if vouched in BUILTIN_CELLS else vouched).config
    conflicts = config_conflicts(stored, given)
    if conflicts:
        raise CheckpointError(
            f"these flags conflict with the checkpoint {source}: {'; '.join(conflicts)}; drop them to resume"
        )
    settings = {**stored, **given}
    run_dir = run_dir_of(source)
    if "logdir" not in given:
        settings["logdir"] = str(run_dir.parent) if run_dir is not None else TrainConfig().logdir
    if "run_name" not in given:
        settings["run_name"] = run_dir.name if run_dir is not None else None
    return settings
