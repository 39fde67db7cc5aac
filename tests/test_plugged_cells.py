"""--cell with a cell of your own: the example MGU's gradients proven like the built-in cells' (centred
differences, complex step, autograd), the loader's one-line errors, and train -> checkpoint -> sample."""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from error_cases import working_directory
from tiny_runs import train_argv

import manual
from compare.data.corpus import Vocab
from compare.examples import mgu
from compare.gradflow import main as gradflow_main
from compare.gradients.oracles import (
    Problem,
    autograd_gradient,
    central_differences,
    complex_step,
    manual_gradient,
    manual_loss_function,
)
from compare.model.cells import CellError, cell_label, record_name, resolve_cell
from compare.model.checkpoint import CheckpointError, load_checkpoint
from compare.model.init import param_shapes
from compare.model.sampling import sample_text, sampling_engine
from compare.sample import main as sample_main
from compare.serving.server import load_demo_model
from compare.training.config import parse_args
from compare.training.loop import train

ROOT = Path(__file__).resolve().parents[1]
MGU_FILE = ROOT / "compare" / "examples" / "mgu.py"


def mgu_problem(num_layers: int, seed: int = 0, vocab: int = 6, hidden: int = 4, batch: int = 2, steps: int = 5):
    """Random float64 weights (std 0.5: every gradient entry far from zero), batch and carried-in state."""
    rng = np.random.default_rng(seed)
    shapes = param_shapes(vocab, hidden, "compare.examples.mgu", num_layers)
    params = {name: rng.normal(0.0, 0.5, size=shape) for name, shape in shapes.items()}
    inputs, targets = rng.integers(0, vocab, size=(2, batch, steps))
    state0 = rng.normal(0.0, 0.5, size=(num_layers, mgu.STATE_PARTS, batch, hidden))
    return Problem(params, inputs, targets, state0, "compare.examples.mgu")


def every_entry(problem: Problem) -> dict[str, np.ndarray]:
    return {name: np.arange(value.size) for name, value in problem.params.items()}


@pytest.mark.exactness
@pytest.mark.parametrize("num_layers", [1, 2])
def test_the_example_cells_backward_matches_every_oracle(num_layers):
    problem = mgu_problem(num_layers)
    entries = every_entry(problem)
    analytic = manual_gradient(problem, entries)
    oracles = {
        # complex step: no subtraction, so agreement to rounding (a few ulps of the largest entry)
        "complex": (complex_step(problem, entries, 1e-30), 1e-12),
        # autograd differentiates the torch step, a separate float64 program: rounding again
        "autograd": (autograd_gradient(problem, entries), 1e-12),
        # centred differences with h = 1e-5: truncation O(h^2) ~ 1e-10, cancellation ~1e-11
        "central": (central_differences(manual_loss_function(problem), problem.params, entries, 1e-5), 1e-8),
    }
    for name, (numerical, tolerance) in oracles.items():
        for param in analytic:
            torch.testing.assert_close(analytic[param], numerical[param], rtol=tolerance, atol=tolerance, msg=name)


@pytest.mark.exactness
def test_the_example_cells_two_sides_compute_the_same_hidden_states():
    problem = mgu_problem(1)
    x_proj = np.random.default_rng(1).normal(size=(5, 2, 8))  # (T, B, 2H)
    W = problem.params["W"]
    hidden, state_last, _ = mgu.recurrence_forward(x_proj, W, problem.state0[0])
    state = torch.from_numpy(problem.state0[0])
    for t in range(5):
        h, state = mgu.step(torch.from_numpy(x_proj[t]), torch.from_numpy(W), state)
        # the same float64 arithmetic in another order: equal to a few ulps
        torch.testing.assert_close(h.numpy(), hidden[t], rtol=1e-14, atol=1e-14)
    torch.testing.assert_close(state.numpy(), state_last, rtol=1e-14, atol=1e-14)


def test_an_import_path_and_a_file_name_the_same_cell():
    by_import, by_file = resolve_cell("compare.examples.mgu"), resolve_cell(str(MGU_FILE))
    assert by_import.manual is mgu and by_import.torch is mgu
    assert by_file.gates == by_import.gates == 2 and by_file.state_parts == 1
    assert resolve_cell(str(MGU_FILE)).manual is by_file.manual  # loaded once, like an import
    assert cell_label(str(MGU_FILE)) == cell_label("compare.examples.mgu") == "mgu"
    assert resolve_cell("lstm").manual is manual.CELLS["lstm"]


INTERFACE_SOURCE = {
    "GATES": "GATES = 1\n",
    "STATE_PARTS": "STATE_PARTS = 1\n",
    "recurrence_forward": "def recurrence_forward(x_proj, W, state0): pass\n",
    "recurrence_backward": "def recurrence_backward(d_hidden, cache): pass\n",
    "step": "def step(x_proj, W, state): pass\n",
}


