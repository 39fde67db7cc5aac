"""docs/cells.md#writing-a-cell, run: its example is the shipped file, and every command on it works as it says."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = (ROOT / "docs" / "cells.md").read_text(encoding="utf-8")
GUIDE = PAGE[PAGE.index("## Writing a cell") :]


def blocks(info: str) -> list[str]:
    return re.findall(rf"^```{info}\n(.*?)^```$", GUIDE, flags=re.M | re.S)


def commands() -> list[str]:
    return [line for block in blocks("sh") for line in block.splitlines() if line.strip()]


def test_the_pages_example_is_the_shipped_cell():
    assert blocks("python") == [(ROOT / "compare" / "examples" / "mgu.py").read_text(encoding="utf-8")]


def run(line: str, where: Path) -> subprocess.CompletedProcess:
    """One command of the page, from a directory that sees the repository's compare/ as the page's reader does."""
    argv = shlex.split(line)
    if argv[0] == "python":
        argv[0] = sys.executable
        return subprocess.run(argv, cwd=where, capture_output=True, text=True, timeout=120)
    return subprocess.run(line, shell=True, cwd=where, capture_output=True, text=True, timeout=30)


@pytest.mark.slow
def test_every_command_on_the_page_runs_and_the_planted_bug_is_diagnosed(tmp_path):
    (tmp_path / "compare").symlink_to(ROOT / "compare")  # the page's commands name compare/examples/mgu.py
    lines = commands()
    # 4 to check, train, sample and time; 2 to plant and diagnose; 2 to fix and recheck; 2 to plant a carry bug
    # and diagnose it; 1 for gradflow's step_backward
    assert len(lines) == 11
    done = [run(line, tmp_path) for line in lines]
    assert [finished.returncode for finished in done] == [0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0], [d.stderr for d in done]
    planted = done[5].stdout
    assert "dL/dx_proj_t first differs from autograd at step 5 of 5" in planted
    assert "in gate f: rows 0-3 (f) of U/W/b" in planted and "output path" in planted
    assert "Wrong gradients: W (gate f, n); b (gate f, n); U (gate f, n)." in planted
    assert (tmp_path / "diagnosis.png").read_bytes()[:4] == b"\x89PNG"
    assert done[7].stdout.splitlines()[-3] == "Every gradient agrees with autograd: the backward is right."
    assert done[7].stdout.splitlines()[-1].startswith("verdict: manual and autograd agree: ")
    assert (tmp_path / "runs" / "mgu-demo" / "manual" / "latest.npz").is_file()
    assert len(done[2].stdout) >= 40  # the sample
    assert "| mgu | 16 |" in done[3].stdout
    carry = done[9].stdout
    assert "dL/dx_proj_t first differs from autograd at step 4 of 5" in carry and "recurrent path" in carry
    assert "the gradient carried back from step 5 into h_4 is right, but is not added into dL/dh_4" in carry
    assert (tmp_path / "diagnosis-carry.png").read_bytes()[:4] == b"\x89PNG"
    flow = done[10].stdout
    assert "| compare.examples.mgu | init |" in flow and flow.count("| compare.examples.mgu |") == 1
