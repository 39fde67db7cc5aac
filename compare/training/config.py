"""The settings of ``python -m compare.train``, from the command line to the run they describe.

    TrainConfig        every setting and its default (each default is written here once)
    PRESETS            --preset original: min-char-rnn's training rule (docs/original.md)
    build_parser       the flags, in groups, one per section of ``--help``
    parse_args         defaults, then the preset, then the flags typed; with --resume the checkpoint's
                       settings take the defaults' place (resumed_settings); then config_problem
    RunSpec            what parsing resolves once: the cell pair, the loaded corpus, the dtype (describe_run)
    torch_thread_choice  torch's thread count without --threads, a rule on the configuration

A resumed run takes its settings from the checkpoint; the flags typed on the command line are applied
on top, and those that would change the model or the trajectory (hidden size, learning rate, seed, ...)
are refused with a one-line error. Where a resume writes is never taken from the checkpoint (see
compare.training.run).

How many threads torch trains on without --threads, measured with the torch twin on an idle two-core
machine (docs/training.md#threads): while the step is small, a second thread slowed it down (a step is
then many small operations, each of which pays to hand work to the thread pool); it sped the step up
once either the recurrent weights W, G*H*H entries (G gate blocks: 1 rnn, 4 lstm, 3 gru), or the
recurrence's work per time step, B*G*H*H multiply-adds of W h_{t-1}, was large. So torch gets 1 thread
while both are below the thresholds here, and every core the process may use otherwise. With --impl
both, torch gets 1 thread at every size: each step then runs NumPy's BLAS and torch's thread pool in
turn on the same cores, and torch on every core made the step of the two together slower. Besides
--impl, the rule reads cell, hidden_size and batch_size only, which a resume may not change: a resumed
run with the same flags picks what the uninterrupted one picked (a thread count can change torch's float
results). It does not see the machine's load: on a busy machine one thread wins at every size (pass
--threads 1)."""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compare.benchmarks.flops import available_cores
from compare.cli.errors import UsageError
from compare.cli.parser import CommandParser
from compare.data.corpus import (
    BUILTIN_CORPORA,
    DEFAULT_VAL_MAX_CHARS,
    PROSE,
    PYDOC_TOPICS,
    Corpus,
    check_encoding,
    load_corpus,
)
from compare.model.cells import (
    BUILTIN_CELLS,
    CELL_HELP,
    CellPair,
    cell_problem,
    flow_problem,
    manual_cell,
    record_name,
    resolve_cell,
)
from compare.model.checkpoint import BEST, CheckpointError, find_checkpoint, load_checkpoint, run_dir_of
from compare.model.init import (
    SIZE_LIMITS,
    estimated_memory,
    forward_mode_cost,
    memory_estimate,
    memory_problem,
    size_problem,
)
from compare.model.sampling import MAX_SAMPLE_LENGTH
from compare.model.state import OPTIMIZER_ARRAYS, OPTIMIZERS
from manual.lr_schedule import SCHEDULES, LRSchedule

