"""Memory of training on a large file: peak resident memory and the time to encode the text.

``python -m compare.bench --memory`` writes text files of the sizes ``--memory-mb`` lists
(default 100 MB), in each kind ``--memory-text`` lists, both made of the built-in corpus
repeated:

* ``ascii``: the corpus with its few non-ASCII characters left out, one byte per character;
* ``multibyte``: the corpus as it is (curly quotes and dashes, 3 bytes each in UTF-8) with an
  emoji, a 4-byte character above U+FFFF, at the start of every copy.

For each file it runs, each in a fresh process whose peak resident set size the kernel
reports when it exits:

* ``python -c "import numpy, torch"``: the baseline every training run pays;
* ``python -m compare.train --data FILE --max-steps 5``: the real command (its wall time
  too: it is mostly reading and encoding, so it grows linearly with the file);
* the streaming loader ``compare.data.corpus.encode_file`` alone, after the same imports.

The target (issue 14): a peak of ``compare.train`` at most 1.2x the file size above the
baseline, plus a constant under 100 MB, for both kinds of text.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.data.corpus import PYDOC_TOPICS, Vocab, builtin_corpus, encode_file, load_text

if TYPE_CHECKING:
    import numpy as np

MB = 1_000_000
TARGET_RATIO = 1.2  # peak above the baseline, in file sizes ...
TARGET_CONSTANT = 100 * MB  # ... plus this many bytes
TEXT_KINDS = ("ascii", "multibyte")
EMOJI = "\N{SLIGHTLY SMILING FACE}"  # U+1F642: 4 bytes in UTF-8, above the BMP
BASELINE_CODE = "import numpy, torch"
# Runs argv[1:] with its output discarded; prints the child's peak RSS (kB); exits with its exit code.
RSS_LAUNCHER = (
    "import resource, subprocess, sys; code = subprocess.call(sys.argv[1:], stdout=subprocess.DEVNULL); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(code)"
)
ENCODE_FILE_CODE = "import sys, numpy, torch; from compare.data.corpus import encode_file; encode_file(sys.argv[1])"


@dataclass
class MemoryReport:
    """Peak resident memory of three processes on one file, and encode times measured in this one."""

    text: str  # one of TEXT_KINDS
    file_bytes: int
    characters: int
    vocab_size: int
    token_dtype: str
    baseline_rss: int  # bytes: python -c "import numpy, torch"
    train_rss: int  # bytes: python -m compare.train --data FILE --max-steps 5
    train_seconds: float  # wall time of that command, start to exit
    encode_file_rss: int  # bytes: the imports, then compare.data.corpus.encode_file(FILE)
    str_encode_seconds: float  # load_text, Vocab.from_text, Vocab.encode (what holds the str)
    stream_encode_seconds: float  # compare.data.corpus.encode_file

    def above_baseline(self, rss: int) -> int:
        return rss - self.baseline_rss

    def in_file_sizes(self, rss: int) -> float:
        return self.above_baseline(rss) / self.file_bytes

    @property
    def train_budget(self) -> float:
        """Bytes above the baseline that compare.train may use on this file."""
        return TARGET_RATIO * self.file_bytes + TARGET_CONSTANT

    @property
    def train_meets_target(self) -> bool:
        return self.above_baseline(self.train_rss) <= self.train_budget


def corpus_copy(kind: str) -> bytes:
    """One copy of the built-in corpus, as the UTF-8 bytes a file of ``kind`` repeats."""
    corpus = builtin_corpus(PYDOC_TOPICS)  # the text the documented sizes were measured on
    if kind == "ascii":
        return corpus.encode("ascii", errors="ignore")
    return (EMOJI + corpus).encode("utf-8")


def write_big_text(path: Path, size_bytes: int, kind: str = "multibyte") -> None:
    """Fill ``path`` with copies of the built-in corpus (see ``corpus_copy``), cut at a character boundary."""
    copy = corpus_copy(kind)
    written = 0
    with open(path, "wb") as file:
        while written < size_bytes:
            piece = copy[: size_bytes - written]
            piece = piece.decode("utf-8", errors="ignore").encode("utf-8")  # never half a character
            if not piece:
                break
            file.write(piece)
            written += len(piece)


def peak_rss_of(command: list, workdir: str) -> int:
    """Peak resident set size, in bytes, of ``command`` run to completion in a grandchild process.

    Linux counts the memory a process had when it was forked in its peak, and keeps that peak
    across exec: a child of this process, which may hold hundreds of MB (torch, a decoded text),
    would start from this process's size. So a fresh, small Python (RSS_LAUNCHER) starts the
    command and reports the peak of its own child, which started from the launcher's few MB.
    On Linux ``ru_maxrss`` is in kilobytes.
    """
    with tempfile.TemporaryFile() as stderr:
        launched = subprocess.run(
            [sys.executable, "-c", RSS_LAUNCHER, *command],
            cwd=workdir,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
        if launched.returncode != 0:
            stderr.seek(0)
            last_line = (stderr.read().decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{' '.join(command[:4])} ... failed ({launched.returncode}): {last_line}")
    return int(launched.stdout.split()[-1]) * 1024


def train_command(data: Path, logdir: Path, threads: int) -> list:
    """compare.train for a few steps on ``data``: the loading path is what is measured.

    A small --val-frac keeps the one validation pass at the end short (100,000 characters).
    """
    return [
        sys.executable,
        "-m",
        "compare.train",
        "--data",
        str(data),
        "--max-steps",
        "5",
        "--val-frac",
        "0.001",
        "--threads",
        str(threads),
        "--logdir",
        str(logdir),
    ]


def timed(function: Callable[..., Any], *args: Any) -> tuple[float, Any]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = function(*args)
    return time.perf_counter() - start, result


def encode_with_str(path: Path) -> tuple[Vocab, np.ndarray]:
    """The path that holds the whole text as a str: read, vocabulary, ids."""
    text = load_text(path)
    vocab = Vocab.from_text(text)
    return vocab, vocab.encode(text)


def measure_memory(
    size_mb: float,
    kind: str,
    threads: int,
    workdir: str,
    keep: Path | None = None,
    tick: Callable[[], None] = lambda: None,
) -> MemoryReport:
    """Write a file of ``kind`` (in a temporary directory unless ``keep`` names it) and measure.

    ``workdir`` is the directory the child processes run in (the project root, so that
    ``compare`` imports). ``tick`` is called after each of the five measurements.
    """
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        path = keep or Path(scratch) / "big.txt"
        write_big_text(path, int(size_mb * MB), kind)
        baseline = peak_rss_of([sys.executable, "-c", BASELINE_CODE], workdir)
        tick()
        train_seconds, train = timed(peak_rss_of, train_command(path, Path(scratch) / "runs", threads), workdir)
        tick()
        streamed = peak_rss_of([sys.executable, "-c", ENCODE_FILE_CODE, str(path)], workdir)
        tick()
        str_seconds, (vocab, tokens) = timed(encode_with_str, path)
        characters = len(tokens)
        del tokens  # before the second encoding, so that both are timed with the same free memory
        tick()
        stream_seconds, encoded = timed(encode_file, path)
        tick()
        return MemoryReport(
            text=kind,
            file_bytes=path.stat().st_size,
            characters=characters,
            vocab_size=len(vocab),
            token_dtype=str(encoded.tokens.dtype),
            baseline_rss=baseline,
            train_rss=train,
            train_seconds=train_seconds,
            encode_file_rss=streamed,
            str_encode_seconds=str_seconds,
            stream_encode_seconds=stream_seconds,
        )


def memory_table(reports: list[MemoryReport]) -> str:
    """The reports as one Markdown table, a row per file, and the verdict."""
    lines = [
        "| text | file (MB) | characters, distinct, token type | baseline (MB) "
        "| compare.train above baseline: MB (x file) | budget: 1.2x + 100 MB | encode_file alone: MB (x file) "
        "| compare.train wall (s) | encode: via str / streamed (s) |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for report in reports:
        train, streamed = report.train_rss, report.encode_file_rss
        lines.append(
            f"| {report.text} | {report.file_bytes / MB:,.0f} "
            f"| {report.characters:,}, {report.vocab_size}, {report.token_dtype} | {report.baseline_rss / MB:,.0f} "
            f"| {report.above_baseline(train) / MB:,.0f} ({report.in_file_sizes(train):.2f}x) "
            f"| {report.train_budget / MB:,.0f} "
            f"| {report.above_baseline(streamed) / MB:,.0f} ({report.in_file_sizes(streamed):.2f}x) "
            f"| {report.train_seconds:.1f} | {report.str_encode_seconds:.2f} / {report.stream_encode_seconds:.2f} |"
        )
    missed = [f"{r.text} {r.file_bytes / MB:.0f} MB" for r in reports if not r.train_meets_target]
    verdict = f"misses it on {', '.join(missed)}" if missed else "meets it on every file"
    lines += [
        "",
        f"Target: compare.train at most {TARGET_RATIO}x the file size above the baseline plus "
        f"{TARGET_CONSTANT / MB:.0f} MB; it {verdict}.",
    ]
    return "\n".join(lines)
