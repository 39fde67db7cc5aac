"""Every way a user can hand the commands something wrong, and what each one must answer.

The same list drives tests/test_errors.py and the README's "What happens when..." table
(tests/what_happens_table.py prints it).

A case writes the files it needs into a working directory and gives the command-line
arguments; run_case runs the command there (in this process) and records the exit code
and stderr. Paths are relative to the working directory, so the messages read as a
user would see them.
"""

from __future__ import annotations

import codecs
import contextlib
import errno
import hashlib
import io
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from unittest import mock

import numpy as np
from tiny_runs import PHRASE, train_argv

# Small and fast: a run of these settings takes well under a second.
FAST = [
    "--hidden-size",
    "8",
    "--seq-length",
    "8",
    "--batch-size",
    "2",
    "--max-steps",
    "3",
    "--eval-every",
    "2",
    "--sample-every",
    "10",
    "--sample-length",
    "10",
]
TRAINED = "runs/trained"  # a finished tiny run, made once per working directory by trained_run()


@dataclass(frozen=True)
class Case:
    name: str  # the test id
    group: str  # the table's heading: Inputs, Hyperparameters, Checkpoints, Output, Faults
    when: str  # what the user did, as the table says it
    command: str  # "train", "sample" or "gradcheck"
    make_argv: Callable[[Path], list]  # writes what it needs into the working directory; returns the arguments
    exit_code: int
    says: tuple = ()  # phrases the one-line message must contain: the diagnosis and the fix
    fault: Callable[[Path], contextlib.AbstractContextManager] | None = None  # a fault injected while it runs
    note: str = "trains normally"  # what the table says when the command succeeds


@dataclass
class Outcome:
    exit_code: int
    stderr: str
    stdout: str = field(repr=False, default="")


def write(directory: Path, name: str, content) -> str:
    """Write ``content`` (str as UTF-8, or bytes) to ``directory``/name; return the relative name."""
    path = directory / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return name


def corpus(directory: Path) -> str:
    return write(directory, "corpus.txt", PHRASE * 20)


def trained_run(directory: Path) -> str:
    """A 5-step run (hidden size 16) on corpus.txt, trained once: its run directory, relative."""
    if not (directory / TRAINED / "manual" / "latest.npz").is_file():
        from compare.training.config import parse_args
        from compare.training.loop import train

        train(parse_args(train_argv(directory, run_name="trained", max_steps=5)))
    return TRAINED


def damaged_checkpoint(directory: Path, name: str, damage: Callable[[bytes], bytes]) -> str:
    """A copy of the trained run's latest.npz with its bytes passed through ``damage``."""
    good = (directory / trained_run(directory) / "manual" / "latest.npz").read_bytes()
    return write(directory, name, damage(good))


def checkpoint_of_version(directory: Path, version: int) -> str:
    """The trained run's latest.npz with the format version in its header changed."""
    source = directory / trained_run(directory) / "manual" / "latest.npz"
    with np.load(source) as archive:
        arrays = dict(archive)
    header = bytes(arrays["header"]).replace(b'"version": 1', f'"version": {version}'.encode())
    arrays["header"] = np.frombuffer(header, dtype=np.uint8)
    np.savez(directory / f"version{version}.npz", **arrays)
    return f"version{version}.npz"


def cjk_text(distinct: int = 3000, length: int = 20000) -> str:
    """Every one of ``distinct`` CJK ideographs, then random ones: a vocabulary too large for uint8."""
    rng = np.random.default_rng(0)
    chars = [chr(0x4E00 + i) for i in range(distinct)]
    return "".join(chars) + "".join(rng.choice(chars, size=length))


def foreign_npz(_good: bytes) -> bytes:
    """A valid .npz that is not a checkpoint (ignores the good checkpoint's bytes)."""
    buffer = io.BytesIO()
    np.savez(buffer, weights=np.zeros(3))
    return buffer.getvalue()


@contextlib.contextmanager
def disk_full_after_first_save(directory: Path):
    """np.savez works once, then writes a few bytes and fails as a full disk does."""
    real_savez = np.savez
    calls = []

    def savez(file, **arrays):
        calls.append(file)
        if len(calls) == 1:
            return real_savez(file, **arrays)
        file.write(b"PK\x03\x04 the first bytes of a zip")
        raise OSError(errno.ENOSPC, "No space left on device")

    with mock.patch.object(np, "savez", savez):
        yield


