"""Corpus, vocabulary and batches: the one place that decides what both implementations see."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


def builtin_corpus() -> str:
    """CPython's own reference documentation (``pydoc_data.topics``), about 465,000
    characters, joined in sorted key order so that it is the same on every run."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def load_text(path: str | Path | None, encoding: str = "utf-8", errors: str = "strict") -> str:
    """The text at ``path``, or the built-in corpus when path is None."""
    if path is None:
        return builtin_corpus()
    return Path(path).read_text(encoding=encoding, errors=errors)


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer type that holds every token id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} characters is too large")


def code_points(text: str) -> np.ndarray:
    """(N,) uint32 Unicode code points of ``text``, without a Python loop per character."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


@dataclass(frozen=True)
class Vocab:
    """Sorted characters of the training text; token id = index in ``chars``."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> "Vocab":
        unique = np.unique(code_points(text))  # sorted, never list(set(...))
        return cls("".join(map(chr, unique.tolist())))

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        """(N,) token ids in the smallest integer type; ValueError names unknown characters."""
        points = code_points(text)
        table = code_points(self.chars)
        ids = np.searchsorted(table, points)
        ids_clipped = np.minimum(ids, len(table) - 1)
        unknown = table[ids_clipped] != points
        if unknown.any():
            missing = sorted(set(chr(p) for p in points[unknown].tolist()))
            raise ValueError(f"characters not in the vocabulary: {''.join(missing)!r}")
        return ids.astype(token_dtype(len(table)))

    def decode(self, ids) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1).tolist())


def split_train_val(tokens: np.ndarray, val_frac: float):
    """The last ``val_frac`` of the tokens is held out for validation. Returns (train, val)."""
    n_val = int(round(len(tokens) * val_frac))
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


class StreamBatches:
    """char-rnn batching: B contiguous streams, cut into chunks of ``seq_length``.

    The token array is split into B equal streams, one per batch row, so that the
    hidden state of row s at the end of chunk k is the right state to start chunk
    k + 1 of the same row (truncated BPTT). Targets are inputs shifted by one.
    """

    def __init__(self, tokens: np.ndarray, batch_size: int, seq_length: int):
        stream_length = (len(tokens) - 1) // batch_size
        self.steps_per_epoch = stream_length // seq_length
        if self.steps_per_epoch < 1:
            raise ValueError(
                f"{len(tokens)} characters are too few for one batch of {batch_size} streams "
                f"x {seq_length + 1} characters; lower --batch-size or --seq-length"
            )
        used = batch_size * stream_length
        self.inputs = tokens[:used].reshape(batch_size, stream_length)  # (B, L)
        self.targets = tokens[1 : used + 1].reshape(batch_size, stream_length)  # (B, L), shifted by one
        self.seq_length = seq_length

    def __len__(self) -> int:
        return self.steps_per_epoch

    def get_batch(self, index: int):
        """Chunk ``index`` of the epoch: (inputs, targets), each (B, T) int64."""
        cols = slice(index * self.seq_length, (index + 1) * self.seq_length)
        return self.inputs[:, cols].astype(np.int64), self.targets[:, cols].astype(np.int64)
