"""A checkpoint is untrusted input: every header field and every array is checked before use.

A hand-edited or foreign file is refused with a CheckpointError (one line, exit 2) that
names the field; an array is checked by the shape and type its .npy header declares
before a byte of its data is read, so a small file cannot make us allocate gigabytes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tracemalloc
import zipfile
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import pytest
import torch

from compare.demo import main as demo_main
from compare.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    RunProgress,
    load_checkpoint,
    save_checkpoint,
)
from compare.model.checkpoint_reading import CONFIG_TYPES
from compare.model.init import init_params
from compare.model.state import EngineState
from compare.sample import main as sample_main
from compare.train import main as train_main
from compare.training.config import TrainConfig

VOCAB = "abcde"
HIDDEN = (1, 1, 2, 3)  # (L, P, B, H) of a one-layer RNN, batch 2, hidden size 3


def good_checkpoint(cell: str = "rnn") -> Checkpoint:
    params = init_params(len(VOCAB), 3, seed=0, cell=cell)
    accumulators = {name: np.ones_like(value) for name, value in params.items()}
    parts = {"rnn": 1, "gru": 1, "lstm": 2}[cell]
    state = EngineState(params, accumulators, updates=7, hidden=np.zeros((1, parts, 2, 3)))
    return Checkpoint(
        impl="manual",
        step=7,
        vocab=VOCAB,
        data_sha256="0" * 64,
        config=asdict(TrainConfig(hidden_size=3, batch_size=2, cell=cell)),
        progress=RunProgress(smooth_loss=1.5, seconds=2.0, val_loss=1.25, best_val_loss=1.0),
        engine=state,
        torch_rng_state=torch.get_rng_state().numpy(),
    )


def saved(tmp_path: Path, cell: str = "rnn") -> Path:
    path = tmp_path / "good.npz"
    save_checkpoint(path, good_checkpoint(cell))
    return path


def rewritten(path: Path, edit_header=None, edit_arrays=None) -> Path:
    """A copy of the checkpoint at ``path`` with its header dict and/or its arrays edited."""
    with np.load(path) as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    if edit_header:
        edit_header(header)
    if edit_arrays:
        edit_arrays(arrays)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    out = path.with_name("edited.npz")
    np.savez(out, **arrays)
    return out


def refused(path: Path, *phrases: str) -> str:
    with pytest.raises(CheckpointError) as error_info:
        load_checkpoint(path)
    message = str(error_info.value)
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, (phrase, message)
    return message


def test_a_good_checkpoint_still_loads(tmp_path):
    for cell in ("rnn", "lstm", "gru"):
        checkpoint = load_checkpoint(saved(tmp_path, cell))
        assert checkpoint.step == 7 and checkpoint.config["cell"] == cell


def drop(key):
    return lambda header: header.pop(key)


def put(key, value):
    return lambda header: header.__setitem__(key, value)


def put_config(key, value):
    return lambda header: header["config"].__setitem__(key, value)


def put_progress(key, value):
    return lambda header: header["progress"].__setitem__(key, value)


HEADER_DAMAGE = {
    "no impl": (drop("impl"), "impl"),
    "no step": (drop("step"), "step"),
    "no updates": (drop("updates"), "updates"),
    "no vocab": (drop("vocab"), "vocab"),
    "no data_sha256": (drop("data_sha256"), "data_sha256"),
    "no config": (drop("config"), "config"),
    "no progress": (drop("progress"), "progress"),
    "impl jax": (put("impl", "jax"), "impl"),
    "step a string": (put("step", "7"), "step"),
    "step a float": (put("step", 7.5), "step"),
    "step negative": (put("step", -1), "step"),
    "updates a bool": (put("updates", True), "updates"),
    "vocab a number": (put("vocab", 12345), "vocab"),
    "vocab repeats": (put("vocab", "abcdd"), "vocab"),
    "digest short": (put("data_sha256", "abc"), "data_sha256"),
    "config a list": (put("config", [1, 2]), "config"),
    "progress a string": (put("progress", "fine"), "progress"),
    "cell bogus": (put_config("cell", "bogus"), "config.cell"),
    "hidden_size a string": (put_config("hidden_size", "3"), "config.hidden_size"),
    "hidden_size 0": (put_config("hidden_size", 0), "config.hidden_size"),
    "num_layers a float": (put_config("num_layers", 1.0), "config.num_layers"),
    "batch_size missing": (lambda header: header["config"].pop("batch_size"), "config.batch_size"),
    "lr a string": (put_config("lr", "fast"), "config.lr"),
    "epochs a list": (put_config("epochs", [5]), "config.epochs"),
    "smooth_loss a string": (put_progress("smooth_loss", "low"), "progress.smooth_loss"),
    "smooth_loss missing": (lambda header: header["progress"].pop("smooth_loss"), "progress.smooth_loss"),
    "progress has an unknown field": (put_progress("momentum", 0.9), "progress.momentum"),
    "version a bool": (put("version", True), "version"),
}


@pytest.mark.parametrize("damage", HEADER_DAMAGE, ids=list(HEADER_DAMAGE))
def test_a_bad_header_field_is_refused_by_name(tmp_path, damage):
    edit, field = HEADER_DAMAGE[damage]
    refused(rewritten(saved(tmp_path), edit_header=edit), field)


def put_array(name, value):
    return lambda arrays: arrays.__setitem__(name, value)


ARRAY_DAMAGE = {
    "hidden of the wrong shape": (put_array("hidden", np.zeros((2, 3))), "hidden", "(1, 1, 2, 3)"),
    "hidden complex": (put_array("hidden", np.zeros(HIDDEN, dtype=complex)), "hidden", "complex128"),
    "U as strings": (put_array("params/U", np.full((3, 5), "x")), "params/U"),
    "U complex": (put_array("params/U", np.zeros((3, 5), dtype=np.complex128)), "params/U", "complex128"),
    "U integers": (put_array("params/U", np.zeros((3, 5), dtype=np.int64)), "params/U", "int64"),
    "W transposed": (put_array("params/W", np.zeros((3, 4))), "params/W", "(3, 3)"),
    "accumulator NaN": (put_array("accumulators/V", np.full((5, 3), np.nan)), "accumulators/V", "finite"),
    "accumulator negative": (put_array("accumulators/c", -np.ones(5)), "accumulators/c", "negative"),
    "rng state float": (put_array("torch_rng_state", np.zeros(16)), "torch_rng_state", "uint8"),
    "rng state 2-D": (put_array("torch_rng_state", np.zeros((4, 4), dtype=np.uint8)), "torch_rng_state"),
    "no params/b": (lambda arrays: arrays.pop("params/b"), "params/b"),
}


@pytest.mark.parametrize("damage", ARRAY_DAMAGE, ids=list(ARRAY_DAMAGE))
def test_a_bad_array_is_refused_by_name(tmp_path, damage):
    edit, *phrases = ARRAY_DAMAGE[damage]
    refused(rewritten(saved(tmp_path), edit_arrays=edit), *phrases)


def npy_member(shape, dtype="<f8", data_bytes: int = 0) -> bytes:
    """The bytes of a .npy file whose header declares ``shape``, followed by ``data_bytes`` zero bytes."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue() + bytes(data_bytes)


