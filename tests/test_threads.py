"""torch's thread count without --threads: the configuration's rule (compare.training.config), in real runs."""

from __future__ import annotations

import json

import pytest
import torch
from threadpoolctl import threadpool_limits
from tiny_runs import train_argv

from compare.training import config as threads
from compare.training.config import RESUME_MAY_CHANGE, TORCH_THREAD_VARIABLES, parse_args, torch_thread_choice
from compare.training.loop import train

CORES = 2  # what the tests make available_cores() report, so that they hold on any machine


@pytest.fixture
def two_cores(monkeypatch):
    """available_cores() reports 2, no thread variable in the environment; both thread pools restored after."""
    monkeypatch.setattr(threads, "available_cores", lambda: CORES)
    for name in TORCH_THREAD_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    with threadpool_limits(limits=None):  # on leaving, NumPy's BLAS gets back the limits it had
        yield
    torch.set_num_threads(before)  # the session runs torch on one thread (conftest.py)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_seed_size_gets_one_thread_and_the_large_size_every_core(two_cores, cell):
    seed = torch_thread_choice(parse_args(["--cell", cell]), {})  # H 100, B 1
    large = torch_thread_choice(parse_args(["--cell", cell, "--hidden-size", "512", "--batch-size", "128"]), {})
    mid = torch_thread_choice(parse_args(["--cell", cell, "--hidden-size", "256", "--batch-size", "32"]), {})
    assert (seed.threads, large.threads, mid.threads) == (1, CORES, CORES)


def test_each_threshold_alone_gives_every_core(two_cores):
    big_weights = parse_args(["--hidden-size", "256", "--batch-size", "1"])  # G*H^2 = 65,536, B*G*H^2 = 65,536
    big_batch = parse_args(["--hidden-size", "100", "--batch-size", "128"])  # G*H^2 = 10,000, B*G*H^2 = 1,280,000
    just_below = parse_args(["--hidden-size", "255", "--batch-size", "16"])  # 65,025 and 1,040,400
    choices = [torch_thread_choice(config, {}).threads for config in (big_weights, big_batch, just_below)]
    assert choices == [CORES, CORES, 1]


def test_an_environment_thread_count_is_left_to_torch(two_cores):
    choice = torch_thread_choice(parse_args(["--hidden-size", "512", "--batch-size", "128"]), {"OMP_NUM_THREADS": "1"})
    assert choice.threads is None
    assert "OMP_NUM_THREADS=1" in choice.reason


def test_impl_both_gets_one_thread_at_every_size(two_cores):
    large = ["--hidden-size", "512", "--batch-size", "128"]
    assert torch_thread_choice(parse_args(["--impl", "torch", *large]), {}).threads == CORES
    assert torch_thread_choice(parse_args(["--impl", "both", *large]), {}).threads == 1


def test_the_sizes_the_rule_reads_are_settings_a_resume_keeps():
    # a resumed run must pick the count the uninterrupted one picked (the cores aside, which are the machine's)
    assert not set(threads.SIZE_FIELDS) & RESUME_MAY_CHANGE


def train_torch(tmp_path, run_name: str, **flags) -> None:
    """compare.train's real entry point, one step of --impl torch on the tiny corpus."""
    train(parse_args(train_argv(tmp_path, run_name, impl="torch", max_steps=1, **flags)))


@pytest.mark.parametrize(("hidden_size", "expected"), [(16, 1), (256, CORES)])
def test_train_without_threads_sets_torch_to_the_rules_count(two_cores, tmp_path, capsys, hidden_size, expected):
    torch.set_num_threads(3)  # neither answer, so that the run must set it
    train_torch(tmp_path, "auto", hidden_size=hidden_size)
    assert torch.get_num_threads() == expected
    assert f"torch threads: {expected} (auto: " in capsys.readouterr().out
    recorded = json.loads((tmp_path / "runs" / "auto" / "torch" / "config.json").read_text())
    assert recorded["torch_threads"]["threads"] == expected
    assert recorded["config"]["threads"] is None  # the flag stays unset: a resume derives the count again


def test_threads_flag_wins_over_the_rule(two_cores, tmp_path, capsys):
    train_torch(tmp_path, "flag", threads=3)
    assert torch.get_num_threads() == 3
    assert "torch threads: 3 (--threads)" in capsys.readouterr().out


def test_a_resume_picks_the_count_the_run_started_with(two_cores, tmp_path, capsys):
    train_torch(tmp_path, "resumed", hidden_size=256)  # the rule gives every core
    started = json.loads((tmp_path / "runs" / "resumed" / "torch" / "config.json").read_text())["torch_threads"]
    torch.set_num_threads(3)
    train(parse_args(["--resume", str(tmp_path / "runs" / "resumed"), "--max-steps", "2"]))
    assert torch.get_num_threads() == started["threads"] == CORES
