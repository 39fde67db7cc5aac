"""The gradient-check report (``python -m compare.gradcheck``): its targets, its JSON, its flags.

Its runtime is measured with ``time python -m compare.gradcheck``, not asserted here: timing
depends on the machine, not the code. Why each tolerance is what it is: docs/tolerances.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from problems import CELLS_AND_LAYERS

import manual
from compare.gradcheck import GradcheckSettings, choose_entries, format_report, main, run_gradcheck
from compare.gradients.methods import relative_error
from compare.model.init import param_shapes

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ("b", "c", "U", "W", "V")
ROWS = (*PARAMS, "All")
METHODS = ("central", "complex", "torch-central", "manual-vs-autograd")
CENTRAL_MAX = 1e-5  # centred differences, h 1e-4: the original write-up's order (it reached 1.87e-6)
EXACT_MAX = 1e-12  # complex step and autograd: float64 rounding (~1e-15 here) with room, nothing more


@pytest.fixture(scope="module")
def report():
    """The report at the original write-up's settings (H 5, T 25, h 1e-4, eps 1e-16), every entry checked."""
    return run_gradcheck(GradcheckSettings())


def max_errors(report: dict, method: str) -> dict:
    return {row: report["results"][method][row]["max"] for row in ROWS}


# ----- the report's targets --------------------------------------------------------------


@pytest.mark.parametrize("method", ["central", "torch-central"])
def test_centred_differences_reach_the_originals_order(report, method):
    errors = max_errors(report, method)
    assert all(error <= CENTRAL_MAX for error in errors.values()), errors


def test_complex_step_agrees_with_manual_gradient_to_rounding(report):
    errors = max_errors(report, "complex")
    assert all(error <= EXACT_MAX for error in errors.values()), errors


def test_manual_gradient_agrees_with_autograd_to_rounding(report):
    errors = max_errors(report, "manual-vs-autograd")
    assert all(error <= EXACT_MAX for error in errors.values()), errors


def test_every_entry_is_checked_at_the_original_settings(report):
    vocab, hidden = report["settings"]["vocab_size"], report["settings"]["hidden_size"]
    expected = {"b": hidden, "c": vocab, "U": hidden * vocab, "W": hidden * hidden, "V": vocab * hidden}
    assert report["settings"]["entries_checked"] == expected


def test_all_row_takes_the_largest_error_of_any_parameter(report):
    for method, summary in report["results"].items():
        assert summary["All"]["max"] == max(summary[name]["max"] for name in PARAMS), method
        # the pooled average lies between the smallest and the largest per-parameter average
        averages = [summary[name]["avg"] for name in PARAMS]
        assert min(averages) <= summary["All"]["avg"] <= max(averages), method


@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_gradient_check_report_for_every_cell(cell, num_layers):
    # The report's default settings (H 5, T 25, B 1) with this cell, on 40 random entries of each
    # parameter (every entry of a two-layer LSTM takes seconds).
    settings = GradcheckSettings(cell=cell, num_layers=num_layers, methods=["complex", "manual-vs-autograd"], sample=40)
    results = run_gradcheck(settings)["results"]
    expected_rows = set(param_shapes(1, 1, cell, num_layers)) | {"All"}
    for method in ("complex", "manual-vs-autograd"):
        assert set(results[method]) == expected_rows
        worst = max(row["max"] for row in results[method].values())
        assert worst <= EXACT_MAX, f"{method}: {worst:.2e}"


# ----- the check has teeth ---------------------------------------------------------------


def backward_with_dW_scaled(factor: float):
    """manual.backward, but with dW multiplied by ``factor``: a deliberately wrong gradient."""
    correct_backward = manual.backward

    def wrong_backward(cache):
        grads = correct_backward(cache)
        grads["W"] = grads["W"] * factor
        return grads

    return wrong_backward


def test_a_gradient_off_by_a_thousandth_fails_both_checks(monkeypatch):
    monkeypatch.setattr(manual, "backward", backward_with_dW_scaled(1.001))
    results = run_gradcheck(GradcheckSettings(methods=["complex", "central"]))["results"]
    # |1.001 g - g| / (1.001 |g| + |g|) = 0.001 / 2.001 for every nonzero entry of dW
    assert results["complex"]["W"]["max"] == pytest.approx(0.001 / 2.001, rel=1e-9)  # the step's ~1e-15: 2e-12 of it
    assert results["central"]["W"]["max"] > CENTRAL_MAX
    # the other gradients are untouched, so the check points at W alone
    assert all(results["complex"][name]["max"] <= EXACT_MAX for name in ("b", "c", "U", "V"))