@contextlib.contextmanager
def no_write_permission(directory: Path):
    """read-only/ refuses new entries, as a directory without write permission does (root may write in any)."""
    (directory / "read-only").mkdir(exist_ok=True)
    real_mkdir = os.mkdir

    def mkdir(path, *args, **kwargs):
        if Path(path).parent.name == "read-only":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_mkdir(path, *args, **kwargs)

    with mock.patch.object(os, "mkdir", mkdir):
        yield


def train_case(name, group, when, make_argv, exit_code, *says, fault=None, note="trains normally") -> Case:
    return Case(name, group, when, "train", make_argv, exit_code, says, fault, note)


def sample_case(name, group, when, make_argv, exit_code, *says) -> Case:
    return Case(name, group, when, "sample", make_argv, exit_code, says, note="prints the sample")


def sample_trained(*flags) -> Callable[[Path], list]:
    return lambda d: ["--checkpoint", trained_run(d), *flags]


def train_on(content, *flags) -> Callable[[Path], list]:
    """Arguments that train on a file holding ``content`` (named after a hash of it)."""

    def make_argv(directory: Path) -> list:
        raw = content if isinstance(content, bytes) else content.encode("utf-8")
        name = f"data-{hashlib.sha1(raw).hexdigest()[:8]}"
        run_name = f"{name}-{hashlib.sha1(repr(flags).encode()).hexdigest()[:8]}"  # one run directory per case
        return ["--data", write(directory, f"{name}.txt", content), *FAST, "--run-name", run_name, *flags]

    return make_argv


def resume_with(*flags) -> Callable[[Path], list]:
    return lambda d: ["--resume", trained_run(d), *flags]


