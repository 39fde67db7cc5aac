"""Verdicts a script can trust: gradcheck (every mode), gradflow and train --impl both end with one verdict
line, and exit with code 1 when manual and autograd disagree beyond the dtype's bound, 0 when they agree.

The wrong cells are the example MGU with one slip in its backward that keeps every shape (tests/planted.py),
so that what is tested is the verdict, not a shape check. Every run is tiny (H 4, T 5) and runs in this
process; one real process per command shows the exit code a shell sees.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from planted import MGU_FILE, planted_cell_file

from compare import gradcheck, gradflow, train

ROOT = Path(__file__).resolve().parents[1]
TEXT = "abcdef fed cab bead face dab " * 4  # 7 characters: a vocabulary of a few, every gradient entry cheap
SMALL = ["--hidden-size", "4", "--seq-length", "5"]
# The bounds docs/tolerances.md#verdicts states: float64's rounding with room, float32's summed over a chunk
BOUNDS = {"float64": 1e-12, "float32": 1e-4}
# A right cell agreeing within float64's bound is an agreement test: CI runs it under every BLAS kernel
RIGHT = pytest.param("right", marks=pytest.mark.exactness)


def cell_file(directory: Path, cell: str) -> Path:
    """The example MGU ('right') or the planted slip of that name, as a file to pass to --cell."""
    return MGU_FILE if cell == "right" else planted_cell_file(directory, cell)


def data_file(directory: Path) -> Path:
    path = directory / "small.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def assert_verdict(code: int, stdout: str, agree: bool, dtype: str = "float64") -> str:
    """The exit code and the last line of stdout say the same verdict, with the dtype's bound; returns the line."""
    line = stdout.rstrip("\n").splitlines()[-1]
    bound = BOUNDS[dtype]
    if agree:
        assert code == 0, stdout
        assert line.startswith("verdict: manual and autograd agree: the largest relative difference is "), line
        assert f", within {bound:g}, the {dtype} bound (docs/tolerances.md#verdicts)" in line, line
    else:
        assert code == 1, stdout
        assert line.startswith("verdict: manual and autograd DISAGREE: the largest relative difference is "), line
        assert line.endswith(f", beyond {bound:g}, the {dtype} bound (docs/tolerances.md#verdicts); exit code 1"), line
    return line


GRADCHECK_MODES = {
    "table": [],
    "json": ["--json", "gradcheck.json"],
    "diagnose": ["--diagnose", "--heatmap", "diagnosis.png"],
    # the verdict judges every entry of manual against autograd, whatever columns and entries the table shows
    "columns": ["--methods", "central", "--sample", "2"],
}


@pytest.mark.parametrize("mode", list(GRADCHECK_MODES))
@pytest.mark.parametrize("cell", [RIGHT, "carry-dropped", "dW-transposed"])
def test_gradcheck_says_its_verdict_and_exits_1_on_a_wrong_backward(tmp_path, monkeypatch, capsys, cell, mode):
    monkeypatch.chdir(tmp_path)
    argv = ["--cell", str(cell_file(tmp_path, cell)), *SMALL, "--batch-size", "2", "--data", str(data_file(tmp_path))]
    code = gradcheck.main([*argv, *GRADCHECK_MODES[mode]])
    assert_verdict(code, capsys.readouterr().out, agree=cell == "right")
    if mode == "json":
        verdict = json.loads((tmp_path / "gradcheck.json").read_text())["verdict"]
        assert verdict["agree"] == (cell == "right") and verdict["bound"] == 1e-12 and verdict["dtype"] == "float64"
        assert (verdict["largest_relative_difference"] <= 1e-12) == (cell == "right")


@pytest.mark.parametrize(
    "cell, agree",
    [
        pytest.param("right", True, marks=pytest.mark.exactness),
        ("carry-dropped", False),
        ("carry-transposed", False),
        # the curve is dL_T/dh_{T-k}, carried back by step_backward: no dW in it
        pytest.param("dW-transposed", True, marks=pytest.mark.exactness),
    ],
)
def test_gradflow_says_its_verdict_and_exits_1_on_a_wrong_step_backward(tmp_path, capsys, cell, agree):
    json_path = tmp_path / "gradflow.json"
    argv = ["--cell", str(cell_file(tmp_path, cell)), *SMALL, "--train-steps", "0", "--data", str(data_file(tmp_path))]
    code = gradflow.main([*argv, "--json", str(json_path)])
    assert_verdict(code, capsys.readouterr().out, agree)
    verdict = json.loads(json_path.read_text())["verdict"]
    assert verdict["agree"] == agree and verdict["bound"] == 1e-12 and verdict["dtype"] == "float64"


def test_gradflow_in_float32_judges_the_whole_curve_not_each_vanished_lag(capsys):
    # The rnn at initialization: g_k falls below 1e-30 within 100 lags, where float32's rounding is large
    # relative to g_k itself (the table's per-lag column shows ~1e-2) and g_k may be 0; relative to the
    # curve's largest norm the two computations stay at float32 rounding.
    code = gradflow.main(["--cell", "rnn", "--dtype", "float32", "--train-steps", "0"])
    assert_verdict(code, capsys.readouterr().out, agree=True, dtype="float32")


def train_both(directory: Path, cell: str, dtype: str) -> list[str]:
    return [
        "--impl",
        "both",
        "--cell",
        str(cell_file(directory, cell)),
        *SMALL,
        "--batch-size",
        "2",
        "--dtype",
        dtype,
        "--max-steps",
        "3",
        "--agree-every",
        "1",
        "--val-frac",
        "0",
        "--sample-length",
        "10",
        "--data",
        str(data_file(directory)),
        "--logdir",
        str(directory / "runs"),
    ]


@pytest.mark.parametrize(
    "cell, dtype",
    [
        ("right", "float32"),
        pytest.param("right", "float64", marks=pytest.mark.exactness),
        ("carry-dropped", "float32"),
        ("dW-transposed", "float32"),
    ],
)
def test_train_both_states_the_worst_implementation_error_and_exits_1_beyond_the_bound(tmp_path, capsys, cell, dtype):
    code = train.main(train_both(tmp_path, cell, dtype))
    stdout = capsys.readouterr().out
    line = assert_verdict(code, stdout, agree=cell == "right", dtype=dtype)
    stated = re.search(r"^\[both\] implementation error, manual vs autograd .*: (\S+) at worst \(", stdout, re.M)
    assert stated is not None, stdout  # in the summary, within the bound or not
    assert f"the largest relative difference is {stated.group(1)} (" in line  # the verdict judges that figure


@pytest.mark.parametrize("command", ["gradcheck", "gradflow", "train"])
def test_a_real_process_exits_1_on_a_dropped_carry(tmp_path, command):
    cell = planted_cell_file(tmp_path, "carry-dropped")
    argv = {
        "gradcheck": ["--cell", str(cell), *SMALL, "--data", str(data_file(tmp_path)), "--methods", "complex"],
        "gradflow": ["--cell", str(cell), *SMALL, "--train-steps", "0", "--data", str(data_file(tmp_path))],
        "train": train_both(tmp_path, "carry-dropped", "float32"),
    }[command]
    done = subprocess.run(
        [sys.executable, "-m", f"compare.{command}", *argv],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_verdict(done.returncode, done.stdout, agree=False, dtype="float32" if command == "train" else "float64")
