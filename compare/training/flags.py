"""The command line of ``python -m compare.train``: its flags, in groups, and parse_args, which reads them.

Each add_*_flags function is one group of ``--help``, a help string per flag. No flag carries its own
default: they all come from TrainConfig (compare.training.config), so each default is written once.

parse_args lays the settings on top of each other: TrainConfig's defaults, then ``--preset``'s, then the
flags typed. With ``--resume`` the checkpoint's settings take the defaults' place
(compare.training.config.resumed_settings).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict

from compare.cli.parser import CommandParser
from compare.data.corpus import BUILTIN_CORPORA, DEFAULT_VAL_MAX_CHARS, PROSE, PYDOC_TOPICS
from compare.model.cells import CELL_HELP, record_name
from compare.model.checkpoint import CheckpointError
from compare.training.config import PRESETS, TrainConfig, config_problem, resumed_settings


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
