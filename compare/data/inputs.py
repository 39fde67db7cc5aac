"""Checks on what the user hands the commands: the text file, its size, the output directory.

Each check raises ``UsageError`` (exit code 2) with one line that names the problem and
the flag that fixes it, and each runs before any TensorBoard writer or run directory
exists, so a mistake costs seconds, not an hour of training.
"""

from __future__ import annotations

import codecs
import os
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from compare.cli.errors import UsageError
from compare.data.corpus import PROSE, EncodedText, Vocab, encode_file, load_text, split_train_val, text_digest

SNIFF_BYTES = 8000  # like git: a NUL byte among the first 8000 bytes marks a file as binary
CHUNK_BYTES = 1 << 20
DEFAULT_VAL_MAX_CHARS = 100_000  # validation text used at most: a few seconds per pass at the default sizes
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


def check_writable_directory(directory: Path, flag_value: str) -> None:
    """Create ``directory`` and write a file in it, so that an unwritable --logdir fails now."""
    probe = directory / f".write-test-{uuid.uuid4().hex}"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as error:
        reason = not_a_directory(directory) or error.strerror or str(error)
        raise UsageError(
            f"--logdir {flag_value}: cannot write to {directory} ({reason}); choose a --logdir you can write to"
        ) from None


def not_a_directory(path: Path) -> str | None:
    """'<p> is a file, not a directory' for the first of ``path`` and its parents that exists and is
    no directory (a symlink to one is followed), or None when there is none."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return f"{part} is a file, not a directory"
    return None


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