DEFAULT_TIMEOUT_S = 300.0  # seconds a data-parallel rank waits for the others (--dist-timeout)
HESSIAN_FREE_LR = 1.0  # --optimizer hf's default --lr: Martens' full step, the damping sizes it
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
        "segment_length",  # memory for time: the losses move only within rounding (docs/memory.md#in-training)
    }
)


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
ONE_THREAD_WEIGHTS = 2**16  # G*H*H entries of W below which a second thread did not pay (measured)
ONE_THREAD_STEP_WORK = 2**20  # B*G*H*H multiply-adds per time step below which it did not pay (measured)
# What torch reads, in this order, for its own default when it is imported (torchrun sets the first)
TORCH_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
SIZE_FIELDS = ("cell", "hidden_size", "batch_size")  # what default_torch_threads reads of a config, with impl


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
    segment_length: int = 0  # checkpointed BPTT: keep the state every k steps, recompute in backward; 0: off
    batch_size: int = 1
    lr: float = 0.05  # the original's 0.1 latches some seeds on the prose corpus (docs/training.md)
    clip: float = 5.0
    loss_reduction: str = "mean"  # 'sum': minimize the sum over the T*B characters (min-char-rnn); logs stay per char
    adagrad_eps: float = 1e-10  # torch.optim.Adagrad's default
    adagrad_eps_placement: str = "outside"  # 'outside': sqrt(G) + eps (PyTorch); 'inside': sqrt(G + eps) (min-char-rnn)
    grad: str = "bptt"  # 'rtrl': forward mode, the influence carried across chunks (docs/forward.md)
    optimizer: str = "adagrad"  # or 'rmsprop' (char-rnn's), 'adam' (PyTorch's), 'hf' (Hessian-free, Martens 2010)
    clip_norm: float = 0.0  # > 0: scale the gradients to this global 2-norm (after --clip); 0: off
    lr_schedule: str = "constant"  # 'step': times lr_decay every lr_decay_every epochs; 'cosine': to 0 over --epochs
    lr_decay: float = 0.97  # char-rnn's learning_rate_decay
    lr_decay_every: int = 1  # epochs
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
    overwrite: bool = False  # a new training may replace a run directory's checkpoints (run.opening)


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
    if config.segment_length < 0:
        return f"--segment-length must be >= 0 (0 keeps every step: plain BPTT), got {config.segment_length}"
    if config.gradflow_every < 0:
        return f"--gradflow-every must be >= 0 (0 turns it off), got {config.gradflow_every}"
    if not config.clip >= 0:
        return f"--clip must be >= 0 (0 turns clipping off), got {config.clip}"
    if not (math.isfinite(config.clip_norm) and config.clip_norm >= 0):
        return f"--clip-norm must be a number >= 0 (0 turns it off), got {config.clip_norm}"
    if not (math.isfinite(config.lr_decay) and 0 < config.lr_decay <= 1):
        return f"--lr-decay must be in (0, 1] (the factor the rate is multiplied by), got {config.lr_decay}"
    if config.lr_decay_every <= 0:
        return f"--lr-decay-every must be a positive number of epochs, got {config.lr_decay_every}"
    if config.gradflow_every and (problem := flow_problem(config.cell)):
        return f"--gradflow-every: {problem}; or leave --gradflow-every out"
    if config.agree_every < 0:
        return f"--agree-every must be >= 0 (0 turns the measurement off), got {config.agree_every}"
    if not (math.isfinite(config.adagrad_eps) and config.adagrad_eps > 0):
        return (
            f"--adagrad-eps must be a positive number, got {config.adagrad_eps} (the default is {defaults.adagrad_eps})"
        )
    for name, choices in (
        ("loss_reduction", ("mean", "sum")),
        ("adagrad_eps_placement", ("outside", "inside")),
        ("optimizer", OPTIMIZERS),
        ("lr_schedule", SCHEDULES),
    ):
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
    problem = run_name_problem(config.run_name) or cell_problem(config.cell) or gradient_problem(config)
    problem = problem or hessian_free_problem(config)
    if problem:
        return problem
    return device_problem(config) or check_encoding(config.encoding)


@dataclass(frozen=True)
class RunSpec:
    """A TrainConfig with each setting resolved once (describe_run): nothing below resolves its strings again.

    ``config`` keeps the strings (``cell`` as configs and checkpoints record it); the run trains with these.
    """

    config: TrainConfig
    cell: CellPair  # config.cell: both sides of the cell
    corpus: Corpus  # config.data (or .corpus), read, split and checked
    dtype: np.dtype  # config.dtype