@pytest.mark.parametrize("missing", list(INTERFACE_SOURCE))
def test_a_module_lacking_part_of_the_interface_is_one_line_naming_it(tmp_path, missing):
    path = tmp_path / f"lacks_{missing}.py"
    path.write_text("".join(source for part, source in INTERFACE_SOURCE.items() if part != missing))
    with pytest.raises(CellError) as raised:
        resolve_cell(str(path))
    assert str(raised.value) == f"--cell {path}: the module has no {missing} (see docs/cells.md#writing-a-cell)"


@pytest.mark.parametrize("command", ["train", "gradcheck", "bench_cells"])
def test_every_command_refuses_an_incomplete_cell_with_exit_2(tmp_path, command):
    path = tmp_path / "half.py"
    path.write_text("GATES = 1\nSTATE_PARTS = 1\ndef recurrence_forward(x_proj, W, state0): pass\n")
    done = subprocess.run(
        [sys.executable, "-m", f"compare.{command}", "--cell", str(path)], capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 2
    assert done.stderr == (
        f"python -m compare.{command}: error: --cell {path}: the module has no recurrence_backward "
        "(see docs/cells.md#writing-a-cell)\n"
    )


def test_gate_names_must_name_every_gate_block(tmp_path):
    path = tmp_path / "misnamed.py"
    path.write_text("".join(INTERFACE_SOURCE.values()) + "GATE_NAMES = ('a', 'b')\n")
    with pytest.raises(CellError) as raised:
        resolve_cell(str(path))
    assert str(raised.value) == (
        f"--cell {path}: GATE_NAMES is ('a', 'b'), expected one name per gate block, GATES = 1"
    )


def test_a_cell_that_is_no_module_is_one_line(tmp_path):
    with pytest.raises(CellError, match=r"^--cell no_such_cell_module: no cell of that name \(built-in: rnn"):
        resolve_cell("no_such_cell_module")
    with pytest.raises(CellError, match=r"^--cell .*missing\.py: no such file$"):
        resolve_cell(str(tmp_path / "missing.py"))
    broken = tmp_path / "broken.py"
    broken.write_text("import no_such_dependency_here\n")
    with pytest.raises(CellError, match=r"importing it failed \(ModuleNotFoundError: No module named 'no_such"):
        resolve_cell(str(broken))


def test_a_cell_file_trains_checkpoints_and_samples_both_ways_and_loads_back_only_with_its_cell(tmp_path):
    cell_file = tmp_path / "my_mgu.py"
    cell_file.write_text(MGU_FILE.read_text())
    config = parse_args(train_argv(tmp_path, impl="both", cell=cell_file, max_steps=30))
    assert config.cell == record_name(str(cell_file)) == str(cell_file.resolve())  # absolute: a resume finds it
    summary = train(config)
    for name in ("manual", "torch"):
        assert summary["impls"][name]["losses"][-1] < summary["impls"][name]["losses"][0]
    checkpoint_path = tmp_path / "runs" / "run" / "manual" / "latest.npz"
    checkpoint = load_checkpoint(checkpoint_path, str(cell_file))
    assert checkpoint.config["cell"] == str(cell_file.resolve())
    assert checkpoint.engine.params["W"].shape == (2 * 16, 16)  # G = 2 gate blocks of H = 16 rows

    vocab = Vocab(checkpoint.vocab)
    texts = {
        impl: sample_text(sampling_engine(checkpoint, impl), vocab, 50, temperature=0.8, prime="the ", seed=5)
        for impl in ("manual", "torch")
    }
    assert texts["manual"] == texts["torch"]

    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(checkpoint_path)  # without --cell: the module it names is not imported
    assert str(raised.value) == (
        f"{checkpoint_path}: config.cell is {cell_file.resolve()}, a cell of your own, and a checkpoint's module is "
        f"imported only when --cell names it: pass --cell {cell_file.resolve()} if you trust that module"
    )
    moved = cell_file.rename(tmp_path / "moved_away.py")
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(checkpoint_path, str(cell_file))
    assert str(raised.value) == f"{checkpoint_path}: --cell {cell_file}: no such file"
    # the same source elsewhere is the same cell: the checkpoint loads, and its config names the new place
    assert load_checkpoint(checkpoint_path, str(moved)).config["cell"] == str(moved.resolve())


def trained_mgu(tmp_path: Path, cell: str = "compare.examples.mgu") -> Path:
    """A 5-step run of the example cell (by import path unless ``cell`` says otherwise): its latest.npz."""
    train(parse_args(train_argv(tmp_path, cell=cell, max_steps=5, val_frac=0)))
    return tmp_path / "runs" / "run" / "manual" / "latest.npz"


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err


def test_a_plugged_checkpoint_samples_only_with_its_cell_named(tmp_path, capsys):
    checkpoint = str(trained_mgu(tmp_path))
    capsys.readouterr()
    assert sample_main(["--checkpoint", checkpoint, "--length", "5"]) == 2
    assert "pass --cell compare.examples.mgu if you trust that module" in one_line_error(capsys)
    assert sample_main(["--checkpoint", checkpoint, "--length", "5", "--cell", "compare.examples.mgu"]) == 0
    assert sample_main(["--checkpoint", checkpoint, "--length", "5", "--cell", str(MGU_FILE)]) == 0  # same source
    assert sample_main(["--checkpoint", checkpoint, "--length", "5", "--cell", "gru"]) == 2
    assert "not the built-in --cell gru: pass --cell compare.examples.mgu" in one_line_error(capsys)
    model = load_demo_model(checkpoint, "compare.examples.mgu")  # the demo's loader takes --cell too
    assert model.info.cell == "compare.examples.mgu"
    flow = ["--checkpoint", checkpoint, "--data", str(tmp_path / "corpus.txt"), "--seq-length", "4"]
    assert gradflow_main(flow) == 2
    assert "pass --cell compare.examples.mgu if you trust that module" in one_line_error(capsys)
    assert gradflow_main([*flow, "--cell", "compare.examples.mgu"]) == 0
    assert "| compare.examples.mgu | trained |" in capsys.readouterr().out


def test_a_plugged_checkpoint_refuses_a_cell_whose_source_changed(tmp_path, capsys):
    cell_file = tmp_path / "my_mgu.py"
    cell_file.write_text(MGU_FILE.read_text())
    checkpoint = trained_mgu(tmp_path, cell=str(cell_file))
    recorded = hashlib.sha256(cell_file.read_bytes()).hexdigest()
    edited = tmp_path / "edited_mgu.py"
    edited.write_text(MGU_FILE.read_text() + "# edited\n")
    now = hashlib.sha256(edited.read_bytes()).hexdigest()
    capsys.readouterr()
    assert sample_main(["--checkpoint", str(checkpoint), "--cell", str(edited)]) == 2
    assert one_line_error(capsys) == (
        f"python -m compare.sample: error: {checkpoint}: --cell {edited} is not the cell it was trained with: "
        f"its source's SHA-256 is {now[:16]}..., that of {cell_file.resolve()} when it was trained "
        f"{recorded[:16]}...; pass the module it was trained with\n"
    )
    resume = ["--resume", str(checkpoint.parent.parent), "--max-steps", "6"]
    with pytest.raises(SystemExit) as stopped:
        parse_args([*resume, "--cell", str(edited)])
    assert stopped.value.code == 2
    assert "is not the cell it was trained with" in one_line_error(capsys)
    assert parse_args([*resume, "--cell", str(cell_file)]).cell == str(cell_file.resolve())


def test_an_old_plugged_checkpoint_without_a_digest_loads_only_with_the_name_it_records(tmp_path):
    checkpoint = trained_mgu(tmp_path)
    with np.load(checkpoint) as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    del header["cell_sha256"]  # as written before checkpoints recorded it
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    assert load_checkpoint(old, "compare.examples.mgu").config["cell"] == "compare.examples.mgu"
    with pytest.raises(CheckpointError, match="can only be checked by that name: pass --cell compare.examples.mgu"):
        load_checkpoint(old, str(MGU_FILE))


# A cell that breaks a promise of the interface, made from the example by one edit (old -> new in its
# source), and the one line every command answers it with: the function, what it returned, what it must.
PROBED = "(called with T 5, B 3, H 4, G 2, P 1, float64; see docs/cells.md#writing-a-cell)"
BROKEN_CELLS = {
    "state_without_its_leading_axis": (
        "return hidden[1:], hidden[-1][None], MGUCache",
        "return hidden[1:], hidden[-1], MGUCache",
        f"recurrence_forward returned state_T of shape (3, 4), expected (P, B, H) = (1, 3, 4) {PROBED}",
    ),
    "state_names_of_the_wrong_length": (
        "STATE_PARTS = 1  # state[0] = h",
        "STATE_PARTS = 1\nSTATE_NAMES = ('h', 's')",
        "STATE_NAMES is ('h', 's'), expected one name per part of the carried state, STATE_PARTS = 1",
    ),
    "transposed_d_W": (
        "return d_x_proj, np.concatenate([d_W_f, d_W_n], axis=0)",
        "return d_x_proj, np.concatenate([d_W_f, d_W_n], axis=0).T",
        f"recurrence_backward returned d_W of shape (4, 8), expected (G*H, H) = (8, 4) {PROBED}",
    ),
    "torch_step_state_without_its_leading_axis": (
        "return h, h.unsqueeze(0)",
        "return h, h",
        f"step returned state_t of shape (3, 4), expected (P, B, H) = (1, 3, 4) {PROBED}",
    ),
    "float32_in_a_float64_run": (
        "return hidden[1:], hidden[-1][None], MGUCache",
        "return hidden[1:].astype(np.float32), hidden[-1][None], MGUCache",
        f"recurrence_forward returned hidden of dtype float32, expected float64, its inputs' dtype {PROBED}",
    ),
    "an_exception_inside_the_cell": (
        "hidden[0] = state0[0]",
        "hidden[0] = state0[1]",
        f"recurrence_forward raised IndexError: index 1 is out of bounds for axis 0 with size 1 {PROBED}",
    ),
}


def broken_cell(directory: Path, fault: str) -> Path:
    """The example with one fault of BROKEN_CELLS planted, as ``directory``/<fault>.py."""
    old, new, _ = BROKEN_CELLS[fault]
    source = MGU_FILE.read_text()
    assert source.count(old) == 1, f"the example no longer has {old!r}"
    path = directory / f"{fault}.py"
    path.write_text(source.replace(old, new))
    return path


def run_command(directory: Path, command: str, argv: list) -> tuple[int, str]:
    """``python -m compare.<command> argv`` run in this process in ``directory``: (exit code, stderr)."""
    main = importlib.import_module(f"compare.{command}").main
    stderr = io.StringIO()
    with working_directory(directory), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
        try:
            exit_code = main([str(arg) for arg in argv])
        except SystemExit as exit_info:  # argparse's errors exit from inside the parser
            exit_code = exit_info.code
    return exit_code, stderr.getvalue()


@pytest.mark.parametrize("fault", list(BROKEN_CELLS))
@pytest.mark.parametrize("command", ["train", "gradcheck"])
def test_a_cell_that_breaks_the_interface_is_one_line_naming_it_and_exit_2(tmp_path, fault, command):
    path = broken_cell(tmp_path, fault)
    argv = train_argv(tmp_path, cell=path, max_steps=3) if command == "train" else ["--cell", path]
    assert run_command(tmp_path, command, argv) == (
        2,
        f"python -m compare.{command}: error: --cell {path}: {BROKEN_CELLS[fault][2]}\n",
    )
    assert not (tmp_path / "runs").exists()  # refused before training: no run directory, no checkpoint


def test_a_fault_the_probe_misses_is_named_at_the_runs_own_sizes(tmp_path):
    # the state loses its leading axis only above the probe's H = 4: the engine's first step names it
    path = tmp_path / "large_only.py"
    path.write_text(
        MGU_FILE.read_text().replace(
            "return hidden[1:], hidden[-1][None], MGUCache",
            "return hidden[1:], hidden[-1] if size > 4 else hidden[-1][None], MGUCache",
        )
    )
    sizes = ["--hidden-size", 16, "--seq-length", 10, "--batch-size", 2]  # tiny_runs' T, B and H
    for command, argv in (
        ("train", train_argv(tmp_path, cell=path, max_steps=3)),
        ("gradcheck", ["--cell", path, *sizes]),
    ):
        assert run_command(tmp_path, command, argv) == (
            2,
            f"python -m compare.{command}: error: --cell {path}: recurrence_forward returned state_T of shape "
            "(2, 16), expected (P, B, H) = (1, 2, 16) (called with T 10, B 2, H 16, "
            "G 2, P 1, float64; see docs/cells.md#writing-a-cell)\n",
        )


def test_gradflow_checks_step_backward_it_uses(tmp_path):
    path = tmp_path / "flat_step_backward.py"
    path.write_text(MGU_FILE.read_text().replace("+ d_f_pre @ W_f)[None]", "+ d_f_pre @ W_f)"))
    assert run_command(tmp_path, "gradflow", ["--cell", path]) == (
        2,
        f"python -m compare.gradflow: error: --cell {path}: step_backward returned d_state of shape (3, 4), "
        f"expected (P, B, H) = (1, 3, 4) {PROBED}\n",
    )
    # train without --gradflow-every never calls step_backward
    assert run_command(tmp_path, "train", train_argv(tmp_path, cell=path, max_steps=3)) == (0, "")


def test_the_example_passes_every_check_and_gradcheck(tmp_path):
    cell_file = tmp_path / "my_mgu.py"
    cell_file.write_text(MGU_FILE.read_text())
    assert run_command(tmp_path, "gradcheck", ["--cell", cell_file, "--hidden-size", 4, "--seq-length", 5]) == (0, "")
