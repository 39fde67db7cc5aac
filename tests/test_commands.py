"""Every command a user types: ``--help`` works, lists --debug, names each default once,
and a bad flag is one line on stderr with exit code 2."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import compare

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = sorted(path.stem for path in (ROOT / "compare").glob("*.py") if path.stem != "__init__")


def run_command(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"compare.{name}", *args], capture_output=True, text=True, timeout=120)


def test_the_map_lists_every_command():
    for name in COMMANDS:
        assert re.search(rf"^    {name}\s", compare.__doc__, flags=re.M), f"compare/__init__.py's map lacks {name}"


@pytest.mark.parametrize("name", COMMANDS)
def test_help_names_every_default_once(name):
    result = run_command(name, "--help")
    assert result.returncode == 0, result.stderr
    assert "--debug" in result.stdout
    flat = " ".join(result.stdout.split())  # argparse wraps help text over lines
    for help_of_one_flag in re.split(r"\s(?=-{1,2}[a-z])", flat):
        assert help_of_one_flag.count("(default:") <= 1, f"a default printed twice: {help_of_one_flag!r}"


@pytest.mark.parametrize("name", COMMANDS)
def test_a_bad_flag_is_one_line_and_exit_2(name):
    result = run_command(name, "--no-such-flag")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"python -m compare.{name}: error: "), result.stderr