def describe_run(config: TrainConfig | RunSpec) -> RunSpec:
    """The run ``config`` describes: the corpus read, the cell resolved, the memory they need checked."""
    if isinstance(config, RunSpec):
        return config
    corpus = load_corpus(config)  # a bad --data fails here, in a second, before torch is even imported
    cell = resolve_cell(config.cell)
    problem = run_memory_problem(config, len(corpus.vocab), cell) or forward_mode_problem(config, len(corpus.vocab))
    if problem:
        raise UsageError(problem)
    return RunSpec(config, cell, corpus, np.dtype(config.dtype))


def run_memory_needed(config: TrainConfig, vocab_size: int, cell: CellPair | None = None) -> int:
    """Bytes the run's engines hold at the least (compare.model.init.estimated_memory), checkpointed BPTT included;
    ``cell``: config.cell resolved (None: resolved here)."""
    return estimated_memory(
        vocab_size,
        config.hidden_size,
        config.cell if cell is None else cell,
        config.num_layers,
        config.batch_size,
        config.seq_length,
        dtype_bytes=4 if config.dtype == "float32" else 8,
        engines=2 if config.impl == "both" else 1,
        segment_length=config.segment_length,
        optimizer_arrays=OPTIMIZER_ARRAYS[config.optimizer],
    )


def run_memory_problem(config: TrainConfig, vocab_size: int, cell: CellPair | None = None) -> str | None:
    """Whether the run's engines fit in the memory this machine has available; the fix names --segment-length
    while the run keeps every step."""
    needed = run_memory_needed(config, vocab_size, cell)
    what = f"training (--hidden-size {config.hidden_size}, --num-layers {config.num_layers}, vocabulary {vocab_size})"
    fix = "lower --hidden-size, --num-layers, --batch-size or --seq-length"
    if config.segment_length == 0 or config.segment_length >= config.seq_length:
        fix += ", or keep fewer steps with --segment-length (checkpointed BPTT: docs/memory.md)"
    return memory_problem(needed, what, fix)


def memory_line(config: TrainConfig, vocab_size: int, cell: CellPair | None = None) -> str:
    """'memory: at least 12 MB (an estimate; 3.1 GB available)', printed before a run starts."""
    kept = f"checkpointed BPTT, the state kept every {config.segment_length} steps" if config.segment_length else ""
    return f"memory: {memory_estimate(run_memory_needed(config, vocab_size, cell), kept)}"


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
    # A cosine schedule runs to 0 at the end of --epochs: other epochs, another schedule
    fixed = {"epochs"} if stored.get("lr_schedule") == "cosine" else set()
    return [
        f"--{name.replace('_', '-')} {value} (checkpoint: {stored.get(name)})"
        for name, value in wanted.items()
        if (name not in RESUME_MAY_CHANGE or name in fixed) and value != stored.get(name)
    ]


def lr_schedule_of(config: TrainConfig, steps_per_epoch: int) -> LRSchedule:
    """The run's learning-rate schedule, counted in updates (steps_per_epoch of them an epoch)."""
    return LRSchedule(
        config.lr_schedule,
        every=config.lr_decay_every * steps_per_epoch,
        gamma=config.lr_decay,
        horizon=config.epochs * steps_per_epoch,
    )


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


def build_parser(with_defaults: bool = True) -> CommandParser:
    """The CLI. Without defaults, parsing yields only the flags typed: what a resume applies."""
    parser = CommandParser(
        prog="python -m compare.train",
        description="Train the character RNN by hand-written BPTT (manual), by autograd (torch), or both in lockstep.",
        argument_default=None if with_defaults else argparse.SUPPRESS,
    )
    add_implementation_flags(parser)
    add_data_flags(parser)
    add_model_flags(parser)
    add_optimization_flags(parser)
    add_gradient_flags(parser)
    add_memory_flags(parser)
    add_logging_flags(parser)
    add_checkpoints_flags(parser)
    if with_defaults:
        parser.set_defaults(**asdict(TrainConfig()))
    return parser


