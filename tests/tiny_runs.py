"""Tiny training runs for the checkpoint and sampling tests: a few seconds each, float64."""

from __future__ import annotations

from pathlib import Path

# A few words repeated: a small model learns them in a few hundred steps, and an
# untrained model is very unlikely to spell any of them by chance (27 characters).
PHRASE = "the quick brown fox jumps over the lazy dog. "
WORDS = ("quick", "brown", "jumps", "over", "lazy")


def write_corpus(directory: Path, repeats: int = 20) -> Path:
    """PHRASE * repeats (900 characters by default) in ``directory``/corpus.txt."""
    path = directory / "corpus.txt"
    path.write_text(PHRASE * repeats)
    return path


def train_argv(directory: Path, run_name: str = "run", **flags) -> list:
    """Command-line arguments for a small float64 run on the tiny corpus in ``directory``.

    With these settings an epoch is 42 steps (855 training characters, 2 streams of 10).
    ``flags`` add or replace settings: max_steps=90 becomes --max-steps 90.
    """
    settings = {
        "data": write_corpus(directory),
        "hidden_size": 16,
        "seq_length": 10,
        "batch_size": 2,
        "dtype": "float64",
        "seed": 3,
        "logdir": directory / "runs",
        "run_name": run_name,
        "log_every": 1,
        "eval_every": 20,
        "sample_every": 50,
        "sample_length": 20,
        "checkpoint_every": 25,
    }
    settings.update(flags)
    argv = []
    for name, value in settings.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv
