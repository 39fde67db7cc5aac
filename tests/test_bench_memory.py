"""The memory benchmark: the two kinds of text it writes, and the JSON its rows become."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from compare.benchmarks.memory import MB, TARGET_CONSTANT, TARGET_RATIO, MemoryReport, peak_rss_of, write_big_text


def test_ascii_text_is_one_byte_a_character(tmp_path):
    path = tmp_path / "ascii.txt"
    write_big_text(path, 2 * MB, "ascii")
    data = path.read_bytes()
    assert len(data) == 2 * MB and data.isascii()


def test_multibyte_text_holds_characters_of_three_and_four_bytes(tmp_path):
    path = tmp_path / "multibyte.txt"
    write_big_text(path, 2 * MB, "multibyte")
    text = path.read_text(encoding="utf-8")  # whole characters only, cut at a boundary
    widths = {len(character.encode("utf-8")) for character in set(text)}
    assert widths == {1, 2, 3, 4} and len(path.read_bytes()) <= 2 * MB


@pytest.mark.parametrize("extra_bytes, meets", [(0, True), (1, False)])
def test_the_target_is_the_file_size_times_the_ratio_plus_the_constant(extra_bytes, meets):
    file_bytes = 300 * MB
    budget = int(TARGET_RATIO * file_bytes + TARGET_CONSTANT)
    report = MemoryReport("ascii", file_bytes, file_bytes, 94, "uint8", 0, budget + extra_bytes, 1.0, 0, 1.0, 1.0)
    assert report.train_meets_target is meets


def test_bench_memory_measures_every_size_and_kind(tmp_path):
    out = tmp_path / "memory.json"
    flags = "--memory --no-speed --no-scaling --memory-mb 1 --memory-text ascii,multibyte --threads 1 --no-progress"
    result = subprocess.run(
        [sys.executable, "-m", "compare.bench", *flags.split(), "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    rows = json.loads(out.read_text())["memory"]
    assert [row["text"] for row in rows] == ["ascii", "multibyte"]
    for row in rows:
        assert row["train_rss"] > row["baseline_rss"] > 0 and row["train_seconds"] > 0
        expected = row["train_rss"] - row["baseline_rss"] <= row["train_budget_bytes"]
        assert row["train_meets_target"] is expected
    assert rows[1]["vocab_size"] > rows[0]["vocab_size"]  # the multibyte text has its extra characters
    assert "| ascii | 1 |" in result.stdout and "| multibyte | 1 |" in result.stdout


def test_a_child_peak_does_not_count_this_process_memory():
    held = np.ones(300 * MB // 8)  # 300 MB resident here, as the benchmark holds a decoded text
    held[:] = 2.0
    peak = peak_rss_of([sys.executable, "-c", "pass"], os.getcwd())
    assert peak < 100 * MB, f"a bare interpreter measured at {peak / MB:.0f} MB"