def add_implementation_flags(parser: CommandParser) -> None:
    impl = parser.add_argument_group("implementation")
    impl.add_argument(
        "--impl",
        choices=["manual", "torch", "both"],
        help="which implementation trains; 'both' runs them side by side on the same batches",
    )
    impl.add_argument(
        "--dtype",
        choices=["float32", "float64"],
        help="floating-point type of parameters and activations in both implementations",
    )
    impl.add_argument(
        "--threads",
        type=int,
        help="threads for NumPy's BLAS and for torch (default: NumPy's BLAS keeps its own; torch gets 1 thread "
        "while the G*H*H weights of W and the B*G*H*H multiply-adds per time step are few (G gate blocks: rnn 1, "
        "lstm 4, gru 3) and every core otherwise, 1 thread with --impl both, unless OMP_NUM_THREADS or "
        "MKL_NUM_THREADS sets it; the run prints its choice: docs/training.md#threads)",
    )
    impl.add_argument(
        "--device",
        choices=["cpu", "cuda"],
        help="where the torch implementation runs; manual always runs on the CPU, so --impl both "
        "with cuda compares a GPU torch run with the CPU manual one",
    )
    impl.add_argument(
        "--dist-timeout",
        type=float,
        help="under torchrun: seconds a rank waits for the others in a collective before it stops "
        "with an error (a rank that dies is noticed at once)",
    )


def add_data_flags(parser: CommandParser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--data", help="UTF-8 text file to train on (default: the built-in corpus that --corpus names)")
    data.add_argument(
        "--corpus",
        choices=BUILTIN_CORPORA,
        help=f"the built-in corpus, without --data: {PROSE} (CPython's pydoc topics with the code, grammar "
        f"and tables removed, paragraphs re-flowed; compare/data/prose.py) or {PYDOC_TOPICS} (the topics "
        "whole: the corpus of earlier figures); it changes the text, so a resume keeps the checkpoint's",
    )
    data.add_argument("--encoding", help="encoding of --data (e.g. latin-1, utf-16)")
    data.add_argument(
        "--errors",
        choices=["strict", "replace", "ignore"],
        help="bytes --encoding cannot decode: stop with an error (strict), replace them with "
        "U+FFFD (replace) or drop them (ignore)",
    )
    data.add_argument(
        "--val-frac",
        type=float,
        help="fraction of the text, taken from its end, held out for validation; "
        "0 trains on all of it, without validation and without best.npz",
    )
    data.add_argument(
        "--val-max-chars",
        type=int,
        help=f"validate on at most this many characters: the start of the held-out split "
        f"(default {DEFAULT_VAL_MAX_CHARS:,}, a few seconds per pass); 0 uses all of it; "
        "it changes the validation loss, so a resume keeps the checkpoint's",
    )


def add_model_flags(parser: CommandParser) -> None:
    model = parser.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, help="H, the size of the hidden state")
    model.add_argument(
        "--cell",
        metavar="CELL",
        help=CELL_HELP,
    )
    model.add_argument("--num-layers", type=int, help="stacked recurrent layers (char-rnn uses 2)")


