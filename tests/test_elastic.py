"""compare.training.run: under torchrun --max-restarts, a run directory with a checkpoint is continued.

The restart itself, between two hosts, is in tests/test_hosts.py; here the decision alone, in one process.
"""

from __future__ import annotations

import pytest
from tiny_runs import train_argv

from compare.cli.errors import UsageError
from compare.training.config import parse_args
from compare.training.loop import train
from compare.training.run import restarted_config

ELASTIC = {"TORCHELASTIC_MAX_RESTARTS": "3", "TORCHELASTIC_RESTART_COUNT": "1", "RANK": "1"}


def test_without_restarts_the_command_is_left_as_typed(tmp_path):
    argv = train_argv(tmp_path, "run", max_steps=5)
    train(parse_args(argv))
    config = parse_args(argv)
    assert restarted_config(argv, config, environ={}) is config  # plain torchrun or none: no resume


def test_under_max_restarts_a_run_with_a_checkpoint_resumes_from_its_directory(tmp_path):
    argv = train_argv(tmp_path, "run", max_steps=10)
    first = parse_args(argv)
    assert restarted_config(argv, first, environ=ELASTIC) is first  # nothing saved yet: start at step 0
    train(parse_args([*argv, "--max-steps", "5"]))
    again = restarted_config(argv, parse_args(argv), environ=ELASTIC)
    assert again.resume == str(tmp_path / "runs" / "run") and again.max_steps == 10
    assert (
        train(again)["impls"]["manual"]["losses"]
        == train(parse_args(train_argv(tmp_path, "whole", max_steps=10)))["impls"]["manual"]["losses"][5:]
    )  # steps 6 to 10, exactly: a resume repeats the arithmetic


def test_max_restarts_without_a_run_name_is_refused(tmp_path):
    argv = [arg for arg in train_argv(tmp_path) if arg not in ("--run-name", "run")]
    with pytest.raises(UsageError, match="--max-restarts 3 .* name it with --run-name NAME"):
        restarted_config(argv, parse_args(argv), environ=ELASTIC)


def test_under_max_restarts_an_attempt_that_left_only_best_npz_is_begun_again(tmp_path):
    # the first attempt died after its first validation and before its first save of latest.npz
    argv = train_argv(tmp_path, "run", max_steps=10)
    train(parse_args([*argv, "--max-steps", "5"]))
    (tmp_path / "runs" / "run" / "manual" / "latest.npz").unlink()
    again = restarted_config(argv, parse_args(argv), environ=ELASTIC)
    assert again.resume is None and again.overwrite  # the same run from step 0, over what it left: not refused
    assert train(again)["steps"] == 10


def test_overwrite_under_max_restarts_is_refused(tmp_path):
    argv = [*train_argv(tmp_path, "run"), "--overwrite"]  # every restart would delete what the attempts saved
    with pytest.raises(UsageError, match="--max-restarts 3 .* leave out --overwrite and pass a new --run-name"):
        restarted_config(argv, parse_args(argv), environ=ELASTIC)
