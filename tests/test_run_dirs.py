"""Run directories: a resume writes only where the command says, a new training never replaces a run's
checkpoints unless --overwrite says so, one training owns a run directory at a time, --run-name is one plain
name, and what an interrupted save leaves is cleaned up."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tiny_runs import train_argv

from compare.model.checkpoint import load_checkpoint
from compare.train import main


def digests(directory: Path) -> dict:
    return {str(path): hashlib.sha256(path.read_bytes()).hexdigest() for path in directory.rglob("*.npz")}


def one_line_of(capsys) -> str:
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "Traceback" not in stderr, stderr
    return stderr


def run_to_60_with_a_copy_of_step_20(tmp_path: Path, copy: Path) -> Path:
    """runs/orig trained to step 20, its latest.npz copied to ``copy``, then trained on to step 60."""
    assert main(train_argv(tmp_path, "orig", max_steps=20)) == 0
    latest = tmp_path / "runs" / "orig" / "manual" / "latest.npz"
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(latest, copy)
    assert main(["--resume", str(tmp_path / "runs" / "orig"), "--max-steps", "60"]) == 0
    assert load_checkpoint(latest).step == 60
    return tmp_path / "runs" / "orig"


def test_a_resume_from_a_copy_starts_a_new_run_and_leaves_the_original_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = run_to_60_with_a_copy_of_step_20(tmp_path, tmp_path / "backup" / "step20.npz")
    before = digests(original)
    capsys.readouterr()
    assert main(["--resume", "backup/step20.npz", "--max-steps", "30"]) == 0
    out = capsys.readouterr().out
    assert digests(original) == before  # runs/orig still holds its step-60 checkpoints
    new_runs = [path for path in (tmp_path / "runs").iterdir() if path.name != "orig"]
    assert len(new_runs) == 1, new_runs
    assert load_checkpoint(new_runs[0] / "manual" / "latest.npz").step == 30
    assert "new run directory" in out and str(Path("runs") / new_runs[0].name) in out, out


def test_a_resume_never_writes_under_the_logdir_stored_in_the_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(train_argv(tmp_path, "theirs", max_steps=20, logdir=tmp_path / "elsewhere")) == 0
    shutil.copyfile(tmp_path / "elsewhere" / "theirs" / "manual" / "latest.npz", tmp_path / "copy.npz")
    before = sorted(str(path) for path in (tmp_path / "elsewhere").rglob("*"))
    assert main(["--resume", "copy.npz", "--max-steps", "25"]) == 0  # into runs/, the default --logdir
    assert sorted(str(path) for path in (tmp_path / "elsewhere").rglob("*")) == before  # nothing new there
    (new_run,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(new_run / "manual" / "latest.npz").step == 25
    assert main(["--resume", "copy.npz", "--max-steps", "25", "--logdir", "mine", "--run-name", "named"]) == 0
    assert load_checkpoint(tmp_path / "mine" / "named" / "manual" / "latest.npz").step == 25
    assert sorted(str(path) for path in (tmp_path / "elsewhere").rglob("*")) == before


def test_a_resume_refuses_to_replace_a_newer_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    original = run_to_60_with_a_copy_of_step_20(tmp_path, tmp_path / "runs" / "orig" / "manual" / "step20.npz")
    before = digests(original)
    capsys.readouterr()
    assert main(["--resume", "runs/orig/manual/step20.npz", "--max-steps", "30"]) == 2
    message = one_line_of(capsys)
    assert "step 60" in message and "step 20" in message and "--run-name" in message, message
    assert digests(original) == before
    # What the message suggests works, and still leaves runs/orig alone.
    assert main(["--resume", "runs/orig/manual/step20.npz", "--max-steps", "30", "--run-name", "fork"]) == 0
    assert load_checkpoint(tmp_path / "runs" / "fork" / "manual" / "latest.npz").step == 30
    assert digests(original) == before


def files_as_they_are(run_dir: Path) -> dict:
    """Every file of the run (its lock aside) -> its bytes and modification time."""
    return {
        path: (path.read_bytes(), path.stat().st_mtime_ns)
        for path in run_dir.rglob("*")
        if path.is_file() and path.name != ".lock"
    }


def test_a_new_training_into_a_run_with_checkpoints_is_refused_and_leaves_them_untouched(tmp_path, capsys):
    assert main(train_argv(tmp_path, "taken", impl="both", max_steps=6, eval_every=3)) == 0
    run_dir = tmp_path / "runs" / "taken"
    before = files_as_they_are(run_dir)
    assert {path.name for path in before if path.suffix == ".npz"} == {"latest.npz", "best.npz"}
    capsys.readouterr()
    assert main(train_argv(tmp_path, "taken", max_steps=3)) == 2  # the same --run-name, no --resume
    message = one_line_of(capsys)
    assert f"{run_dir} already holds the checkpoints of a training" in message, message
    assert "manual/latest.npz (step 6)" in message and "torch/best.npz (step 6)" in message, message
    assert f"--resume {run_dir}" in message and "--run-name NAME" in message and "--overwrite" in message, message
    assert files_as_they_are(run_dir) == before  # every checkpoint, event file and config.json: same bytes, same time


def test_overwrite_replaces_the_run_whole_and_a_resume_continues_it(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "taken"
    assert main(train_argv(tmp_path, "taken", impl="both", max_steps=6, eval_every=3)) == 0
    assert main([*train_argv(tmp_path, "taken", max_steps=3, val_frac=0), "--overwrite"]) == 0
    assert "a new training replaces the one in" in capsys.readouterr().out
    # nothing of the earlier run is left to be taken for this one's: not its torch/ checkpoints, not its
    # best.npz (this run validates nothing), not its event files
    assert sorted(path.relative_to(run_dir).as_posix() for path in run_dir.rglob("*.npz")) == ["manual/latest.npz"]
    assert load_checkpoint(run_dir / "manual" / "latest.npz").step == 3
    events = [path.relative_to(run_dir).parent.as_posix() for path in run_dir.rglob("events.out.tfevents.*")]
    assert events == ["manual"]
    assert main(["--resume", str(run_dir), "--max-steps", "5"]) == 0  # a resume into its own run: as before
    assert load_checkpoint(run_dir / "manual" / "latest.npz").step == 5


def test_without_a_run_name_each_training_takes_a_new_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's quick start, twice in a row (into runs/ under the working directory)
    argv = [arg for arg in train_argv(tmp_path, max_steps=3) if arg not in ("--run-name", "run")]
    assert main(argv) == 0 and main(argv) == 0
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["rnn-1", "rnn-2"]
    assert all((tmp_path / "runs" / name / "manual" / "latest.npz").is_file() for name in ("rnn-1", "rnn-2"))


@pytest.mark.parametrize("name", ["../x", "/tmp/absolute", "a/b", "", ".", ".."])
def test_run_name_must_be_one_plain_directory_name(tmp_path, monkeypatch, capsys, name):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "corpus.txt").write_text("the quick brown fox jumps over the lazy dog. " * 20)
    argv = ["--data", "corpus.txt", "--hidden-size", "8", "--max-steps", "2", "--logdir", "runs/inner"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--run-name", name])
    assert exit_info.value.code == 2
    message = one_line_of(capsys)
    assert "--run-name" in message and "one plain directory name" in message, message
    assert not (tmp_path / "runs").exists()


def start_training(tmp_path: Path, run_name: str) -> subprocess.Popen:
    """A training in another process that saves every step and would run for minutes."""
    argv = train_argv(tmp_path, run_name, checkpoint_every=1, epochs=10000)
    return subprocess.Popen([sys.executable, "-m", "compare.train", *argv], cwd=tmp_path)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.is_file():
        assert process.poll() is None, f"the training exited with {process.returncode}"
        assert time.monotonic() < deadline, f"no {path} after {timeout} s"
        time.sleep(0.1)


def test_a_second_writer_is_refused_while_a_training_owns_the_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    process = start_training(tmp_path, "busy")
    try:
        wait_for(tmp_path / "runs" / "busy" / "manual" / "latest.npz", process)
        capsys.readouterr()
        assert main(train_argv(tmp_path, "busy", max_steps=3)) == 2  # the same --run-name
        message = one_line_of(capsys)
        assert f"in use by process {process.pid}" in message and "--run-name" in message, message
        assert main(["--resume", "runs/busy", "--max-steps", "100000"]) == 2  # a resume of the run being trained
        message = one_line_of(capsys)
        assert f"in use by process {process.pid}" in message, message
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    assert process.returncode == 128 + signal.SIGTERM
    # Once its owner has gone, the run directory is free again.
    step = load_checkpoint(tmp_path / "runs" / "busy" / "manual" / "latest.npz").step
    assert main(["--resume", "runs/busy", "--max-steps", str(step + 2)]) == 0


def test_a_run_directory_in_use_in_this_process_is_refused(tmp_path, capsys):
    from compare.training.run import owning

    with owning(tmp_path / "runs" / "run"):
        assert main(train_argv(tmp_path, "run", max_steps=3)) == 2
    message = one_line_of(capsys)
    assert f"in use by process {os.getpid()}" in message, message
    assert main(train_argv(tmp_path, "run", max_steps=3)) == 0


def test_a_run_with_only_best_npz_names_it_and_how_to_resume_from_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(train_argv(tmp_path, "bestonly", max_steps=5)) == 0
    (tmp_path / "runs" / "bestonly" / "manual" / "latest.npz").unlink()
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["--resume", "runs/bestonly", "--max-steps", "10"])
    assert exit_info.value.code == 2
    message = one_line_of(capsys)
    assert "best.npz" in message and "--resume runs/bestonly/manual/best.npz" in message, message


@pytest.mark.parametrize("resume", [True, False])
def test_temporary_files_of_an_interrupted_save_are_removed_when_the_run_is_next_trained(
    tmp_path, monkeypatch, capsys, resume
):
    monkeypatch.chdir(tmp_path)
    assert main(train_argv(tmp_path, "run", max_steps=5)) == 0
    manual = tmp_path / "runs" / "run" / "manual"
    strays = [manual / f".latest.npz.{'a' * 32}.tmp", manual / f".best.npz.{'b' * 32}.tmp"]
    for stray in strays:
        stray.write_bytes(b"PK\x03\x04 half a checkpoint")
    kept = manual / "notes.tmp"  # not a name a save uses: not ours to remove
    kept.write_text("mine")
    capsys.readouterr()
    argv = (
        ["--resume", "runs/run", "--max-steps", "8"]
        if resume
        else [*train_argv(tmp_path, "run", max_steps=3), "--overwrite"]
    )
    assert main(argv) == 0
    assert not any(stray.exists() for stray in strays)
    assert kept.read_text() == "mine"
    assert "removed 2 temporary files" in capsys.readouterr().out