def add_optimization_flags(parser: CommandParser) -> None:
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--seq-length", type=int, help="T, characters per chunk: how far back truncated BPTT reaches")
    optim.add_argument("--batch-size", type=int, help="B, parallel streams the text is split into")
    optim.add_argument(
        "--lr",
        type=float,
        help="learning rate of --optimizer (AdaGrad's default 0.05; try 2e-3 for "
        "RMSProp, as char-rnn, and 1e-3 for Adam; hf's default 1: the multiple of CG's step taken)",
    )
    optim.add_argument(
        "--clip", type=float, help="clip every gradient entry to [-clip, clip] before the update; 0 turns clipping off"
    )
    optim.add_argument(
        "--loss-reduction",
        choices=["mean", "sum"],
        help="the loss minimized: the mean over the batch's T*B characters (PyTorch's), or their sum "
        "(min-char-rnn's: T*B times the mean's gradient, and --clip bounds that one); the logged losses "
        "stay in nats per character either way",
    )
    optim.add_argument("--adagrad-eps", type=float, help="AdaGrad's eps (default 1e-10, PyTorch's; min-char-rnn 1e-8)")
    optim.add_argument(
        "--adagrad-eps-placement",
        choices=["outside", "inside"],
        help="AdaGrad's denominator: sqrt(G) + eps (outside, torch.optim.Adagrad) "
        "or sqrt(G + eps) (inside, min-char-rnn)",
    )
    optim.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        help="the update: adagrad (torch.optim.Adagrad's), rmsprop (char-rnn's: decay 0.95, eps 1e-8 outside the "
        "root; torch.optim.RMSprop(alpha=0.95)), adam (torch.optim.Adam's: betas 0.9, 0.999, eps 1e-8, bias "
        "correction) or hf (Hessian-free, Martens 2010: 10 conjugate-gradient steps on (G + lambda I) d = -g, G the "
        "Gauss-Newton matrix, lambda from 1 by Levenberg-Marquardt's rule; about 25 forward-backward passes a "
        "step); written by hand in manual, taken from torch.optim (hf: on torch.func's G v) in torch "
        "(docs/training.md#optimizers)",
    )
    optim.add_argument(
        "--clip-norm",
        type=float,
        help="scale all the gradients together down to this global 2-norm when theirs is larger, as "
        "torch.nn.utils.clip_grad_norm_ (char-rnn's grad_clip is element-wise: --clip); applied after --clip; "
        "0 (the default) turns it off",
    )
    optim.add_argument(
        "--lr-schedule",
        choices=SCHEDULES,
        help="the learning rate over training: constant (--lr throughout), step (char-rnn's decay: times --lr-decay "
        "every --lr-decay-every epochs, torch.optim.lr_scheduler.StepLR) or cosine (from --lr down to 0 at the end "
        "of --epochs, CosineAnnealingLR; a resume may then not change --epochs); by hand in manual, from torch "
        "in torch",
    )
    optim.add_argument("--lr-decay", type=float, help="--lr-schedule step: the factor (default 0.97, char-rnn's)")
    optim.add_argument("--lr-decay-every", type=int, help="--lr-schedule step: epochs between decays (default 1)")
    optim.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        help="original: min-char-rnn.py's training (loss summed over the chunk, AdaGrad eps 1e-8 inside the root, "
        "clip 5, lr 0.1, hidden 100, seq 25, batch 1, float64, no validation split, a sample every 100 steps); "
        "flags typed beside it override the preset's values",
    )
    optim.add_argument("--epochs", type=int, help="passes over the training text")
    optim.add_argument(
        "--max-steps", type=int, help="stop after this many steps even if epochs remain (default: no limit)"
    )
    optim.add_argument("--seed", type=int, help="seed of the weight initializer and of sampling")


# ----- --grad: how the gradient is computed (docs/forward.md) -------------------------------------------


def add_gradient_flags(parser: CommandParser) -> None:
    gradient = parser.add_argument_group("gradient (docs/forward.md)")
    gradient.add_argument(
        "--grad",
        choices=["bptt", "rtrl"],
        help="bptt: reverse mode, cut at each chunk's start (the state carried, its dependence on the weights "
        "not); rtrl: forward mode, exact through every chunk before (manual: RTRL by hand, torch: forward-mode "
        "autograd); O(H^4) per step: small models, one layer, built-in cells only",
    )


def gradient_problem(config: TrainConfig) -> str | None:
    """--grad's value, and what --grad rtrl needs of the model (before the corpus is read)."""
    if config.grad not in ("bptt", "rtrl"):  # a checkpoint's value: argparse has checked a typed one
        return f"--grad must be one of bptt, rtrl, got {config.grad!r}"
    if config.grad == "rtrl" and config.num_layers != 1:
        return f"--grad rtrl trains one layer (RTRL by hand is written for one), got --num-layers {config.num_layers}"
    if config.grad == "rtrl" and config.segment_length:
        return "--grad rtrl carries the gradient forward and keeps no cache to checkpoint: leave out --segment-length"
    if config.grad == "rtrl" and config.cell not in ("rnn", "lstm", "gru"):
        return f"--grad rtrl needs a built-in cell (rnn, lstm, gru), whose step Jacobians it has; got {config.cell}"
    return None


