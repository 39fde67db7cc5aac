"""The README's "What happens when..." table, made by running every case of tests/error_cases.py.

    .venv/bin/python tests/what_happens_table.py > table.md

Each row of CASES is run for real (in a temporary directory) and shows the exact line the
user sees; the rows of GUARANTEES are not one command's answer, so each names the test
that checks it (tests/test_errors.py checks that those tests exist).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from error_cases import CASES, Case, Outcome, run_case


def what_the_user_sees(case: Case, outcome: Outcome) -> str:
    if outcome.exit_code == 0:
        return case.note
    return "`" + outcome.stderr.strip().replace("|", "\\|") + "`"


# Rows that are not one command's answer; each names the test that checks it.
GUARANTEES = [
    (
        "Faults: any error, with `--debug`",
        "the traceback, then the same one line",
        "2 or 1",
        "tests/test_errors.py::test_debug_shows_the_traceback_and_keeps_the_exit_code",
    ),
    (
        "Faults: Ctrl-C or SIGTERM during training",
        "`stopped by SIGINT after step N; checkpoint saved; continue with --resume runs/<run>`",
        "130 / 143",
        "tests/test_checkpoint.py::test_a_signal_mid_run_leaves_a_loadable_checkpoint_and_event_file",
    ),
    (
        "Faults: the process is killed (`kill -9`) while saving",
        "nothing; the checkpoint on disk is the previous or the new one, whole (at most a stray "
        "`.latest.npz.<id>.tmp` is left)",
        "137 (SIGKILL)",
        "tests/test_faults.py::test_a_kill_during_a_save_loop_never_leaves_a_broken_checkpoint",
    ),
    (
        "Faults: a training finds the stray `.latest.npz.<id>.tmp` of a killed save",
        "it removes them when it opens the run directory, and says so on stdout",
        "0",
        "tests/test_run_dirs.py::test_temporary_files_of_an_interrupted_save_are_removed_when_the_run_is_next_trained",
    ),
    (
        "Output: a second training (same `--run-name`, or a `--resume`) into a run directory being trained",
        "`python -m compare.train: error: runs/<run> is in use by process <pid>, which is training into it; "
        "wait for it to finish (or stop it), or pass --run-name NAME to train into a new run directory`",
        "2",
        "tests/test_run_dirs.py::test_a_second_writer_is_refused_while_a_training_owns_the_run",
    ),
    (
        "Determinism: the same seed and flags, run twice",
        "identical loss curves and weights, bit for bit (manual and torch, float32 and float64)",
        "0",
        "tests/test_determinism.py",
    ),
    (
        "Determinism: random shapes, seeds, batch sizes, carried hidden states",
        "manual and autograd gradients agree (float64, hypothesis)",
        "",
        "tests/test_properties.py::test_manual_gradients_equal_autograd",
    ),
    (
        "Determinism: any temperature in [0, 100], any prime of known characters, any top-k",
        "sampling never fails and never returns an unknown character (hypothesis)",
        "",
        "tests/test_properties.py::test_sampling_never_fails_nor_leaves_the_vocabulary",
    ),
]


def markdown_table(directory: Path) -> str:
    """The README table: every case run for real, then the guarantees with the tests that check them."""
    rows = ["| When... | the user sees (stderr) | exit code |", "|---|---|---:|"]
    for case in CASES:
        outcome = run_case(case, directory)
        rows.append(f"| {case.group}: {case.when} | {what_the_user_sees(case, outcome)} | {outcome.exit_code} |")
    for when, sees, exit_code, test in GUARANTEES:
        rows.append(f"| {when} | {sees} (`{test}`) | {exit_code} |")
    return "\n".join(rows)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as temporary:
        print(markdown_table(Path(temporary)))
