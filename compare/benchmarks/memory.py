"""Memory of training on a large file: peak resident memory and the time to encode the text.

``python -m compare.bench --memory`` writes a text file of about 100 MB (the built-in
corpus repeated: English prose with a few curly quotes and dashes, so, like most real
text, not pure ASCII), then runs, each in a fresh process whose peak resident set size
the kernel reports when it exits:

* ``python -c "import numpy, torch"``: the baseline every training run pays;
* ``python -m compare.train --data FILE --max-steps 5``: the real command;
* the streaming loader ``compare.data.corpus.encode_file`` alone, after the same imports.

The target is a peak of ``compare.train`` under 3x the file size above the baseline.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.data.corpus import Vocab, builtin_corpus, encode_file, load_text

if TYPE_CHECKING:
    import numpy as np

MB = 1_000_000
TARGET_RATIO = 3.0  # peak above the baseline, in file sizes
BASELINE_CODE = "import numpy, torch"
ENCODE_FILE_CODE = "import sys, numpy, torch; from compare.data.corpus import encode_file; encode_file(sys.argv[1])"


@dataclass
class MemoryReport:
    """Peak resident memory of three processes, and encode times measured in this one."""

    file_bytes: int
    characters: int
    vocab_size: int
    token_dtype: str
    baseline_rss: int  # bytes: python -c "import numpy, torch"
    train_rss: int  # bytes: python -m compare.train --data FILE --max-steps 5
    encode_file_rss: int  # bytes: the imports, then compare.data.corpus.encode_file(FILE)
    str_encode_seconds: float  # load_text, Vocab.from_text, Vocab.encode (what holds the str)
    stream_encode_seconds: float  # compare.data.corpus.encode_file

    def above_baseline(self, rss: int) -> int:
        return rss - self.baseline_rss

    def in_file_sizes(self, rss: int) -> float:
        return self.above_baseline(rss) / self.file_bytes

    @property
    def train_meets_target(self) -> bool:
        return self.in_file_sizes(self.train_rss) < TARGET_RATIO


def write_big_text(path: Path, size_bytes: int) -> None:
    """Fill ``path`` with copies of the built-in corpus, UTF-8, cut at a character boundary."""
    corpus = builtin_corpus().encode("utf-8")
    written = 0
    with open(path, "wb") as file:
        while written < size_bytes:
            piece = corpus[: size_bytes - written]
            piece = piece.decode("utf-8", errors="ignore").encode("utf-8")  # never half a character
            if not piece:
                break
            file.write(piece)
            written += len(piece)


def peak_rss_of(command: list, workdir: str) -> int:
    """Peak resident set size, in bytes, of ``command`` run to completion in a child process.

    ``os.wait4`` returns the child's own resource usage, so nothing else this process has
    started (or its own memory) is counted. On Linux ``ru_maxrss`` is in kilobytes.
    """
    with tempfile.TemporaryFile() as stderr:
        child = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)  # wait4 reaped it, tell Popen so
        if child.returncode != 0:
            stderr.seek(0)
            last_line = (stderr.read().decode(errors="replace").strip().splitlines() or ["(no output)"])[-1]
            raise RuntimeError(f"{' '.join(command[:4])} ... failed ({child.returncode}): {last_line}")
    return usage.ru_maxrss * 1024


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
    size_mb: float, threads: int, workdir: str, keep: Path | None = None, tick: Callable[[], None] = lambda: None
) -> MemoryReport:
    """Write the file (in a temporary directory unless ``keep`` names it) and measure.

    ``workdir`` is the directory the child processes run in (the project root, so that
    ``compare`` imports). ``tick`` is called after each of the five measurements.
    """
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as scratch:
        path = keep or Path(scratch) / "big.txt"
        write_big_text(path, int(size_mb * MB))
        baseline = peak_rss_of([sys.executable, "-c", BASELINE_CODE], workdir)
        tick()
        train = peak_rss_of(train_command(path, Path(scratch) / "runs", threads), workdir)
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
            path.stat().st_size,
            characters,
            len(vocab),
            str(encoded.tokens.dtype),
            baseline,
            train,
            streamed,
            str_seconds,
            stream_seconds,
        )


def memory_table(report: MemoryReport) -> str:
    """The report as Markdown."""
    size = report.file_bytes
    lines = [
        f"Text file: {size / MB:.1f} MB UTF-8, {report.characters:,} characters, "
        f"{report.vocab_size} distinct, tokens stored as {report.token_dtype}.",
        "",
        "| process | peak RSS (MB) | above baseline (MB) | x file size |",
        "|---|---:|---:|---:|",
        f'| `python -c "{BASELINE_CODE}"` (baseline) | {report.baseline_rss / MB:,.0f} | 0 | 0 |',
    ]
    for label, rss in (
        ("`python -m compare.train --data FILE --max-steps 5`", report.train_rss),
        ("imports + `compare.data.corpus.encode_file(FILE)`", report.encode_file_rss),
    ):
        lines.append(
            f"| {label} | {rss / MB:,.0f} | {report.above_baseline(rss) / MB:,.0f} | {report.in_file_sizes(rss):.2f} |"
        )
    verdict = "meets" if report.train_meets_target else "misses"
    lines += [
        "",
        f"compare.train {verdict} the target (< {TARGET_RATIO:.0f}x the file size above the baseline).",
        f"Encode time: {report.str_encode_seconds:.2f} s through a str (load_text, Vocab.from_text, "
        f"encode); {report.stream_encode_seconds:.2f} s streamed (encode_file).",
    ]
    return "\n".join(lines)
