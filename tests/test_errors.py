"""Every row of the README's "What happens when..." table: one line on stderr, the right exit code.

The rows live in tests/error_cases.py; most run in this process (fast), a few as real
processes, so that what a user's terminal shows is tested too.
"""

from __future__ import annotations

import errno
import hashlib
import importlib
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from error_cases import CASES, FAST, Case, Outcome, cjk_text, corpus, run_case, trained_run, working_directory

from compare.data.corpus import Vocab
from compare.model.checkpoint import load_checkpoint
from compare.model.engines import make_engine
from compare.model.sampling import sample_text
from compare.sample import main as sample_main
from compare.training.config import parse_args
from compare.training.loop import train

CASES_BY_NAME = {case.name: case for case in CASES}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """One working directory for every case: the trained run they share is made only once."""
    directory = tmp_path_factory.mktemp("cases")
    trained_run(directory)  # before any case, so that the snapshot of good files includes it
    return directory


def file_digests(directory: Path) -> dict:
    return {path: hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.rglob("*") if path.is_file()}


def assert_reported_as_documented(case: Case, outcome: Outcome) -> None:
    assert outcome.exit_code == case.exit_code, outcome.stderr
    if case.exit_code == 0:
        assert outcome.stderr == "", outcome.stderr
        return
    assert outcome.stderr.count("\n") == 1, outcome.stderr  # exactly one line
    assert outcome.stderr.startswith(f"python -m compare.{case.command}: error: "), outcome.stderr
    assert "Traceback" not in outcome.stderr
    for phrase in case.says:
        assert phrase in outcome.stderr, (phrase, outcome.stderr)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_each_case_ends_as_the_table_says(case, workspace):
    before = file_digests(workspace)
    outcome = run_case(case, workspace)
    assert_reported_as_documented(case, outcome)
    after = file_digests(workspace)
    damaged = [str(path) for path, digest in before.items() if after.get(path) != digest]
    assert not damaged, f"files changed or removed: {damaged}"  # no good file damaged


