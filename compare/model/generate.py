"""Text from a checkpoint: what ``python -m compare.sample`` and the demo page print."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from compare.cli.errors import UsageError
from compare.data.corpus import Vocab
from compare.model.checkpoint import BEST, LATEST, Checkpoint, find_checkpoint, load_checkpoint
from compare.model.sampling import sample_text

if TYPE_CHECKING:
    from compare.model.engines import ManualEngine, TorchEngine


@dataclass
class SampleConfig:
    checkpoint: str
    impl: str | None = None  # None: the implementation that wrote the checkpoint
    length: int = 500
    temperature: float = 1.0
    top_k: int | None = None
    prime: str | None = None  # None: start after a newline
    seed: int = 0
    cell: str | None = None  # --cell: the cell of your own the checkpoint records, vouched for (None: built-in)


def sampling_engine(checkpoint: Checkpoint, impl: str | None = None) -> ManualEngine | TorchEngine:
    """An engine that computes ``checkpoint``'s probabilities with ``impl`` (default: the one that trained it).

    Sampling only reads the engine's weights, so one engine can serve many threads at once
    (the demo server does) as long as each call of sample_text brings its own seed.
    """
    from compare.model.engines import make_engine  # imports torch: only once the arguments are known to be good

    settings = checkpoint.config
    # float64 whatever the training dtype: float32 weights are exact in float64, and the two
    # implementations' probabilities then differ by ~1e-16, far too little to change a draw.
    return make_engine(
        impl or checkpoint.impl,
        checkpoint.engine.params,
        settings["lr"],
        settings["clip"],
        "float64",
        settings.get("cell", "rnn"),
    )


def generate_from_checkpoint(config: SampleConfig) -> str:
    """The prime followed by ``config.length`` generated characters."""
    checkpoint = load_checkpoint(find_checkpoint(config.checkpoint, config.impl, names=(BEST, LATEST)), config.cell)
    vocab = Vocab(checkpoint.vocab)
    if config.prime:
        try:
            vocab.encode(config.prime)  # fail on unknown characters before building anything
        except ValueError as error:
            raise UsageError(f"--prime has {error}; use characters of the training text") from None
    engine = sampling_engine(checkpoint, config.impl)
    text = sample_text(engine, vocab, config.length, config.temperature, config.prime, config.seed, config.top_k)
    return (config.prime or "") + text
