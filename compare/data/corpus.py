"""The corpus both implementations see: --data (or a built-in corpus) read and checked, its
vocabulary, the held-out split and the batches.

``load_corpus`` is what training calls, and this file follows it down: reading --data
(``read_encoded``, which streams a file through ``encode_file``), the checks on the file, on its
characters and on the split, then the reading and encoding themselves, the vocabulary, and
``StreamBatches``, which cuts the training split into batches. ``read_corpus`` reads the whole
text as one str, for the commands that use only a little of it.

Each check on --data raises ``UsageError`` (exit code 2) with one line that names the problem
and the flag that fixes it, and each runs before any TensorBoard writer or run directory
exists, so a mistake costs seconds, not an hour of training.
"""

from __future__ import annotations

import codecs
import hashlib
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
from numpy.typing import ArrayLike

from compare.cli.errors import UsageError

PROSE = "prose"  # the default: the pydoc topics' sentences (compare.data.prose)
PYDOC_TOPICS = "pydoc-topics"  # the topics whole, code and tables included: the corpus of earlier figures
BUILTIN_CORPORA = (PROSE, PYDOC_TOPICS)
DEFAULT_VAL_MAX_CHARS = 100_000  # validation text used at most: a few seconds per pass at the default sizes

CHUNK_CHARS = 1 << 20  # 1M characters: a 4 MB code-point array at a time, however long the text
UNICODE_SIZE = 0x110000  # code points run from 0 to 0x10FFFF
SNIFF_BYTES = 8000  # like git: a NUL byte among the first 8000 bytes marks a file as binary
CHUNK_BYTES = 1 << 20
# Byte order marks, longest first: UTF-32 LE's starts with UTF-16 LE's.
BYTE_ORDER_MARKS = (
    (codecs.BOM_UTF32_LE, "UTF-32", "utf-32"),
    (codecs.BOM_UTF32_BE, "UTF-32", "utf-32"),
    (codecs.BOM_UTF16_LE, "UTF-16", "utf-16"),
    (codecs.BOM_UTF16_BE, "UTF-16", "utf-16"),
)
FILE_KINDS = (
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


class CorpusSettings(Protocol):
    """The settings ``load_corpus`` reads: a compare.training.config.TrainConfig (which sits above this package)."""

    data: str | None
    corpus: str  # the built-in corpus, when data is None
    encoding: str
    errors: str
    val_frac: float
    val_max_chars: int  # 0: the whole held-out split
    batch_size: int
    seq_length: int


@dataclass
class Corpus:
    """The training text, read, checked and split: all that training needs of --data."""

    vocab: Vocab
    sha256: str  # of the text, stored in checkpoints so that a resume on other text is refused
    train_tokens: np.ndarray
    val_tokens: np.ndarray  # empty with --val-frac 0


def load_corpus(config: CorpusSettings) -> Corpus:
    """Read and check the text ``config`` (a TrainConfig) names; UsageError if it cannot be trained on.

    The held-out split is cut to its first ``config.val_max_chars`` characters (0: all of
    it), so that a validation pass costs the same on a 1 GB file as on a 10 MB one.
    """
    encoded = read_encoded(config.data, config.encoding, config.errors, config.corpus)
    check_vocabulary(encoded.vocab, config.data)
    train_tokens, val_tokens = split_train_val(encoded.tokens, config.val_frac)
    if config.val_max_chars > 0:
        val_tokens = val_tokens[: config.val_max_chars]  # a view: the cut costs no memory
    check_batch_fits(len(train_tokens), len(val_tokens), config.batch_size, config.seq_length, config.val_frac)
    return Corpus(encoded.vocab, encoded.sha256, train_tokens, val_tokens)


def read_encoded(path: str | None, encoding: str = "utf-8", errors: str = "strict", corpus: str = PROSE) -> EncodedText:
    """Vocabulary, token ids and digest of --data (the built-in corpus ``corpus`` when None), or UsageError.

    A file is streamed through ``encode_file``: it is never held as one str, so the peak is
    the token array (1 byte per character for up to 256 distinct ones) plus a few MB.
    """
    if path is None:
        text = load_text(None, corpus=corpus)
        vocab = Vocab.from_text(text)
        return EncodedText(vocab, vocab.encode(text), text_digest(text))
    problem = check_encoding(encoding)  # config_problem checks it too; a caller without one is caught here
    if problem:
        raise UsageError(problem)
    check_is_a_file(Path(path))
    try:
        return encode_file(path, encoding, errors)
    except UnicodeDecodeError as error:
        raise UsageError(describe_decode_error(Path(path), encoding, error)) from None
    except OSError as error:
        raise UsageError(f"--data {path}: cannot read it ({error.strerror or error})") from None


def read_corpus(path: str | None, encoding: str = "utf-8", errors: str = "strict", corpus: str = PROSE) -> str:
    """The text of --data (the built-in corpus ``corpus`` when None), or UsageError saying why it cannot be used."""
    if path is None:
        return load_text(None, corpus=corpus)
    problem = check_encoding(encoding)
    if problem:
        raise UsageError(problem)
    check_is_a_file(Path(path))
    try:
        text = load_text(path, encoding, errors)
    except UnicodeDecodeError as error:
        raise UsageError(describe_decode_error(Path(path), encoding, error)) from None
    except OSError as error:
        raise UsageError(f"--data {path}: cannot read it ({error.strerror or error})") from None
    return text


def check_encoding(encoding: str) -> str | None:
    """A one-line problem with the --encoding name, or None if Python knows it as a text encoding.

    Python's codec registry also holds bytes-to-bytes and str-to-str codecs (hex, base64,
    zlib, rot13), which ``open`` refuses: they are not encodings of text.
    """
    try:
        info = codecs.lookup(encoding)
    except LookupError:
        return f"--encoding {encoding!r} is not an encoding Python knows; try utf-8, latin-1 or utf-16"
    if not getattr(info, "_is_text_encoding", True):
        return (
            f"--encoding {encoding!r} is not a text encoding (Python's {info.name!r} codec transforms "
            "bytes to bytes or str to str); try utf-8, latin-1 or utf-16"
        )
    return None


def check_is_a_file(path: Path) -> None:
    """--data must be a regular file, after following symlinks: a device (/dev/zero) or a FIFO
    would be read forever or wait for a writer, so they are refused before they are opened."""
    try:
        mode = os.stat(path).st_mode  # follows symlinks
    except FileNotFoundError:
        raise UsageError(f"--data {path}: no such file; check the path") from None
    except OSError as error:
        raise UsageError(f"--data {path}: cannot read it ({error.strerror or error})") from None
    if stat.S_ISDIR(mode):
        raise UsageError(f"--data {path} is a directory; give a text file")
    if not stat.S_ISREG(mode):
        kind = next((name for test, name in FILE_KINDS if test(mode)), "a special file")
        if path.is_symlink():
            kind += f", which the link points to: {os.path.realpath(path)}"
        raise UsageError(f"--data {path} is not a regular file ({kind}); give a text file")


def describe_decode_error(path: Path, encoding: str, error: UnicodeDecodeError) -> str:
    """A binary file, or text in another encoding: which one, and what to pass instead."""
    with open(path, "rb") as file:
        head = file.read(SNIFF_BYTES)
    bom = byte_order_mark(path, head, encoding)
    if bom is not None:
        return bom
    if b"\x00" in head:
        return f"--data {path} looks binary (a NUL byte at byte offset {head.index(0)}); give a text file"
    offset = first_undecodable_offset(path, encoding)
    if offset is None:  # cannot happen for a file that failed to decode; fall back on Python's own offset
        offset = error.start
    with open(path, "rb") as file:
        file.seek(offset)
        byte = file.read(1)
    return (
        f"--data {path} is not valid {encoding}: byte 0x{byte.hex()} at byte offset {offset}; "
        f"pass its encoding with --encoding (e.g. --encoding latin-1), or --errors replace"
    )


def byte_order_mark(path: Path, head: bytes, encoding: str) -> str | None:
    """A file that starts with a UTF-16 or UTF-32 byte order mark: the --encoding to pass, unless it was passed."""
    for mark, name, codec in BYTE_ORDER_MARKS:
        if head.startswith(mark):
            if codecs.lookup(encoding).name.startswith(codec):  # already that encoding: the damage is elsewhere
                return None
            return (
                f"--data {path} starts with a {name} byte order mark (0x{mark.hex()}), so it is {name} "
                f"text, not {encoding}: pass --encoding {codec}"
            )
    return None


def first_undecodable_offset(path: Path, encoding: str) -> int | None:
    """Byte offset of the first byte ``encoding`` cannot decode, or None if the whole file decodes.

    Reads the file in chunks through an incremental decoder, so that the offset counts from
    the start of the file however load_text reads it, and memory stays small.
    """
    decoder = codecs.getincrementaldecoder(encoding)()
    consumed = 0  # bytes handed to the decoder before this chunk
    with open(path, "rb") as file:
        while True:
            chunk = file.read(CHUNK_BYTES)
            pending = len(decoder.getstate()[0])  # bytes of an unfinished character held back from before
            try:
                decoder.decode(chunk, final=not chunk)
            except UnicodeDecodeError as error:  # error.start counts from the held-back bytes
                return consumed - pending + error.start
            if not chunk:
                return None
            consumed += len(chunk)


def check_vocabulary(vocab: Vocab, path: str | None) -> None:
    """The characters of --data must be those of a text, at least two of them.

    Checked on the vocabulary alone, so that it works however the text was read (whole or
    in pieces): no characters means an empty file, a NUL character a binary one, and with
    a single character every prediction is certain.
    """
    if len(vocab) == 0:
        raise UsageError(f"--data {path} is empty; give a text file to train on")
    if "\x00" in vocab.chars:
        raise UsageError(f"--data {path} looks binary (it holds NUL characters); give a text file")
    if len(vocab) < 2:
        raise UsageError(
            f"--data {path} holds a single distinct character ({vocab.chars!r}); "
            "there is nothing to predict: give a text with at least two different characters"
        )


def split_train_val(tokens: np.ndarray, val_frac: float) -> tuple[np.ndarray, np.ndarray]:
    """The last ``val_frac`` of the tokens is held out for validation. Returns (train, val)."""
    n_val = int(round(len(tokens) * val_frac))
    return tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]