CASES = [
    # Inputs
    train_case(
        "data-missing",
        "Inputs",
        "`--data` names a file that does not exist",
        lambda d: ["--data", "no-such-file.txt"],
        2,
        "no such file",
    ),
    train_case(
        "data-directory", "Inputs", "`--data` names a directory", lambda d: ["--data", "."], 2, "is a directory"
    ),
    train_case("data-empty", "Inputs", "`--data` is an empty file", train_on(""), 2, "is empty"),
    train_case(
        "data-too-short",
        "Inputs",
        "the training split is shorter than one batch",
        train_on("hello world", "--batch-size", "4"),
        2,
        "needs 33",
        "lower --batch-size or --seq-length",
    ),
    train_case(
        "val-split-empty",
        "Inputs",
        "`--val-frac` holds out no character",
        train_on(PHRASE * 3, "--val-frac", "0.001"),
        2,
        "too few to validate",
        "--val-frac 0",
    ),
    train_case(
        "val-split-one-character",
        "Inputs",
        "`--val-frac` holds out a single character",
        train_on(PHRASE * 3, "--val-frac", "0.01"),
        2,
        "holds out 1 characters",
        "too few to validate on (needs 2)",
        "--val-frac 0",
    ),
    train_case(
        "data-not-utf8",
        "Inputs",
        "`--data` is not valid UTF-8",
        train_on(b"caf\xe9 au lait " * 10),
        2,
        "byte 0xe9 at byte offset 3",
        "--encoding",
        "--errors replace",
    ),
    train_case(
        "data-latin1",
        "Inputs",
        "... and `--encoding latin-1` is given",
        train_on(b"caf\xe9 au lait " * 10, "--encoding", "latin-1"),
        0,
    ),
    train_case(
        "data-errors-replace",
        "Inputs",
        "... or `--errors replace` is given",
        train_on(b"caf\xe9 au lait " * 10, "--errors", "replace"),
        0,
    ),
    train_case(
        "data-binary",
        "Inputs",
        "`--data` is a binary file (NUL bytes)",
        train_on(bytes(range(256)) * 4),
        2,
        "looks binary",
        "give a text file",
    ),
    train_case(
        "data-nul-characters",
        "Inputs",
        "`--data` is valid UTF-8 text with NUL characters in it",
        train_on("hello\x00world. " * 20),
        2,
        "looks binary (it holds NUL characters)",
        "give a text file",
    ),
    train_case(
        "data-one-character",
        "Inputs",
        "the text has a single distinct character",
        train_on("a" * 500),
        2,
        "single distinct character",
        "at least two different characters",
    ),
    train_case(
        "data-cjk",
        "Inputs",
        "the text has 3,000 distinct characters (CJK)",
        train_on(cjk_text()),
        0,
        note="trains normally, with 16-bit token ids",
    ),
    Case(
        "gradcheck-data-not-utf8",
        "Inputs",
        "`compare.gradcheck --data` is not valid UTF-8",
        "gradcheck",
        lambda d: ["--data", write(d, "latin1.txt", b"caf\xe9 au lait " * 10)],
        2,
        ("byte offset 3",),
    ),
    # Hyperparameters
    train_case(
        "hidden-size-0",
        "Hyperparameters",
        "`--hidden-size 0`",
        lambda d: ["--hidden-size", "0"],
        2,
        "--hidden-size must be positive",
        "default is 100",
    ),
    train_case(
        "seq-length-0",
        "Hyperparameters",
        "`--seq-length 0`",
        lambda d: ["--seq-length", "0"],
        2,
        "--seq-length must be positive",
    ),
    train_case(
        "batch-size-negative",
        "Hyperparameters",
        "`--batch-size -1`",
        lambda d: ["--batch-size", "-1"],
        2,
        "--batch-size must be positive",
    ),
    train_case(
        "epochs-0", "Hyperparameters", "`--epochs 0`", lambda d: ["--epochs", "0"], 2, "--epochs must be positive"
    ),
    train_case(
        "max-steps-0",
        "Hyperparameters",
        "`--max-steps 0` (leave it out for no limit)",
        lambda d: ["--max-steps", "0"],
        2,
        "--max-steps must be positive",
    ),
    train_case("lr-0", "Hyperparameters", "`--lr 0`", lambda d: ["--lr", "0"], 2, "--lr must be a positive number"),
    train_case(
        "lr-nan", "Hyperparameters", "`--lr nan`", lambda d: ["--lr", "nan"], 2, "--lr must be a positive number"
    ),
    train_case("clip-negative", "Hyperparameters", "`--clip -1`", lambda d: ["--clip", "-1"], 2, "--clip must be >= 0"),
    train_case(
        "clip-norm-negative", "Hyperparameters", "`--clip-norm -1`", lambda d: ["--clip-norm", "-1"], 2, "--clip-norm"
    ),
    train_case("lr-decay-0", "Hyperparameters", "`--lr-decay 0`", lambda d: ["--lr-decay", "0"], 2, "--lr-decay must"),
    train_case("val-frac-1", "Hyperparameters", "`--val-frac 1`", lambda d: ["--val-frac", "1"], 2, "in [0, 1)"),
    train_case(
        "val-frac-negative", "Hyperparameters", "`--val-frac -0.1`", lambda d: ["--val-frac", "-0.1"], 2, "in [0, 1)"
    ),
    train_case(
        "val-frac-0",
        "Hyperparameters",
        "`--val-frac 0` (no validation, no best.npz)",
        lambda d: ["--data", corpus(d), *FAST, "--val-frac", "0", "--run-name", "no-validation"],
        0,
        note="trains on all the text; no loss/val, no best.npz; the summary says `no validation (--val-frac 0)`",
    ),
    train_case(
        "encoding-unknown",
        "Hyperparameters",
        "`--encoding klingon`",
        lambda d: ["--encoding", "klingon"],
        2,
        "not an encoding Python knows",
    ),
    sample_case(
        "temperature-negative",
        "Hyperparameters",
        "`compare.sample --temperature -1`",
        sample_trained("--temperature", "-1"),
        2,
        "--temperature must be >= 0",
    ),
    sample_case(
        "temperature-100",
        "Hyperparameters",
        "`compare.sample --temperature 100`",
        sample_trained("--temperature", "100", "--length", "20"),
        0,
    ),
    sample_case(
        "prime-unknown",
        "Hyperparameters",
        "`compare.sample --prime` with characters not in the text",
        sample_trained("--prime", "Zürich"),
        2,
        "not in the vocabulary: 'Zü'",
        "use characters of the training text",
    ),
    sample_case(
        "length-0",
        "Hyperparameters",
        "`compare.sample --length 0`",
        sample_trained("--length", "0"),
        2,
        "--length must be between 1 and 1,000,000",
    ),
    sample_case(
        "length-huge",
        "Hyperparameters",
        "`compare.sample --length 1000000000000`",
        sample_trained("--length", str(10**12)),
        2,
        "--length must be between 1 and 1,000,000",
    ),
    Case(
        "gradcheck-hidden-size-0",
        "Hyperparameters",
        "`compare.gradcheck --hidden-size 0`",
        "gradcheck",
        lambda d: ["--hidden-size", "0"],
        2,
        ("--hidden-size must be positive",),
    ),
    # Checkpoints
    sample_case(
        "checkpoint-missing",
        "Checkpoints",
        "`--checkpoint` names nothing",
        lambda d: ["--checkpoint", "no-such.npz"],
        2,
        "no such checkpoint file or run directory",
    ),
    sample_case(
        "no-run",
        "Checkpoints",
        "no `--checkpoint`, and no run under `--logdir`",
        lambda d: ["--logdir", "no-runs"],
        2,
        "no run with a checkpoint under no-runs/",
        "train one first with python -m compare.train,",
    ),
    train_case(
        "resume-missing",
        "Checkpoints",
        "`--resume` names nothing",
        lambda d: ["--resume", "runs/no-such-run"],
        2,
        "no such checkpoint file or run directory",
    ),
    sample_case(
        "checkpoint-truncated",
        "Checkpoints",
        "the checkpoint is truncated",
        lambda d: ["--checkpoint", damaged_checkpoint(d, "truncated.npz", lambda data: data[: len(data) // 2])],
        2,
        "not a readable .npz checkpoint",
        "best.npz",
    ),
    sample_case(
        "checkpoint-not-npz",
        "Checkpoints",
        "the checkpoint is some other file",
        lambda d: ["--checkpoint", write(d, "notes.npz", "not a checkpoint")],
        2,
        "not a readable .npz",
    ),
    sample_case(
        "checkpoint-foreign-npz",
        "Checkpoints",
        "the checkpoint is an .npz of something else",
        lambda d: ["--checkpoint", damaged_checkpoint(d, "foreign.npz", foreign_npz)],
        2,
        "not a bptt-compare-checkpoint file",
    ),
    sample_case(
        "checkpoint-newer",
        "Checkpoints",
        "the checkpoint has a newer format version",
        lambda d: ["--checkpoint", checkpoint_of_version(d, 2)],
        2,
        "newer bptt-compare",
        "update bptt-compare",
    ),
    train_case(
        "resume-other-shape",
        "Checkpoints",
        "`--resume` with a `--hidden-size` that contradicts the checkpoint",
        resume_with("--hidden-size", "32", "--max-steps", "10"),
        2,
        "--hidden-size 32 (checkpoint: 16)",
        "drop them to resume",
    ),
    train_case(
        "resume-other-text",
        "Checkpoints",
        "`--resume` with a different `--data` text",
        lambda d: [
            "--resume",
            trained_run(d),
            "--data",
            write(d, "other.txt", PHRASE.upper() * 20),
            "--max-steps",
            "10",
        ],
        2,
        "training text differs",
        "same --data",
    ),
    train_case(
        "resume-finished",
        "Checkpoints",
        "`--resume` a run that has done all its steps",
        resume_with("--max-steps", "5"),
        2,
        "raise --epochs or --max-steps",
    ),
    # Output
    train_case(
        "logdir-unwritable",
        "Output",
        "`--logdir` cannot be written",
        lambda d: ["--data", corpus(d), *FAST, "--logdir", f"{write(d, 'a-file', 'x')}/runs", "--run-name", "run"],
        2,
        "cannot write",
        "choose a --logdir you can write to",
    ),
    train_case(
        "logdir-a-file",
        "Output",
        "`--logdir` is a file",
        lambda d: ["--data", corpus(d), *FAST, "--logdir", write(d, "a-file", "x")],
        2,
        "a-file is a file, not a directory",
        "choose a --logdir you can write to",
    ),
    train_case(
        "logdir-permission-denied",
        "Output",
        "`--logdir` is in a directory you may not write in",
        lambda d: ["--data", corpus(d), *FAST, "--logdir", "read-only/runs"],
        2,
        "cannot write to read-only/runs (Permission denied)",
        "choose a --logdir you can write to",
        fault=no_write_permission,
    ),
    sample_case(
        "sample-logdir-a-file",
        "Output",
        "`compare.sample --logdir` (or `compare.demo --logdir`) is a file",
        lambda d: ["--logdir", write(d, "a-file", "x")],
        2,
        "--logdir a-file: a-file is a file, not a directory",
        "or --checkpoint",
    ),
    Case(
        "gradcheck-json-unwritable",
        "Output",
        "`compare.gradcheck --json` into a missing directory",
        "gradcheck",
        lambda d: ["--sample", "1", "--json", "no-such-dir/out.json"],
        2,
        ("no such directory",),
    ),
    # Faults
    train_case(
        "diverges",
        "Faults",
        "the loss diverges (`--lr 10000`)",
        lambda d: ["--data", corpus(d), *FAST, "--lr", "10000", "--checkpoint-every", "1", "--run-name", "diverges"],
        1,
        "training diverged at step 1",
        "start again with a lower --lr",
    ),
    train_case(
        "disk-full",
        "Faults",
        "the disk is full when a checkpoint is saved",
        lambda d: ["--data", corpus(d), *FAST, "--checkpoint-every", "1", "--run-name", "disk-full"],
        1,
        "No space left on device",
        "the last good checkpoint, runs/disk-full/manual/latest.npz (step 1), is intact",
        "--resume runs/disk-full",
        fault=disk_full_after_first_save,
    ),
    # Run directories (compare/training/run.py)
    train_case(
        "run-name-not-plain",
        "Output",
        "`--run-name ../x` (a path, not one directory name)",
        lambda d: ["--data", corpus(d), *FAST, "--run-name", "../x"],
        2,
        "must be one plain directory name",
    ),
    train_case(
        "resume-best-only",
        "Checkpoints",
        "`--resume runs/<run>` whose latest.npz is gone, only best.npz left",
        lambda d: ["--resume", run_with_only_best(d), "--max-steps", "10"],
        2,
        "it holds only runs/best-only/manual/best.npz",
        "--resume runs/best-only/manual/best.npz",
    ),
    train_case(
        "resume-older-in-run",
        "Checkpoints",
        "`--resume` an older checkpoint kept inside a run that has trained further",
        lambda d: ["--resume", run_moved_on(d), "--max-steps", "10"],
        2,
        "runs/moved-on/manual/latest.npz is at step 6, newer than",
        "step 3",
        "--run-name",
    ),
    train_case(
        "resume-copy",
        "Checkpoints",
        "`--resume` a copy of a checkpoint kept outside any run directory",
        lambda d: ["--resume", copied_checkpoint(d), "--max-steps", "7"],
        0,
        note="trains on in a new run directory under --logdir (stdout names it); the run it came from is untouched",
    ),
    train_case(
        "run-name-taken",
        "Checkpoints",
        "a new training (no `--resume`) with the `--run-name` of a run that holds checkpoints",
        lambda d: ["--data", corpus(d), *FAST, "--run-name", Path(trained_run(d)).name],
        2,
        "runs/trained already holds the checkpoints of a training (manual/latest.npz (step 5)",
        "--resume runs/trained to continue it",
        "--run-name NAME",
        "--overwrite",
    ),
]


def run_with_only_best(directory: Path) -> str:
    """runs/best-only: the trained run's best.npz and nothing else."""
    best = directory / "runs" / "best-only" / "manual" / "best.npz"
    if not best.is_file():
        best.parent.mkdir(parents=True, exist_ok=True)
        best.write_bytes((directory / trained_run(directory) / "manual" / "best.npz").read_bytes())
    return "runs/best-only"


def run_moved_on(directory: Path) -> str:
    """runs/moved-on trained to step 6, with a copy of its step-3 latest.npz kept in it as step3.npz."""
    from compare.training.config import parse_args
    from compare.training.loop import train

    older = directory / "runs" / "moved-on" / "manual" / "step3.npz"
    if not older.is_file():
        fast = ["--data", corpus(directory), *FAST, "--logdir", str(directory / "runs"), "--run-name", "moved-on"]
        train(parse_args(fast))  # 3 steps
        older.write_bytes(older.with_name("latest.npz").read_bytes())
        train(parse_args(["--resume", str(older.parent), "--max-steps", "6"]))
    return "runs/moved-on/manual/step3.npz"


def copied_checkpoint(directory: Path) -> str:
    """A copy of the trained run's latest.npz (step 5), kept outside any run directory."""
    return write(
        directory, "kept-copy.npz", (directory / trained_run(directory) / "manual" / "latest.npz").read_bytes()
    )


@contextlib.contextmanager
def working_directory(directory: Path):
    """Run the body in ``directory`` (contextlib.chdir needs Python 3.11)."""
    previous = os.getcwd()
    os.chdir(directory)
    try:
        yield
    finally:
        os.chdir(previous)


def main_of(command: str):
    if command == "train":
        from compare.train import main
    elif command == "sample":
        from compare.sample import main
    else:
        from compare.gradcheck import main
    return main


def run_case(case: Case, directory: Path) -> Outcome:
    """Run ``case`` in ``directory`` in this process: its exit code, stderr and stdout."""
    with working_directory(directory):
        argv = case.make_argv(directory)
        fault = case.fault(directory) if case.fault else contextlib.nullcontext()
        stdout, stderr = io.StringIO(), io.StringIO()
        with fault, contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            try:
                exit_code = main_of(case.command)(argv)
            except SystemExit as exit_info:  # argparse's errors exit from inside the parser
                exit_code = exit_info.code
    return Outcome(exit_code, stderr.getvalue(), stdout.getvalue())


# Appended rows: special files, byte order marks, codecs, seeds, the validation cap, edited
# checkpoints, and a full disk under TensorBoard's event files.


def fifo(directory: Path) -> str:
    """A named pipe in ``directory``: opening it for reading would wait for a writer forever."""
    if not (directory / "pipe").exists():
        os.mkfifo(directory / "pipe")
    return "pipe"


def edited_checkpoint(directory: Path, name: str, header=None, arrays=None) -> str:
    """The trained run's latest.npz with its header dict and/or its arrays edited in place."""
    import json

    source = directory / trained_run(directory) / "manual" / "latest.npz"
    with np.load(source) as archive:
        contents = dict(archive)
    settings = json.loads(bytes(contents["header"]))
    if header:
        header(settings)
    if arrays:
        arrays(contents)
    contents["header"] = np.frombuffer(json.dumps(settings).encode(), dtype=np.uint8)
    np.savez(directory / name, **contents)
    return name


@contextlib.contextmanager
def events_disk_full(directory: Path):
    """TensorBoard's writer thread writes 10 records (the first steps' scalars), then fails as a full disk does."""
    from tensorboard.summary.writer.record_writer import RecordWriter

    real_write = RecordWriter.write
    writes = []

    def write(self, data):
        writes.append(len(data))
        if len(writes) > 10:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)

    with mock.patch.object(RecordWriter, "write", write):
        yield


CASES += [
    train_case(
        "data-device",
        "Inputs",
        "`--data /dev/zero` (a device, not a file)",
        lambda d: ["--data", "/dev/zero"],
        2,
        "is not a regular file (a character device)",
    ),
    train_case(
        "data-fifo",
        "Inputs",
        "`--data` is a FIFO (named pipe)",
        lambda d: ["--data", fifo(d)],
        2,
        "is not a regular file (a FIFO)",
    ),
    train_case(
        "data-utf16-bom",
        "Inputs",
        "`--data` is UTF-16 text (with a byte order mark)",
        train_on((PHRASE * 20).encode("utf-16")),
        2,
        "UTF-16 byte order mark",
        "pass --encoding utf-16",
    ),
    train_case(
        "data-utf16-given",
        "Inputs",
        "... and `--encoding utf-16` is given",
        train_on((PHRASE * 20).encode("utf-16"), "--encoding", "utf-16"),
        0,
    ),
    train_case(
        "data-utf8-bom",
        "Inputs",
        "`--data` starts with a UTF-8 byte order mark (EF BB BF)",
        train_on(codecs.BOM_UTF8 + (PHRASE * 20).encode("utf-8")),
        0,
        note="trains normally; the mark is not part of the text (nor of its vocabulary or digest)",
    ),
    train_case(
        "encoding-rot13",
        "Hyperparameters",
        "`--encoding rot13` (a codec, not a text encoding)",
        lambda d: ["--encoding", "rot13"],
        2,
        "is not a text encoding",
    ),
    train_case(
        "seed-negative",
        "Hyperparameters",
        "`--seed -1`",
        lambda d: ["--seed", "-1"],
        2,
        "--seed must be in [0, 2^63)",
    ),
    sample_case(
        "sample-seed-negative",
        "Hyperparameters",
        "`compare.sample --seed -1`",
        sample_trained("--seed", "-1"),
        2,
        "--seed must be in [0, 2^63), got -1",
    ),
    Case(
        "gradcheck-seed-negative",
        "Hyperparameters",
        "`compare.gradcheck --seed -1`",
        "gradcheck",
        lambda d: ["--seed", "-1"],
        2,
        ("--seed must be in [0, 2^63), got -1",),
    ),
    train_case(
        "val-max-chars-1",
        "Hyperparameters",
        "`--val-max-chars 1`",
        lambda d: ["--val-max-chars", "1"],
        2,
        "--val-max-chars must be 0",
    ),
    sample_case(
        "checkpoint-bogus-cell",
        "Checkpoints",
        'the checkpoint\'s header names a module (`"cell": "bogus"`) that `--cell` does not',
        lambda d: [
            "--checkpoint",
            edited_checkpoint(d, "bogus-cell.npz", header=lambda h: h["config"].update(cell="bogus")),
        ],
        2,
        "config.cell is bogus, a cell of your own",
        "pass --cell bogus if you trust that module",
    ),
    sample_case(
        "checkpoint-hidden-shape",
        "Checkpoints",
        "an array of the checkpoint has the wrong shape",
        lambda d: [
            "--checkpoint",
            edited_checkpoint(d, "hidden-shape.npz", arrays=lambda a: a.update(hidden=np.zeros((2, 16)))),
        ],
        2,
        "hidden has shape (2, 16), expected (1, 1, 2, 16)",
    ),
    sample_case(
        "checkpoint-complex",
        "Checkpoints",
        "an array of the checkpoint holds complex numbers",
        lambda d: [
            "--checkpoint",
            edited_checkpoint(
                d, "complex.npz", arrays=lambda a: a.update({"params/V": a["params/V"].astype(np.complex128)})
            ),
        ],
        2,
        "params/V holds complex128 values",
    ),
    train_case(
        "events-disk-full",
        "Faults",
        "the disk fills up under TensorBoard's event files",
        lambda d: ["--data", corpus(d), *FAST, "--checkpoint-every", "1", "--log-every", "1", "--run-name", "events"],
        1,
        "could not write TensorBoard events",
        "No space left on device",
        "runs/events/manual/latest.npz (step",
        "is intact",
        "--resume runs/events",
        fault=events_disk_full,
    ),
]


def nested_header(directory: Path) -> str:
    """The trained run's latest.npz with a header of JSON nested 100,000 deep."""
    nested = b'{"format": "bptt-compare-checkpoint", "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    member = io.BytesIO()
    np.save(member, np.frombuffer(nested, dtype=np.uint8))
    source = directory / trained_run(directory) / "manual" / "latest.npz"
    with zipfile.ZipFile(source) as good, zipfile.ZipFile(directory / "nested.npz", "w") as out:
        for info in good.infolist():
            out.writestr(info, member.getvalue() if info.filename == "header.npy" else good.read(info))
    return "nested.npz"


# Sizes bounded before anything is allocated, and headers that would have run code or exhausted the stack.
CASES += [
    train_case(
        "num-layers-huge",
        "Hyperparameters",
        "`--num-layers 10000000`",
        lambda d: ["--num-layers", "10000000"],
        2,
        "--num-layers must be at most 1,024 (see docs/training.md#sizes), got 10,000,000",
    ),
    Case(
        "gradcheck-hidden-size-huge",
        "Hyperparameters",
        "`compare.gradcheck --hidden-size 100000`",
        "gradcheck",
        lambda d: ["--hidden-size", "100000"],
        2,
        ("--hidden-size must be at most 65,536",),
    ),
    sample_case(
        "checkpoint-huge-layers",
        "Checkpoints",
        'the checkpoint\'s header says `"num_layers": 10000000`',
        lambda d: [
            "--checkpoint",
            edited_checkpoint(d, "deep.npz", header=lambda h: h["config"].update(num_layers=10_000_000)),
        ],
        2,
        "config.num_layers is 10,000,000, expected at most 1,024",
    ),
    sample_case(
        "checkpoint-nested-json",
        "Checkpoints",
        "the checkpoint's header is JSON nested 100,000 deep",
        lambda d: ["--checkpoint", nested_header(d)],
        2,
        "the header's JSON nests deeper than 4 levels",
    ),
    sample_case(
        "checkpoint-rng-size",
        "Checkpoints",
        "the checkpoint's `torch_rng_state` is not the size torch's generator state has",
        lambda d: [
            "--checkpoint",
            edited_checkpoint(d, "rng.npz", arrays=lambda a: a.update(torch_rng_state=np.zeros(16, dtype=np.uint8))),
        ],
        2,
        "torch_rng_state has shape (16,), expected",
    ),
]