def hessian_free_problem(config: TrainConfig) -> str | None:
    """What --optimizer hf is written for: G v on plain BPTT's cache of a built-in cell, a constant --lr."""
    if config.optimizer != "hf":
        return None
    if config.grad != "bptt" or config.segment_length:
        flag = "--grad rtrl" if config.grad != "bptt" else "--segment-length"
        return f"--optimizer hf takes its Gauss-Newton products on plain BPTT's cache: leave out {flag}"
    if config.lr_schedule != "constant":
        return "--optimizer hf takes a constant --lr (its damping sizes the step): leave out --lr-schedule"
    if config.cell not in ("rnn", "lstm", "gru"):
        return f"--optimizer hf needs a built-in cell (rnn, lstm, gru), whose G v is written by hand; got {config.cell}"
    return None


def forward_mode_problem(config: TrainConfig, vocab_size: int) -> str | None:
    """--grad rtrl past the sizes where forward mode is practical: one line with its cost, or None."""
    if config.grad != "rtrl":
        return None
    cost = forward_mode_cost(vocab_size, config.hidden_size, config.cell, config.batch_size, config.seq_length)
    return cost.problem(f"--grad rtrl (--hidden-size {config.hidden_size}, --batch-size {config.batch_size})")


def add_memory_flags(parser: CommandParser) -> None:
    memory = parser.add_argument_group("memory (long sequences)")
    memory.add_argument(
        "--segment-length",
        type=int,
        metavar="K",
        help="checkpointed BPTT: keep the carried state every K steps and recompute each K-step segment's cache "
        "in the backward pass (about T/K states and one segment kept instead of T steps, for one more forward "
        "pass; the losses agree with a plain run within rounding); 0 keeps every step (plain BPTT). A resume may "
        "change it (docs/memory.md#in-training)",
    )


def add_logging_flags(parser: CommandParser) -> None:
    logging = parser.add_argument_group("logging")
    logging.add_argument("--logdir", help="TensorBoard log root")
    logging.add_argument(
        "--run-name",
        help="run directory under --logdir (default: <cell>-<n>, e.g. rnn-3: n is the first number not yet taken)",
    )
    logging.add_argument("--log-every", type=int, help="steps between scalar logs")
    logging.add_argument(
        "--eval-every",
        type=int,
        help="steps between validation losses (and best.npz updates) (default: a tenth of the run's steps)",
    )
    logging.add_argument(
        "--agree-every",
        type=int,
        help="--impl both: steps between measurements of the implementation error (agree/*: manual and "
        "autograd on the same weights, state and batch); 0 turns them off",
    )
    logging.add_argument("--sample-every", type=int, help="steps between text samples written to TensorBoard")
    logging.add_argument("--sample-length", type=int, help="characters in each text sample")
    logging.add_argument(
        "--gradflow-every",
        type=int,
        help="steps between gradflow/* scalars: how far back the batch's last-step loss reaches "
        "(docs/gradflow.md); 0 turns them off",
    )