def check_batch_fits(train_chars: int, val_chars: int, batch_size: int, seq_length: int, val_frac: float) -> None:
    """The training split must fill one batch; a held-out split must hold two characters."""
    needed = batch_size * seq_length + 1  # B streams of T inputs, and the target after the last one
    if train_chars < needed:
        raise UsageError(
            f"the training text has {train_chars} characters (after holding out --val-frac {val_frac}), "
            f"too few for one batch of --batch-size {batch_size} x --seq-length {seq_length} (needs {needed}): "
            "lower --batch-size or --seq-length, or give a longer --data"
        )
    if val_frac > 0 and val_chars < 2:
        raise UsageError(
            f"--val-frac {val_frac} holds out {val_chars} characters, too few to validate on (needs 2): "
            "raise --val-frac, give a longer --data, or pass --val-frac 0 to train without validation"
        )


@dataclass
class EncodedText:
    """A text file as training needs it, read without ever holding the whole text as a str."""

    vocab: Vocab
    tokens: np.ndarray  # (N,) ids in vocab.dtype, one per character
    sha256: str  # hex digest of the text's UTF-8 bytes: the same as text_digest(text)


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


def text_pieces(path: str | Path, encoding: str = "utf-8", errors: str = "strict") -> Iterator[str]:
    """The text of ``path`` as consecutive pieces of at most CHUNK_CHARS characters.

    Read in text mode, like ``load_text``: the same decoding (a leading UTF-8 byte order mark
    dropped), the same newline translation.
    """
    with open(path, encoding=text_codec(encoding), errors=errors) as file:
        while piece := file.read(CHUNK_CHARS):
            yield piece


