"""A full disk under TensorBoard's event writer: one line, exit 1, and the checkpoint that survives.

The SummaryWriter writes from a background thread; when a write fails there, the error
surfaces on the next add_* call or at close. Either way the user gets one line (no
writer-thread traceback) naming the intact checkpoint and how to continue.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from tensorboard.summary.writer.record_writer import RecordWriter
from tiny_runs import train_argv

from compare.model.checkpoint import load_checkpoint
from compare.train import main
from compare.training import run as run_module

KEPT = re.compile(r"the last good checkpoint, (\S+) \(step (\d+)\), is intact")


def assert_names_the_intact_checkpoint(err: str, run_dir: Path) -> None:
    assert err.count("\n") == 1, err  # one line: no "Exception in thread" traceback above it
    assert "Traceback" not in err and "a bug" not in err, err
    assert "could not write TensorBoard events" in err and "No space left on device" in err, err
    assert f"continue with --resume {run_dir}" in err, err
    kept = KEPT.search(err)
    assert kept, err
    assert load_checkpoint(kept.group(1)).step == int(kept.group(2))


@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")  # its traceback, unprinted
def test_a_write_failing_in_the_writer_thread_ends_in_one_line(tmp_path, capsys, monkeypatch):
    real_write = RecordWriter.write
    writes = []

    def write(self, data):
        writes.append(len(data))
        if len(writes) > 60:  # a few steps in: after some checkpoints
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(RecordWriter, "write", write)
    code = main(train_argv(tmp_path, max_steps=40, checkpoint_every=2))
    err = capsys.readouterr().err
    assert code == 1, err
    assert_names_the_intact_checkpoint(err, tmp_path / "runs" / "run")


def test_a_failure_at_close_names_the_checkpoint_too(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "close", close)
    code = main(train_argv(tmp_path, max_steps=5))
    err = capsys.readouterr().err
    assert code == 1, err
    assert_names_the_intact_checkpoint(err, tmp_path / "runs" / "run")
    assert "(step 5)" in err


def test_an_error_that_stopped_training_is_not_replaced_by_the_writer_s(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def close(self):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "close", close)
    assert main(train_argv(tmp_path, max_steps=5, lr=10000)) == 1
    err = capsys.readouterr().err
    assert "training diverged" in err and "TensorBoard" not in err, err


@pytest.fixture
def tiny_tmpfs(tmp_path):
    """A real 512 KiB file system (needs root and mount; skipped elsewhere), as in tests/test_faults.py."""
    mount_point = tmp_path / "tmpfs"
    mount_point.mkdir()
    if shutil.which("mount") is None or os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", str(mount_point)], check=True)


def fill_up(directory: Path) -> None:
    with open(directory / "filler", "wb", buffering=0) as filler:
        try:
            while True:
                filler.write(b"\0" * 4096)
        except OSError as error:
            assert error.errno == errno.ENOSPC


def test_a_really_full_disk_after_the_last_save_ends_in_one_line(tmp_path, tiny_tmpfs, capsys, monkeypatch):
    """The file system fills up right after the final checkpoint: the events that follow cannot be written.

    The few records still to come (the HParams rows, the writers' last flush) can fit in the slack of the
    event file's last page, which a full tmpfs still lets that file use; from the fill on, every record
    write fails as it does where no slack is left.
    """
    real_save, real_write = run_module.save_checkpoint, RecordWriter.write
    full = []

    def save_then_fill(path, checkpoint):
        real_save(path, checkpoint)
        if checkpoint.step == 5 and Path(path).name == "latest.npz":
            fill_up(tiny_tmpfs)
            full.append(True)

    def write_unless_full(self, data):
        if full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    monkeypatch.setattr(run_module, "save_checkpoint", save_then_fill)
    monkeypatch.setattr(RecordWriter, "write", write_unless_full)
    code = main(train_argv(tmp_path, max_steps=5, logdir=tiny_tmpfs / "runs"))
    err = capsys.readouterr().err
    assert code == 1, err
    assert_names_the_intact_checkpoint(err, tiny_tmpfs / "runs" / "run")
