"""What a finished run says to do next, and compare.sample and compare.demo without --checkpoint (the newest run)."""

from __future__ import annotations

import math
import os
import shlex

import pytest
from tiny_runs import train_argv

from compare import demo, sample, train
from compare.model.checkpoint import newest_run
from compare.training.logger import next_commands

CHECKPOINT_BYTES = b"not read: newest_run only looks at the file's time"


def fake_run(logdir, name: str, mtime_ns: int, files=("manual/latest.npz",)):
    """A run directory with empty checkpoint files written at ``mtime_ns``."""
    for relative in files:
        path = logdir / name / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(CHECKPOINT_BYTES)
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return logdir / name


def test_next_commands_name_best_npz_or_latest_without_validation():
    summary = {"run_dir": "runs/my run", "impls": {"manual": {"val_loss": 1.5}, "torch": {"val_loss": 1.6}}}
    assert next_commands(summary) == [
        "tensorboard --logdir 'runs/my run'",
        "python -m compare.sample --checkpoint 'runs/my run/manual/best.npz'",
        "python -m compare.demo --checkpoint 'runs/my run/manual/best.npz'",
    ]
    summary["impls"] = {"torch": {"val_loss": math.nan}}  # --val-frac 0: no best.npz
    assert next_commands(summary)[1] == "python -m compare.sample --checkpoint 'runs/my run/torch/latest.npz'"


def test_next_commands_name_a_cell_of_your_own_with_cell():
    summary = {"run_dir": "runs/mgu-1", "cell": "/home/me/my mgu.py", "impls": {"manual": {"val_loss": 1.5}}}
    assert next_commands(summary)[1:] == [
        "python -m compare.sample --checkpoint runs/mgu-1/manual/best.npz --cell '/home/me/my mgu.py'",
        "python -m compare.demo --checkpoint runs/mgu-1/manual/best.npz --cell '/home/me/my mgu.py'",
    ]


def test_a_finished_run_prints_three_commands_that_work(tmp_path, capsys):
    assert train.main(train_argv(tmp_path, run_name="done", max_steps=30)) == 0
    printed = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "done"
    tail = printed.rstrip("\n").split("\n")[-4:]
    assert tail == [
        "next:",
        f"  tensorboard --logdir {shlex.quote(str(run_dir))}",
        f"  python -m compare.sample --checkpoint {shlex.quote(str(run_dir / 'manual' / 'best.npz'))}",
        f"  python -m compare.demo --checkpoint {shlex.quote(str(run_dir / 'manual' / 'best.npz'))}",
    ]
    sample_argv = shlex.split(tail[2])[3:]  # what follows "python -m compare.sample"
    assert sample.main([*sample_argv, "--length", "20"]) == 0
    assert len(capsys.readouterr().out) == 20 + len("\n")  # the text and print's newline


def test_the_newest_run_is_the_one_whose_checkpoint_was_written_last(tmp_path):
    fake_run(tmp_path, "b-older", 1_000_000_000_000)
    newest = fake_run(tmp_path, "a-newer", 3_000_000_000_000, files=("torch/best.npz",))
    fake_run(tmp_path, "c-middle", 2_000_000_000_000, files=("manual/latest.npz", "manual/best.npz"))
    (tmp_path / "z-empty" / "manual").mkdir(parents=True)  # no checkpoint: never chosen, whatever its time
    (tmp_path / "stray.txt").write_text("not a run")
    assert newest_run(tmp_path) == newest


def test_sample_without_checkpoint_uses_the_newest_run_and_says_so(tmp_path, capsys):
    assert train.main(train_argv(tmp_path, run_name="older", max_steps=5)) == 0
    assert train.main(train_argv(tmp_path, run_name="newer", max_steps=5)) == 0
    capsys.readouterr()
    assert sample.main(["--logdir", str(tmp_path / "runs"), "--length", "10", "--seed", "1"]) == 0
    chosen = capsys.readouterr()
    run_dir = tmp_path / "runs" / "newer"
    assert chosen.err == f"using {run_dir} (the newest run under {tmp_path / 'runs'}/)\n"
    assert sample.main(["--checkpoint", str(run_dir), "--length", "10", "--seed", "1"]) == 0
    assert capsys.readouterr().out == chosen.out


def test_demo_without_checkpoint_serves_the_newest_run(tmp_path, capsys):
    older = fake_run(tmp_path, "older", 1_000_000_000_000)
    newer = fake_run(tmp_path, "newer", 2_000_000_000_000)
    assert demo.parse_args(["--logdir", str(tmp_path)]).checkpoint == str(newer)
    assert "newest run" in capsys.readouterr().err
    assert demo.parse_args(["--logdir", str(tmp_path), "--checkpoint", str(older)]).checkpoint == str(older)


@pytest.mark.parametrize("command", [sample, demo], ids=["sample", "demo"])
@pytest.mark.parametrize("logdir", ["empty", "missing"])
def test_no_run_at_all_is_one_line_that_gives_the_training_command(tmp_path, capsys, command, logdir):
    (tmp_path / "empty" / "run" / "manual").mkdir(parents=True)  # a run directory with no checkpoint
    assert command.main(["--logdir", str(tmp_path / logdir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured.err
    assert "no run with a checkpoint under" in captured.err
    assert "train one first with python -m compare.train," in captured.err