def load_text(path: str | Path | None, encoding: str = "utf-8", errors: str = "strict", corpus: str = PROSE) -> str:
    """The text at ``path``, or the built-in corpus ``corpus`` when path is None."""
    if path is None:
        return builtin_corpus(corpus)
    return Path(path).read_text(encoding=text_codec(encoding), errors=errors)


def text_codec(encoding: str) -> str:
    """The codec that decodes a file in ``encoding``: for UTF-8, 'utf-8-sig', which drops a leading
    byte order mark (EF BB BF). The mark says how the file is encoded; it is not a character of the
    text. U+FEFF anywhere after the start is kept, as the character it is."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def builtin_corpus(name: str = PROSE) -> str:
    """The built-in corpus ``name`` (one of BUILTIN_CORPORA): the same text for a given Python version."""
    if name == PYDOC_TOPICS:
        return pydoc_topics()
    if name == PROSE:
        from compare.data.prose import prose_corpus

        return prose_corpus()
    raise ValueError(f"no built-in corpus {name!r}; there are {', '.join(BUILTIN_CORPORA)}")


def pydoc_topics() -> str:
    """CPython's own reference documentation (``pydoc_data.topics``), about 465,000
    characters, joined in sorted key order so that it is the same on every run."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


def text_chunks(text: str, size: int | None = None) -> Iterator[str]:
    """Consecutive pieces of at most ``size`` (default CHUNK_CHARS) characters that join back into ``text``."""
    size = size or CHUNK_CHARS
    for start in range(0, len(text), size):
        yield text[start : start + size]


def mark_present(text: str, present: np.ndarray) -> None:
    """Set ``present[p]`` for every code point p in ``text`` ((0x110000,) bool, updated in place)."""
    for chunk in text_chunks(text):
        present[code_points(chunk)] = True


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