def with_member(path: Path, name: str, member: bytes) -> Path:
    """A copy of ``path`` whose ``name``.npy holds the bytes ``member`` (stored, not compressed)."""
    out = path.with_name("crafted.npz")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != f"{name}.npy":
                target.writestr(info, source.read(info))
        target.writestr(f"{name}.npy", member)
    return out


def with_deflated_member(path: Path, name: str, head: bytes, zeros: int) -> Path:
    """A copy of ``path`` whose ``name``.npy is ``head`` then ``zeros`` zero bytes, deflated: a decompression bomb."""
    out = path.with_name("bomb.npz")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            if info.filename != f"{name}.npy":
                target.writestr(info, source.read(info))
        info = zipfile.ZipInfo(f"{name}.npy")
        info.compress_type = zipfile.ZIP_DEFLATED
        with target.open(info, "w", force_zip64=True) as file:
            file.write(head)
            chunk = bytes(1 << 24)
            for _ in range(zeros // len(chunk)):
                file.write(chunk)
    return out


def test_a_huge_declared_array_is_refused_before_its_data_is_read(tmp_path):
    rows = 6250  # (6250, 8000) float64: 400 MB of zeros, deflated into about 400 KB
    head = npy_member((rows, 8000))
    bomb = with_deflated_member(saved(tmp_path), "params/U", head, rows * 8000 * 8)
    assert bomb.stat().st_size < 5_000_000
    tracemalloc.start()
    try:
        refused(bomb, "params/U", "(6250, 8000)", "(3, 5)")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50_000_000, f"{peak / 1e6:.0f} MB allocated to refuse it"


def test_a_huge_header_member_is_refused_before_it_is_read(tmp_path):
    head = npy_member((3_000_000_000,), dtype="|u1")
    crafted = with_member(saved(tmp_path), "header", head)
    refused(crafted, "header")


def test_a_member_shorter_than_its_declared_shape_is_unreadable(tmp_path):
    crafted = with_member(saved(tmp_path), "params/V", npy_member((5, 3), data_bytes=8))
    refused(crafted, "not a readable .npz checkpoint")


def test_an_old_checkpoint_without_the_later_settings_gets_their_old_values(tmp_path):
    def old(header):
        for key in ("cell", "num_layers", "val_max_chars", "corpus"):
            header["config"].pop(key)

    checkpoint = load_checkpoint(rewritten(saved(tmp_path), edit_header=old))
    assert checkpoint.config["cell"] == "rnn" and checkpoint.config["num_layers"] == 1
    assert checkpoint.config["val_max_chars"] == 0  # it validated on the whole held-out split
    assert checkpoint.config["corpus"] == "pydoc-topics"  # the one built-in corpus there was


def test_every_setting_has_a_checked_type():
    assert set(CONFIG_TYPES) == {field.name for field in fields(TrainConfig)}


def test_the_sample_command_names_the_bad_field_in_one_line(tmp_path, capsys):
    edited = rewritten(saved(tmp_path), edit_header=put_config("cell", "bogus"))
    assert sample_main(["--checkpoint", str(edited)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "config.cell" in err and "bogus" in err, err


# Loading runs no code: a module the header names is never imported (docs/cells.md#checkpoints-of-a-cell-of-your-own)

MARKER = "imported.txt"


def planted_modules(directory: Path) -> None:
    """A module file and a package in ``directory`` that, imported, write ``directory``/MARKER."""
    code = f"import pathlib\npathlib.Path({str(directory / MARKER)!r}).write_text('ran')\n"
    (directory / "evil.py").write_text(code)
    (directory / "evilpkg").mkdir()
    (directory / "evilpkg" / "__init__.py").write_text(code)
    (directory / "evilpkg" / "cell.py").write_text(code)


def naming(directory: Path, cell: str) -> Path:
    """A good checkpoint whose header names ``cell``, as runs/planted/manual/latest.npz (the newest run)."""
    path = rewritten(saved(directory), edit_header=put_config("cell", cell))
    target = directory / "runs" / "planted" / "manual" / "latest.npz"
    target.parent.mkdir(parents=True)
    return path.rename(target)


def exit_code(main, argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as stopped:  # the parser's own errors, a resume's among them
        return int(stopped.code or 0)


LOADERS = {
    "sample": lambda path, runs: (sample_main, ["--checkpoint", str(path)]),
    "demo": lambda path, runs: (demo_main, ["--checkpoint", str(path), "--port", "0"]),
    "resume": lambda path, runs: (train_main, ["--resume", str(path), "--logdir", str(runs.parent / "elsewhere")]),
    "sample, newest run": lambda path, runs: (sample_main, ["--logdir", str(runs)]),
    "demo, newest run": lambda path, runs: (demo_main, ["--logdir", str(runs), "--port", "0"]),
}
PLANTED = {
    "absolute path": lambda directory: str(directory / "evil.py"),
    "relative path": lambda directory: "evil.py",
    "module importable from the working directory": lambda directory: "evilpkg.cell",
    "a module of the standard library": lambda directory: "this",  # importing it prints the Zen of Python
}


@pytest.mark.parametrize("loader", LOADERS, ids=list(LOADERS))
@pytest.mark.parametrize("planted", PLANTED, ids=list(PLANTED))
def test_no_loader_imports_a_module_the_header_names(tmp_path, monkeypatch, capsys, loader, planted):
    planted_modules(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # as under python -m, the working directory is importable
    monkeypatch.delitem(sys.modules, "this", raising=False)
    cell = PLANTED[planted](tmp_path)
    path = naming(tmp_path, cell)
    main, argv = LOADERS[loader](path, tmp_path / "runs")
    assert exit_code(main, argv) == 2
    out, err = capsys.readouterr()
    assert not (tmp_path / MARKER).exists() and "this" not in sys.modules and "Beautiful" not in out
    error = err.splitlines()[-1]  # after 'using runs/planted (the newest run ...)' without --checkpoint
    assert err.count("\n") == (2 if "newest" in loader else 1), err
    assert f"config.cell is {cell}, a cell of your own" in error and f"pass --cell {cell} if you trust" in error


def test_python_m_sample_imports_nothing_the_header_names_from_the_working_directory(tmp_path):
    planted_modules(tmp_path)
    for index, cell in enumerate(("evilpkg.cell", "this")):  # found on sys.path: its first entry is the cwd
        (tmp_path / str(index)).mkdir()
        path = naming(tmp_path / str(index), cell)
        done = subprocess.run(
            [sys.executable, "-m", "compare.sample", "--checkpoint", str(path)],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
        assert f"pass --cell {cell} if you trust that module" in done.stderr
        assert not (tmp_path / MARKER).exists() and "Beautiful" not in done.stdout


# Every size is bounded before anything is allocated (docs/training.md#sizes)


def traced_peak(action) -> int:
    """The most bytes Python and NumPy held at once while ``action()`` ran."""
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


HUGE = {"num_layers": 10**7, "hidden_size": 10**9, "batch_size": 10**9, "seq_length": 10**9}


@pytest.mark.parametrize("name", HUGE)
def test_a_small_header_with_a_huge_size_is_refused_before_anything_is_allocated(tmp_path, name):
    path = rewritten(saved(tmp_path), edit_header=put_config(name, HUGE[name]))
    assert path.stat().st_size < 20_000
    peak = traced_peak(lambda: refused(path, f"config.{name} is {HUGE[name]:,}, expected at most"))
    assert peak < 5_000_000, f"{peak / 1e6:.0f} MB allocated to refuse it"


def test_an_array_declared_larger_than_its_bytes_in_the_archive_is_refused_before_it_is_allocated(tmp_path):
    streams = 1_000_000  # hidden is then (1, 1, 10^6, 3): 24 MB declared, in a member of a few bytes
    header = rewritten(saved(tmp_path), edit_header=put_config("batch_size", streams))
    crafted = with_member(header, "hidden", npy_member((1, 1, streams, 3), data_bytes=8))
    peak = traced_peak(lambda: refused(crafted, "not a readable .npz checkpoint"))
    assert peak < 5_000_000, f"{peak / 1e6:.0f} MB allocated to refuse it"


def test_a_checkpoint_too_large_for_the_memory_available_is_refused_with_both_figures(tmp_path, monkeypatch):
    monkeypatch.setattr("compare.model.init.available_memory", lambda: 10**9)  # 1 GB, whatever this machine has
    path = rewritten(saved(tmp_path), edit_header=put_config("hidden_size", 20_000))  # W alone: 3.2 GB
    message = refused(path, "loading it needs at least 9.6 GB of memory (an estimate)", "the 1.0 GB this machine")
    assert message.startswith(f"{path}: ")


def test_a_header_of_deeply_nested_json_is_one_line(tmp_path):
    nested = b'{"format": "bptt-compare-checkpoint", "version": 1, "config": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    crafted = with_member(saved(tmp_path), "header", npy_member((len(nested),), dtype="|u1") + nested)
    refused(crafted, "the header's JSON nests deeper than 4 levels", "not a bptt-compare-checkpoint file")
    shallow = rewritten(
        saved(tmp_path), edit_header=put_config("lr", [[[[[0.1]]]]])
    )  # the parser copes; repr might not
    refused(shallow, "nests deeper than 4 levels")


def test_a_torch_rng_state_of_another_size_than_torchs_is_refused(tmp_path):
    size = torch.get_rng_state().numel()  # torch.set_rng_state takes exactly this many bytes
    for wrong in (16, size + 1):
        edited = rewritten(saved(tmp_path), edit_arrays=put_array("torch_rng_state", np.zeros(wrong, dtype=np.uint8)))
        refused(edited, f"torch_rng_state has shape ({wrong},), expected ({size},)")
