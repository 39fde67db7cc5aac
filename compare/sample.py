"""Generate text from a checkpoint, with either implementation.

    python -m compare.sample --checkpoint runs/<run>/manual/best.npz --temperature 0.8
    python -m compare.sample --checkpoint runs/<run> --prime "def " --length 300 --seed 7

The implementation only computes probabilities; every draw comes from one NumPy
generator seeded by --seed, so --impl manual and --impl torch print the same text.
"""

from __future__ import annotations

import sys

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser, seed_problem
from compare.model.cells import CHECKPOINT_CELL_HELP
from compare.model.checkpoint import BEST, LATEST, NEWEST_RULE, checkpoint_or_newest
from compare.model.sampling import MAX_SAMPLE_LENGTH, SampleConfig, generate_from_checkpoint

PROG = "python -m compare.sample"


def parse_args(argv: list[str] | None = None) -> SampleConfig:
    parser = CommandParser(
        prog=PROG,
        description="Generate text one character at a time from a training checkpoint.",
    )
    model = parser.add_argument_group("model")
    model.add_argument(
        "--checkpoint",
        default=None,
        help=f"a checkpoint file, or a run directory (runs/<run> or runs/<run>/<impl>): its {BEST}, else its "
        f"{LATEST} (default: {NEWEST_RULE})",
    )
    model.add_argument(
        "--logdir", default="runs", help="where to look for the newest run without --checkpoint (default: %(default)s)"
    )
    model.add_argument(
        "--impl",
        choices=["manual", "torch"],
        default=None,
        help="which implementation computes the probabilities (default: the one that trained it); "
        "both give the same text for the same seed",
    )
    model.add_argument("--cell", metavar="CELL", default=None, help=CHECKPOINT_CELL_HELP)
    generation = parser.add_argument_group("generation")
    generation.add_argument(
        "--length", type=int, default=SampleConfig.length, help="characters to generate (default: %(default)s)"
    )
    generation.add_argument(
        "--temperature",
        type=float,
        default=SampleConfig.temperature,
        help="randomness: 1 samples the model as trained, lower is more conservative, "
        "0 always takes the most likely character (default: %(default)s)",
    )
    generation.add_argument(
        "--top-k", type=int, default=None, help="draw only among the k most likely characters (default: all)"
    )
    generation.add_argument(
        "--prime",
        default=None,
        help="text to warm the hidden state on first; it is printed before the sample (default: a newline)",
    )
    generation.add_argument(
        "--seed", type=int, default=SampleConfig.seed, help="seed of the random draws (default: %(default)s)"
    )
    args = vars(parser.parse_args(argv))
    logdir = args.pop("logdir")
    config = SampleConfig(**args)
    if not 1 <= config.length <= MAX_SAMPLE_LENGTH:
        parser.error(f"--length must be between 1 and {MAX_SAMPLE_LENGTH:,} characters, got {config.length:,}")
    if not config.temperature >= 0:  # also catches nan
        parser.error(f"--temperature must be >= 0 (0 means always the most likely character), got {config.temperature}")
    if config.top_k is not None and config.top_k < 1:
        parser.error(f"--top-k must be a positive number of characters, got {config.top_k}")
    if problem := seed_problem(config.seed):
        parser.error(problem)
    config.checkpoint = checkpoint_or_newest(config.checkpoint, logdir)  # after the flags: a typo fails first
    return config


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli(PROG, sample_command, argv)


def sample_command(argv: list[str]) -> int:
    config = parse_args(argv)
    try:
        text = generate_from_checkpoint(config)
    except ValueError as error:  # e.g. weights that give NaN logits: the checkpoint is unusable
        raise UsageError(str(error)) from error
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