def add_checkpoints_flags(parser: CommandParser) -> None:
    checkpoints = parser.add_argument_group("checkpoints")
    checkpoints.add_argument(
        "--checkpoint-every",
        type=int,
        help="steps between saves of latest.npz (it is also saved at the end and on Ctrl-C)",
    )
    checkpoints.add_argument(
        "--resume",
        help="continue from a run directory (runs/<run> or runs/<run>/<impl>) or a checkpoint "
        "file, with its settings; only --impl, --data (same text), --threads, --device, "
        "--dist-timeout, --segment-length, --epochs, --max-steps and the logging and checkpoint flags may "
        "differ. It trains on in the run directory that holds the checkpoint (or in --logdir/"
        "--run-name when given); a checkpoint kept elsewhere starts a new run under --logdir",
    )
    checkpoints.add_argument(
        "--overwrite",
        action="store_true",
        help="a new training (no --resume) into a --run-name whose directory holds checkpoints replaces that "
        "run: its checkpoints and TensorBoard events are deleted first. Without it such a training is refused",
    )


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    settings = vars(parser.parse_args(argv))
    preset = PRESETS.get(settings.pop("preset", None) or "", {})
    typed = vars(build_parser(with_defaults=False).parse_args(argv))
    typed.pop("preset", None)
    if "cell" in typed:  # as the checkpoint records it: a file's path made absolute
        typed["cell"] = record_name(typed["cell"])
    config = TrainConfig(**{**settings, **preset, **typed})  # typed flags win over the preset, it over the defaults
    if config.optimizer == "hf" and "lr" not in {**preset, **typed}:
        config.lr = HESSIAN_FREE_LR
    if config.resume:
        try:
            config = TrainConfig(**resumed_settings(config.resume, {**preset, **typed}))
        except CheckpointError as error:
            parser.error(str(error))
    problem = config_problem(config)
    if problem:
        parser.error(problem)
    config.cell = record_name(config.cell)  # a cell's file path made absolute: a resume from elsewhere finds it
    return config


@dataclass(frozen=True)
class ThreadChoice:
    """torch's thread count for a run and why; threads None: left as an environment variable set it."""

    threads: int | None
    reason: str

    def line(self) -> str:
        """'torch threads: 1 (auto: ...; --threads N to choose)'."""
        return f"torch threads: {self.threads} ({self.reason})"


def default_torch_threads(gates: int, hidden_size: int, batch_size: int, cores: int) -> ThreadChoice:
    """1 thread while G*H*H and B*G*H*H are both below their thresholds, else ``cores``."""
    weights = gates * hidden_size * hidden_size
    work = batch_size * weights
    sizes = {"G*H^2": (weights, ONE_THREAD_WEIGHTS), "B*G*H^2": (work, ONE_THREAD_STEP_WORK)}
    reached = [f"{name} = {size:,} >= {limit:,}" for name, (size, limit) in sizes.items() if size >= limit]
    if not reached:
        below = " and ".join(f"{name} = {size:,} below {limit:,}" for name, (size, limit) in sizes.items())
        return ThreadChoice(1, f"auto: {below}; --threads N to choose")
    return ThreadChoice(
        cores,
        f"auto: the {cores} core{'s' if cores != 1 else ''} this process may use, as {' and '.join(reached)}; "
        "--threads N to choose",
    )


def torch_thread_choice(config: TrainConfig, environ: Mapping[str, str], cell: CellPair | None = None) -> ThreadChoice:
    """--threads when given; else the environment's count when it sets one; else 1 for --impl both; else the rule."""
    if config.threads is not None:
        return ThreadChoice(config.threads, "--threads")
    for name in TORCH_THREAD_VARIABLES:
        if environ.get(name):
            return ThreadChoice(None, f"{name}={environ[name]} in the environment; --threads N to choose")
    if config.impl == "both":
        return ThreadChoice(
            1, "auto: --impl both, where NumPy's BLAS and torch take turns on the cores; --threads N to choose"
        )
    gates = int(manual_cell(config.cell if cell is None else cell).GATES)  # cell: config.cell resolved
    return default_torch_threads(gates, config.hidden_size, config.batch_size, available_cores())


def apply_torch_threads(config: TrainConfig, cell: CellPair | None = None) -> ThreadChoice:
    """Set torch's thread count as torch_thread_choice says; returns the count torch then runs on, and why."""
    import torch

    choice = torch_thread_choice(config, os.environ, cell)
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return ThreadChoice(torch.get_num_threads(), choice.reason)
