"""--cell with a cell of your own: the example MGU's gradients proven like the built-in cells' (centred
differences, complex step, autograd), the loader's one-line errors, and train -> checkpoint -> sample."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import train_argv

import manual
from compare.data.corpus import Vocab
from compare.examples import mgu
from compare.gradients.methods import (
    Problem,
    autograd_gradient,
    central_differences,
    complex_step,
    manual_gradient,
    manual_loss_function,
)
from compare.model.cells import CellError, cell_label, record_name, resolve_cell
from compare.model.checkpoint import CheckpointError, load_checkpoint
from compare.model.generate import sampling_engine
from compare.model.init import param_shapes
from compare.model.sampling import sample_text
from compare.training.flags import parse_args
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


def test_a_cell_file_trains_checkpoints_and_samples_both_ways_and_must_load_back(tmp_path):
    cell_file = tmp_path / "my_mgu.py"
    cell_file.write_text(MGU_FILE.read_text())
    config = parse_args(train_argv(tmp_path, impl="both", cell=cell_file, max_steps=30))
    assert config.cell == record_name(str(cell_file)) == str(cell_file.resolve())  # absolute: a resume finds it
    summary = train(config)
    for name in ("manual", "torch"):
        assert summary["impls"][name]["losses"][-1] < summary["impls"][name]["losses"][0]
    checkpoint_path = tmp_path / "runs" / "run" / "manual" / "latest.npz"
    checkpoint = load_checkpoint(checkpoint_path)
    assert checkpoint.config["cell"] == str(cell_file.resolve())
    assert checkpoint.engine.params["W"].shape == (2 * 16, 16)  # G = 2 gate blocks of H = 16 rows

    vocab = Vocab(checkpoint.vocab)
    texts = {
        impl: sample_text(sampling_engine(checkpoint, impl), vocab, 50, temperature=0.8, prime="the ", seed=5)
        for impl in ("manual", "torch")
    }
    assert texts["manual"] == texts["torch"]

    cell_file.rename(tmp_path / "moved_away.py")
    with pytest.raises(CheckpointError) as raised:
        load_checkpoint(checkpoint_path)
    assert str(raised.value) == (
        f"{checkpoint_path}: config.cell, the cell it was trained with, does not load: --cell {cell_file.resolve()}: "
        "no such file; put its module back, or on PYTHONPATH"
    )
