"""Corpus, vocabulary and batches: the one place that decides what both implementations see."""

from __future__ import annotations

import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


PROSE = "prose"  # the default: the pydoc topics' sentences (compare.data.prose)
PYDOC_TOPICS = "pydoc-topics"  # the topics whole, code and tables included: the corpus of earlier figures
BUILTIN_CORPORA = (PROSE, PYDOC_TOPICS)


def pydoc_topics() -> str:
    """CPython's own reference documentation (``pydoc_data.topics``), about 465,000
    characters, joined in sorted key order so that it is the same on every run."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def builtin_corpus(name: str = PROSE) -> str:
    """The built-in corpus ``name`` (one of BUILTIN_CORPORA): the same text for a given Python version."""
    if name == PYDOC_TOPICS:
        return pydoc_topics()
    if name == PROSE:
        from compare.data.prose import prose_corpus

        return prose_corpus()
    raise ValueError(f"no built-in corpus {name!r}; there are {', '.join(BUILTIN_CORPORA)}")


def text_codec(encoding: str) -> str:
    """The codec that decodes a file in ``encoding``: for UTF-8, 'utf-8-sig', which drops a leading
    byte order mark (EF BB BF). The mark says how the file is encoded; it is not a character of the
    text. U+FEFF anywhere after the start is kept, as the character it is."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def load_text(path: str | Path | None, encoding: str = "utf-8", errors: str = "strict", corpus: str = PROSE) -> str:
    """The text at ``path``, or the built-in corpus ``corpus`` when path is None."""
    if path is None:
        return builtin_corpus(corpus)
    return Path(path).read_text(encoding=text_codec(encoding), errors=errors)


def token_dtype(vocab_size: int) -> np.dtype:
    """Smallest unsigned integer type that holds every token id."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size - 1 <= np.iinfo(dtype).max:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} characters is too large")


def code_points(text: str) -> np.ndarray:
    """(N,) uint32 Unicode code points of ``text``, without a Python loop per character.

    Costs 4 bytes per character: call it on chunks (``text_chunks``) of a long text.
    """
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


CHUNK_CHARS = 1 << 20  # 1M characters: a 4 MB code-point array at a time, however long the text
UNICODE_SIZE = 0x110000  # code points run from 0 to 0x10FFFF


def text_chunks(text: str, size: int | None = None) -> Iterator[str]:
    """Consecutive pieces of at most ``size`` (default CHUNK_CHARS) characters that join back into ``text``."""
    size = size or CHUNK_CHARS
    for start in range(0, len(text), size):
        yield text[start : start + size]


def mark_present(text: str, present: np.ndarray) -> None:
    """Set ``present[p]`` for every code point p in ``text`` ((0x110000,) bool, updated in place)."""
    for chunk in text_chunks(text):
        present[code_points(chunk)] = True


@dataclass(frozen=True)
class Vocab:
    """Sorted characters of the training text; token id = index in ``chars``."""

    chars: str

    @classmethod
    def from_text(cls, text: str) -> Vocab:
        present = np.zeros(UNICODE_SIZE, dtype=bool)
        mark_present(text, present)
        return cls.from_presence(present)

    @classmethod
    def from_presence(cls, present: np.ndarray) -> Vocab:
        """The characters whose code points are marked in ``present``, in code-point order."""
        return cls("".join(map(chr, np.flatnonzero(present).tolist())))  # sorted, never list(set(...))

    def __len__(self) -> int:
        return len(self.chars)

    @property
    def dtype(self) -> np.dtype:
        """The token ids' integer type: the smallest that holds len(self) - 1."""
        return token_dtype(len(self.chars))

    def id_table(self) -> np.ndarray:
        """(0x110000,) int32: the token id of each code point, -1 for characters not in the vocabulary."""
        table = np.full(UNICODE_SIZE, -1, dtype=np.int32)
        table[code_points(self.chars)] = np.arange(len(self.chars), dtype=np.int32)
        return table

    def encode(self, text: str) -> np.ndarray:
        """(N,) token ids in the smallest integer type; ValueError names unknown characters.

        Works through the text in chunks, so the temporaries stay a few MB however long
        the text: the result (1 byte per character for up to 256 characters) is the only
        large allocation.
        """
        ids = np.empty(len(text), dtype=self.dtype)
        self.encode_into(text, ids, self.id_table())
        return ids

    def encode_into(self, text: str, out: np.ndarray, table: np.ndarray) -> None:
        """Write the ids of ``text`` into ``out`` (len(text),), looking them up in ``id_table()``."""
        start, unknown = 0, set()
        for chunk in text_chunks(text):
            points = code_points(chunk)
            chunk_ids = np.take(table, points)  # a lookup, not a search
            if chunk_ids.min() < 0:
                unknown.update(points[chunk_ids < 0].tolist())  # keep going, to name them all
            else:
                out[start : start + len(chunk)] = chunk_ids
            start += len(chunk)
        if unknown:
            raise ValueError(f"characters not in the vocabulary: {''.join(map(chr, sorted(unknown)))!r}")

    def decode(self, ids: ArrayLike) -> str:
        return "".join(self.chars[i] for i in np.asarray(ids).reshape(-1).tolist())


@dataclass
class EncodedText:
    """A text file as training needs it, read without ever holding the whole text as a str."""

    vocab: Vocab
    tokens: np.ndarray  # (N,) ids in vocab.dtype, one per character
    sha256: str  # hex digest of the text's UTF-8 bytes: the same as text_digest(text)


def text_pieces(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
    """The text of ``path`` as consecutive pieces of at most CHUNK_CHARS characters.

    Read in text mode, like ``load_text``: the same decoding (a leading UTF-8 byte order mark
    dropped), the same newline translation.
    """
    with open(path, encoding=text_codec(encoding), errors=errors) as file:
        while piece := file.read(CHUNK_CHARS):
            yield piece


def encode_file(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> EncodedText:
    """Vocabulary, token ids and digest of a text file, in two passes over the file.

    ``load_text`` then ``Vocab.from_text`` and ``encode`` hold the whole text as a str
    while the ids are made: Python stores a str at the width of its widest character,
    so one curly quote makes it 2 bytes per character, on top of the file's bytes
    while it is decoded. Here pass 1 finds the characters and counts them, and pass 2
    writes the ids into an array allocated once at its final size: the peak is that
    array (1 byte per character for up to 256 distinct characters) plus one piece.
    """
    present = np.zeros(UNICODE_SIZE, dtype=bool)
    digest = hashlib.sha256()
    length = 0
    for piece in text_pieces(path, encoding, errors):
        mark_present(piece, present)
        digest.update(piece.encode("utf-8"))  # UTF-8 of the pieces, joined, is UTF-8 of the text
        length += len(piece)
    vocab = Vocab.from_presence(present)
    tokens = np.empty(length, dtype=vocab.dtype)
    table = vocab.id_table()
    start = 0
    for piece in text_pieces(path, encoding, errors):
        vocab.encode_into(piece, tokens[start : start + len(piece)], table)
        start += len(piece)
    return EncodedText(vocab, tokens, digest.hexdigest())


def split_train_val(tokens: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
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

    def get_batch(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Chunk ``index`` of the epoch: (inputs, targets), each (B, T) int64."""
        cols = slice(index * self.seq_length, (index + 1) * self.seq_length)
        return self.inputs[:, cols].astype(np.int64), self.targets[:, cols].astype(np.int64)