def test_only_the_complex_step_sees_an_error_of_one_part_in_a_hundred_million(monkeypatch):
    """Why the complex step column exists: a bug of relative size 1e-8 hides in the
    finite-difference noise (~1e-6) but stands out by four orders against rounding."""
    monkeypatch.setattr(manual, "backward", backward_with_dW_scaled(1 + 1e-8))
    results = run_gradcheck(GradcheckSettings(methods=["complex", "central"]))["results"]
    assert results["complex"]["W"]["max"] == pytest.approx(1e-8 / (2 + 1e-8), rel=1e-5)  # the step's ~1e-15: 2e-7 of it
    assert results["central"]["W"]["max"] <= CENTRAL_MAX  # missed: the bug is below the noise


# ----- pieces ----------------------------------------------------------------------------


def test_relative_error_is_the_originals_formula():
    analytic = np.array([1.0, 0.0, -2.0, 1e-20])
    numerical = np.array([3.0, 0.0, -2.0, 0.0])
    # |1-3|/4; both zero -> 0/eps = 0; equal -> 0; tiny -> |ga|/eps because eps floors the denominator
    expected = np.array([0.5, 0.0, 0.0, 1e-20 / 1e-16])
    np.testing.assert_array_equal(relative_error(analytic, numerical, eps=1e-16), expected)


def test_sample_draws_distinct_entries_reproducibly():
    params = {
        name: np.zeros(shape) for name, shape in {"b": (5,), "c": (7,), "U": (5, 7), "W": (5, 5), "V": (7, 5)}.items()
    }
    entries = choose_entries(params, sample=6, seed=3)
    assert {name: len(indices) for name, indices in entries.items()} == {"b": 5, "c": 6, "U": 6, "W": 6, "V": 6}
    assert all(len(np.unique(indices)) == len(indices) for indices in entries.values())
    again = choose_entries(params, sample=6, seed=3)
    assert all(np.array_equal(entries[name], again[name]) for name in PARAMS)


def test_report_states_settings_above_a_markdown_table(report):
    lines = format_report(report, with_original=True).splitlines()
    assert lines[0].startswith("Settings: 1-layer rnn, hidden size 5, seq_length 25")
    header = lines[2]
    assert header.startswith("| weights | original max | original avg | central max | central avg |")
    assert [line.split("|")[1].strip() for line in lines[4:10]] == list(ROWS)
    assert "| W | 1.87e-06 | 1.92e-07 |" in lines[7]  # the original's figures, verbatim


# ----- the command line ------------------------------------------------------------------


def test_command_writes_the_json_interface(tmp_path):
    """The stable interface scripts read. --sample 3 keeps this run short: what is tested
    here is the plumbing and the format; the full-size numbers are tested above."""
    path = tmp_path / "gradcheck.json"
    completed = subprocess.run(
        [sys.executable, "-m", "compare.gradcheck", "--sample", "3", "--json", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "| weights |" in completed.stdout
    written = json.loads(path.read_text())
    assert set(written) == {"settings", "results"}
    assert written["settings"]["step"] == 1e-4 and written["settings"]["eps"] == 1e-16
    assert written["settings"]["entries_checked"] == {name: 3 for name in PARAMS}
    assert list(written["results"]) == list(METHODS)
    for method, summary in written["results"].items():
        assert list(summary) == list(ROWS), method
        assert all(set(cell) == {"max", "avg"} for cell in summary.values()), method
        limit = CENTRAL_MAX if method in ("central", "torch-central") else EXACT_MAX
        assert all(cell["max"] <= limit for cell in summary.values()), (method, summary)


@pytest.mark.parametrize(
    "argv",
    [
        ["--hidden-size", "0"],
        ["--seq-length", "-1"],
        ["--hidden-size", "five"],
        ["--step", "0"],
        ["--step", "nan"],
        ["--complex-step", "-1e-30"],
        ["--eps", "0"],
        ["--sample", "0"],
        ["--methods", "forward-difference"],
        ["--data", "/no/such/file.txt"],
    ],
)
def test_bad_flags_exit_2_with_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "error:" in stderr, stderr


def test_text_too_short_for_one_batch_exits_2(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("abc")  # 3 characters: not enough for 25 inputs and their targets
    with pytest.raises(SystemExit) as exit_info:
        main(["--data", str(short)])
    assert exit_info.value.code == 2
    assert "too few" in capsys.readouterr().err
