"""The tests keep away from the user's files: the README's quick start leaves a trained run under runs/, and the
next command it gives, python -m pytest, starts in that same directory (tests/conftest.py's fixtures)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import train_argv

from compare.train import main as train_main

ROOT = Path(__file__).resolve().parents[1]


def test_each_test_starts_in_an_empty_directory_of_its_own(tmp_path, request):
    assert Path.cwd() == tmp_path != request.config.invocation_params.dir
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow  # a pytest session that starts three processes that import torch: about 12 s on two busy cores
def test_a_run_where_pytest_starts_is_not_the_newest_run_the_tests_find(tmp_path):
    """compare.demo --port 8000 without --checkpoint must fail with exit 2; with the run the quick start left in
    the directory pytest starts in, it would serve that run instead, until the test's timeout."""
    assert train_main(train_argv(tmp_path, run_name="quickstart", max_steps=5)) == 0  # runs/quickstart/manual/*.npz
    without_checkpoint = f"{ROOT / 'tests' / 'test_demo.py'}::test_bad_arguments_exit_2_with_one_line"
    # its own --basetemp and no cache: the inner session neither prunes this one's tmp dirs nor writes into ROOT
    inner = ["-p", "no:cacheprovider", "--basetemp", str(tmp_path / "inner"), "-q", without_checkpoint]
    result = subprocess.run(
        [sys.executable, "-m", "pytest", *inner], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "3 passed" in result.stdout, result.stdout[-3000:]