@pytest.mark.parametrize(
    "name", ["data-not-utf8", "checkpoint-truncated", "length-huge", "diverges", "num-layers-huge"]
)
def test_a_real_process_prints_the_same_single_line(name, workspace):
    case = CASES_BY_NAME[name]
    with working_directory(workspace):
        argv = case.make_argv(workspace)
    result = subprocess.run(
        [sys.executable, "-m", f"compare.{case.command}", *argv],
        cwd=workspace,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert_reported_as_documented(case, Outcome(result.returncode, result.stderr, result.stdout))


def test_debug_shows_the_traceback_and_keeps_the_exit_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "compare.train", "--data", "missing.txt", "--debug"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" in result.stderr and "UsageError: --data missing.txt: no such file" in result.stderr


def test_too_little_text_is_refused_before_any_run_directory_exists(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "short.txt").write_text("hello world")
    from compare.train import main

    assert main(["--data", "short.txt", "--logdir", "runs", "--run-name", "short"]) == 2
    assert "needs 26" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_an_unwritable_logdir_is_reported_before_training_starts(workspace, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr("compare.training.loop.train_steps", no_training)
    outcome = run_case(CASES_BY_NAME["logdir-unwritable"], workspace)
    assert outcome.exit_code == 2 and "cannot write" in outcome.stderr, outcome.stderr


def exit_code_and_stderr(main, argv: list, capsys) -> tuple[int, str]:
    """A command's exit code and stderr, in this process; argparse's errors exit from inside the parser."""
    try:
        exit_code = main(argv)
    except SystemExit as exit_info:
        exit_code = exit_info.code
    return exit_code, capsys.readouterr().err


def command_main(command: str):
    return importlib.import_module(f"compare.{command}").main


@pytest.mark.parametrize("logdir", ["a-file", "a-file/runs"])
@pytest.mark.parametrize("command", ["train", "train --run-name", "sample", "demo"])
def test_a_logdir_that_cannot_be_a_directory_is_named_in_one_line(tmp_path, monkeypatch, capsys, command, logdir):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("x")
    name, *flags = command.split()
    if name == "train":
        flags = ["--data", corpus(tmp_path), *FAST, *(["--run-name", "run"] if flags else [])]
    exit_code, err = exit_code_and_stderr(command_main(name), [*flags, "--logdir", logdir], capsys)
    assert exit_code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"python -m compare.{name}: error: --logdir {logdir}: "), err
    assert "a-file is a file, not a directory" in err, err
    assert (tmp_path / "a-file").read_text() == "x"


def test_a_logdir_that_cannot_be_listed_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    def iterdir(self):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    monkeypatch.setattr(Path, "iterdir", iterdir)  # as a directory without read permission (root reads any)
    exit_code, err = exit_code_and_stderr(command_main("sample"), ["--logdir", "runs"], capsys)
    assert exit_code == 2 and err.count("\n") == 1, err
    assert "--logdir runs: cannot list its runs (Permission denied)" in err, err


@pytest.mark.parametrize("seed", ["-1", str(2**63)])
@pytest.mark.parametrize("command", ["sample", "gradcheck", "gradflow"])
def test_a_seed_outside_the_generators_range_is_named_by_every_command(tmp_path, monkeypatch, capsys, command, seed):
    monkeypatch.chdir(tmp_path)
    exit_code, err = exit_code_and_stderr(command_main(command), ["--seed", seed], capsys)  # refused before any work
    assert exit_code == 2 and err.count("\n") == 1, err
    assert err == f"python -m compare.{command}: error: --seed must be in [0, 2^63), got {seed}\n"


def test_thousands_of_distinct_characters_train_with_16_bit_tokens(tmp_path):
    text = cjk_text()
    data = tmp_path / "cjk.txt"
    data.write_text(text, encoding="utf-8")
    assert Vocab.from_text(text).encode(text).dtype == np.uint16
    summary = train(parse_args(["--data", str(data), *FAST, "--logdir", str(tmp_path), "--run-name", "cjk"]))
    assert summary["steps"] == 3
    checkpoint = load_checkpoint(tmp_path / "cjk" / "manual" / "latest.npz")
    assert len(checkpoint.vocab) == 3000 and checkpoint.engine.params["c"].shape == (3000,)
    # The summary's sample is the checkpoint's weights sampled as summarize() does (seed, T 0.8, 500
    # characters), and it reaches ids beyond 255, which 8-bit token ids would have wrapped round.
    engine = make_engine("manual", checkpoint.engine.params, 0.1, 5.0, checkpoint.config["dtype"])
    sample = summary["impls"]["manual"]["sample"]
    assert sample == sample_text(engine, Vocab(checkpoint.vocab), 500, temperature=0.8, seed=checkpoint.config["seed"])
    assert int(Vocab(checkpoint.vocab).encode(sample).max()) > 255


def test_val_frac_0_trains_on_everything_without_validation(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)
    summary = train(parse_args(["--data", corpus(tmp_path), *FAST, "--val-frac", "0", "--run-name", "all"]))
    run = tmp_path / "runs" / "all" / "manual"
    assert math.isnan(summary["impls"]["manual"]["val_loss"])
    assert (run / "latest.npz").is_file() and not (run / "best.npz").exists()
    events = EventAccumulator(str(run))
    events.Reload()
    assert "loss/train" in events.Tags()["scalars"] and "loss/val" not in events.Tags()["scalars"]
    assert sample_main(["--checkpoint", "runs/all", "--length", "20"]) == 0  # falls back on latest.npz


def test_the_table_names_only_tests_that_exist():
    from what_happens_table import GUARANTEES

    tests_dir = Path(__file__).parent
    for *_, test in GUARANTEES:
        file_name, _, test_name = test.partition("::")
        source = (tests_dir.parent / file_name).read_text()
        assert not test_name or f"def {test_name}(" in source, test
