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

from compare.checkpoint import BEST, LATEST, find_checkpoint, load_checkpoint
from compare.data import Vocab
from compare.sampling import sample_text


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
        prog="python -m compare.sample",
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
    config = SampleConfig(**vars(parser.parse_args(argv)))
    if config.length < 0:
        parser.error(f"--length must be >= 0, got {config.length}")
    if not config.temperature >= 0:  # also catches nan
        parser.error(f"--temperature must be >= 0 (0 means always the most likely character), got {config.temperature}")
    if config.top_k is not None and config.top_k < 1:
        parser.error(f"--top-k must be a positive number of characters, got {config.top_k}")
    return config


def generate_from_checkpoint(config: SampleConfig) -> str:
    """The prime followed by ``config.length`` generated characters."""
    from compare.engines import make_engine  # imports torch: only once the arguments are known to be good

    checkpoint = load_checkpoint(find_checkpoint(config.checkpoint, config.impl, names=(BEST, LATEST)))
    vocab = Vocab(checkpoint.vocab)
    if config.prime:
        try:
            vocab.encode(config.prime)  # fail on unknown characters before building anything
        except ValueError as error:
            raise ValueError(f"--prime has {error}") from None
    settings = checkpoint.config
    # float64 whatever the training dtype: float32 weights are exact in float64, and the two
    # implementations' probabilities then differ by ~1e-16, far too little to change a draw.
    engine = make_engine(config.impl or checkpoint.impl, checkpoint.engine.params,
                         settings["lr"], settings["clip"], "float64")
    text = sample_text(engine, vocab, config.length, config.temperature, config.prime, config.seed, config.top_k)
    return (config.prime or "") + text


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        text = generate_from_checkpoint(config)
    except ValueError as error:  # CheckpointError included: a one-line reason, no traceback
        print(f"python -m compare.sample: error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
