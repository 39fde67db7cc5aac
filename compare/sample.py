"""Generate text from a checkpoint, with either implementation.

    python -m compare.sample --checkpoint runs/<run>/manual/best.npz --temperature 0.8
    python -m compare.sample --checkpoint runs/<run> --prime "def " --length 300 --seed 7

The implementation only computes probabilities; every draw comes from one NumPy
generator seeded by --seed, so --impl manual and --impl torch print the same text.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from compare.checkpoint import BEST, LATEST, Checkpoint, find_checkpoint, load_checkpoint
from compare.cli_errors import UsageError, add_debug_flag, run_cli
from compare.data import Vocab
from compare.sampling import MAX_SAMPLE_LENGTH, sample_text

PROG = "python -m compare.sample"


@dataclass
class SampleConfig:
    checkpoint: str
    impl: str | None = None  # None: the implementation that wrote the checkpoint
    length: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    prime: str | None = None  # None: start after a newline
    seed: int = 0


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse, but a bad flag prints one line (no usage block) before exiting with code 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parse_args(argv=None) -> SampleConfig:
    parser = OneLineErrorParser(
        prog=PROG,
        description="Generate text one character at a time from a training checkpoint.",
    )
    model = parser.add_argument_group("model")
    model.add_argument("--checkpoint", required=True,
                       help=f"a checkpoint file, or a run directory (runs/<run> or runs/<run>/<impl>): "
                            f"its {BEST}, else its {LATEST}")
    model.add_argument("--impl", choices=["manual", "torch"], default=None,
                       help="which implementation computes the probabilities (default: the one that trained it); "
                            "both give the same text for the same seed")
    generation = parser.add_argument_group("generation")
    generation.add_argument("--length", type=int, default=SampleConfig.length,
                            help="characters to generate (default: %(default)s)")
    generation.add_argument("--temperature", type=float, default=SampleConfig.temperature,
                            help="randomness: 1 samples the model as trained, lower is more conservative, "
                                 "0 always takes the most likely character (default: %(default)s)")
    generation.add_argument("--top-k", type=int, default=None,
                            help="draw only among the k most likely characters (default: all)")
    generation.add_argument("--prime", default=None,
                            help="text to warm the hidden state on first; it is printed before the sample "
                                 "(default: a newline)")
    generation.add_argument("--seed", type=int, default=SampleConfig.seed,
                            help="seed of the random draws (default: %(default)s)")
    add_debug_flag(parser)
    config = SampleConfig(**vars(parser.parse_args(argv)))
    if not 1 <= config.length <= MAX_SAMPLE_LENGTH:
        parser.error(f"--length must be between 1 and {MAX_SAMPLE_LENGTH:,} characters, got {config.length:,}")
    if not config.temperature >= 0:  # also catches nan
        parser.error(f"--temperature must be >= 0 (0 means always the most likely character), got {config.temperature}")
    if config.top_k is not None and config.top_k < 1:
        parser.error(f"--top-k must be a positive number of characters, got {config.top_k}")
    return config


def sampling_engine(checkpoint: Checkpoint, impl: str | None = None):
    """An engine that computes ``checkpoint``'s probabilities with ``impl`` (default: the one that trained it).

    Sampling only reads the engine's weights, so one engine can serve many threads at once
    (compare.demo does) as long as each call of sample_text brings its own seed.
    """
    from compare.engines import make_engine  # imports torch: only once the arguments are known to be good

    settings = checkpoint.config
    # float64 whatever the training dtype: float32 weights are exact in float64, and the two
    # implementations' probabilities then differ by ~1e-16, far too little to change a draw.
    return make_engine(impl or checkpoint.impl, checkpoint.engine.params, settings["lr"], settings["clip"], "float64",
                       settings.get("cell", "rnn"))


def generate_from_checkpoint(config: SampleConfig) -> str:
    """The prime followed by ``config.length`` generated characters."""
    checkpoint = load_checkpoint(find_checkpoint(config.checkpoint, config.impl, names=(BEST, LATEST)))
    vocab = Vocab(checkpoint.vocab)
    if config.prime:
        try:
            vocab.encode(config.prime)  # fail on unknown characters before building anything
        except ValueError as error:
            raise UsageError(f"--prime has {error}; use characters of the training text") from None
    engine = sampling_engine(checkpoint, config.impl)
    text = sample_text(engine, vocab, config.length, config.temperature, config.prime, config.seed, config.top_k)
    return (config.prime or "") + text


def main(argv=None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli(PROG, sample_command, argv)


def sample_command(argv: list) -> int:
    config = parse_args(argv)
    try:
        text = generate_from_checkpoint(config)
    except ValueError as error:  # e.g. weights that give NaN logits: the checkpoint is unusable
        raise UsageError(str(error)) from error
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
