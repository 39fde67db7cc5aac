"""What ``python -m compare.train`` trains: the settings, their flags, and how a resume merges them.

A resumed run takes its settings from the checkpoint; the flags typed on the command
line are applied on top, and those that would change the model or the trajectory
(hidden size, learning rate, seed, ...) are refused with a one-line error. Where a resume
writes is never taken from the checkpoint (see compare.training.rundir).

``--preset original`` sets min-char-rnn's training rule (PRESETS; docs/original.md); the flags
typed beside it override it.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import asdict, dataclass
from typing import Any

from compare.cli.parser import CommandParser
from compare.data.corpus import BUILTIN_CORPORA, PROSE, PYDOC_TOPICS
from compare.data.inputs import DEFAULT_VAL_MAX_CHARS, check_encoding
from compare.model.cells import CELL_HELP, cell_problem, flow_problem, record_name
from compare.model.checkpoint import CheckpointError, load_checkpoint, run_dir_of
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
    optim.add_argument("--lr", type=float, help="AdaGrad learning rate")
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
        "--dist-timeout, --epochs, --max-steps and the logging and checkpoint flags may "
        "differ. It trains on in the run directory that holds the checkpoint (or in --logdir/"
        "--run-name when given); a checkpoint kept elsewhere starts a new run under --logdir",
    )


def parse_args(argv: list[str] | None = None) -> TrainConfig:
    parser = build_parser()
    settings = vars(parser.parse_args(argv))
    preset = PRESETS.get(settings.pop("preset", None) or "", {})
    typed = vars(build_parser(with_defaults=False).parse_args(argv))
    typed.pop("preset", None)
    config = TrainConfig(**{**settings, **preset, **typed})  # typed flags win over the preset, it over the defaults
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

    ``given`` holds only what was typed on the command line. The run continues in the run
    directory that holds the checkpoint file unless --logdir or --run-name say otherwise; for a
    file kept outside any run directory, run_name is None: train() names a new run under --logdir
    (default runs/). The logdir and run name stored in the checkpoint are never used.
    """
    source = resume_source(resume)
    stored = load_checkpoint(source).config
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
