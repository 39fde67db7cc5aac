"""Gradient flow through time: the hand-written curve ||dL_T/dh_{T-k}|| against autograd and the complex step.

The curve, the command that prints and draws it (compare.gradflow), and the training flag
that logs it (--gradflow-every), all in float64 on small problems.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from planted import Sizes, small_problem
from problems import random_problem
from tiny_runs import train_argv, write_corpus

import manual
from compare.data.corpus import Vocab
from compare.gradflow import main as gradflow_main
from compare.gradients.flow import Chunk, autograd_flow, lag_below, logged_lags, manual_flow, max_relative_difference
from compare.model.checkpoint import load_checkpoint
from compare.plotting.events import read_scalars
from compare.training.config import parse_args
from compare.training.loop import train

CELLS = ("rnn", "lstm", "gru")
MGU = "compare.examples.mgu"


def chunk_of(problem: dict) -> Chunk:
    return Chunk(problem["params"], problem["inputs"], problem["targets"], problem["state0"], problem["cell"])


@pytest.mark.exactness
@pytest.mark.parametrize("layers", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_the_manual_and_autograd_curves_agree(cell, layers):
    chunk = chunk_of(random_problem(seq_length=12, cell=cell, num_layers=layers, seed=4))
    by_hand, by_autograd = manual_flow(chunk), autograd_flow(chunk)
    assert by_hand.shape == (13,) and np.all(by_hand > 0)
    # The same products in another order: only float64 rounding (~1e-16 a step, 12 steps) separates the two.
    assert max_relative_difference(by_hand, by_autograd) <= 1e-10


@pytest.mark.exactness
@pytest.mark.parametrize("cell", CELLS)
def test_the_curve_at_lag_0_is_the_direct_gradient_of_the_last_loss(cell):
    problem = random_problem(seq_length=5, cell=cell, seed=1)
    _, cache = manual.forward(problem["params"], problem["inputs"], problem["targets"], problem["state0"], cell)
    h_last = torch.tensor(cache.top[-1], requires_grad=True)  # (B, H): h_T as a leaf
    logits = h_last @ torch.from_numpy(problem["params"]["V"]).T + torch.from_numpy(problem["params"]["c"])
    F.cross_entropy(logits, torch.from_numpy(problem["targets"][:, -1]), reduction="sum").backward()
    assert h_last.grad is not None
    direct = float(torch.linalg.norm(h_last.grad))
    # One matrix product each way round: rounding only.
    np.testing.assert_allclose(manual_flow(chunk_of(problem))[0], direct, rtol=1e-13, atol=0)


def last_step_loss(params: dict, inputs_tb: np.ndarray, targets_last: np.ndarray, state: np.ndarray, cell: str):
    """L_T = sum over streams of -log p_T[y_T], run from ``state`` (1, P, B, H) over the steps in inputs_tb (k, B)."""
    top, _, _ = manual.model.run_layers(params, inputs_tb, state, cell)
    logits = top[-1] @ params["V"].T + params["c"]
    _, mean_loss = manual.model.softmax_cross_entropy(logits, targets_last)
    return mean_loss * len(targets_last)


@pytest.mark.exactness
@pytest.mark.parametrize("cell", CELLS)
def test_the_curve_equals_the_complex_step_derivative_with_respect_to_each_hidden_state(cell):
    """An oracle that shares no backward code: Im L_T(h_{T-k} + i eps e_j) / eps, entry by entry."""
    problem = random_problem(vocab_size=5, hidden_size=3, batch_size=2, seq_length=5, cell=cell, seed=2)
    params = {name: value.astype(np.complex128) for name, value in problem["params"].items()}
    _, cache = manual.forward(problem["params"], problem["inputs"], problem["targets"], problem["state0"], cell)
    recurrence, steps, step = cache.layers[0].recurrence, problem["inputs"].shape[1], 1e-30
    inputs_tb, targets_last = problem["inputs"].T, problem["targets"][:, -1]
    curve = manual_flow(chunk_of(problem))
    for lag in range(1, steps + 1):
        start = steps - lag  # the state h_{T-k} is hidden[T - k]; steps T-k+1 .. T read inputs_tb[T-k:]
        parts = [recurrence.hidden[start]] + ([recurrence.cells[start]] if cell == "lstm" else [])
        state = np.stack(parts)[None].astype(np.complex128)  # (1, P, B, H); s_{T-k} held fixed
        gradient = np.empty(state.shape[2:])
        for index in np.ndindex(*gradient.shape):
            nudged = state.copy()
            nudged[(0, 0, *index)] += 1j * step
            gradient[index] = last_step_loss(params, inputs_tb[start:], targets_last, nudged, cell).imag / step
        # The complex step has no subtraction: rounding only, in both.
        np.testing.assert_allclose(curve[lag], np.linalg.norm(gradient), rtol=1e-12, atol=0, err_msg=f"lag {lag}")


def test_the_lag_is_the_first_one_below_a_thousandth_of_lag_0():
    halving = 0.5 ** np.arange(15)  # 0.5^9 = 1.95e-3, 0.5^10 = 9.8e-4
    assert lag_below(halving) == 10
    assert 1e-3 * 1000.0 == 1.0 and lag_below(np.array([1000.0, 1.0, 0.5])) == 2  # exactly 1e-3 g_0 is not below
    assert lag_below(np.array([1.0, 1e-4, 1.0, 1e-5])) == 1  # the first crossing, even if the curve comes back
    assert lag_below(np.array([1.0, 0.5, 0.2])) is None
    assert logged_lags(25) == [0, 1, 2, 5, 10, 20]


def test_the_command_prints_the_table_and_writes_the_png_and_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    out, json_path = tmp_path / "flow.png", tmp_path / "flow.json"
    argv = ["--data", str(write_corpus(tmp_path)), "--hidden-size", "4", "--seq-length", "8", "--train-steps", "3"]
    assert gradflow_main([*argv, "--out", str(out), "--json", str(json_path)]) == 0
    table = capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads(json_path.read_text())["curves"]
    assert [(curve["cell"], curve["state"]) for curve in curves] == [
        (cell, state) for cell in CELLS for state in ("init", "trained")
    ]
    for curve in curves:
        assert len(curve["manual"]) == 9 and curve["max_relative_difference"] <= 1e-10
        assert lag_below(np.array(curve["manual"])) == curve["lag_below_threshold"]
        shown = "> 8" if curve["lag_below_threshold"] is None else str(curve["lag_below_threshold"])
        assert f"| {curve['cell']} | {curve['state']} | " in table and f" | {shown} | " in table
    trained = {curve["cell"]: curve["manual"] for curve in curves if curve["state"] == "trained"}
    initial = {curve["cell"]: curve["manual"] for curve in curves if curve["state"] == "init"}
    assert all(trained[cell] != initial[cell] for cell in CELLS)  # the training steps changed the weights


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--cell", "rnn,tcn"], "--cell tcn: no cell of that name (built-in: rnn, lstm, gru)"),
        (["--seq-length", "0"], "--seq-length must be positive"),
        (["--train-steps", "-1"], "--train-steps must be >= 0"),
        (["--checkpoint", "x.npz", "--seed", "3"], "--checkpoint fixes the size, seed and training: leave out --seed"),
        (["--checkpoint", "x.npz", "--cell", "rnn,gru"], "--checkpoint was trained with one cell: --cell names it"),
        (["--json", "/no/such/dir/flow.json"], "no such directory"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(argv, message, capsys):
    with pytest.raises(SystemExit) as stopped:
        gradflow_main(argv)
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and message in error


@pytest.mark.exactness
def test_the_train_flag_logs_the_curve_of_each_implementation(tmp_path):
    config = parse_args(train_argv(tmp_path, impl="both", max_steps=4, gradflow_every=2))
    train(config)
    tags = ["gradflow/lag_below_1e-3", *(f"gradflow/norm_lag_{k}" for k in logged_lags(10))]
    logged = {impl: read_scalars(tmp_path / "runs" / "run" / impl, tags) for impl in ("manual", "torch")}
    for impl in ("manual", "torch"):
        assert set(logged[impl]) == set(tags), impl
        assert all(series.steps == [2, 4] for series in logged[impl].values()), impl
        assert logged[impl]["gradflow/norm_lag_0"].values == [1.0, 1.0]
        assert all(0 < value < np.inf for value in logged[impl]["gradflow/norm_lag_10"].values)
        assert all(value in range(1, 12) for value in logged[impl]["gradflow/lag_below_1e-3"].values)  # 11: T + 1
    # float64 lockstep keeps both implementations' weights equal to rounding; event files store float32 (6e-8)
    np.testing.assert_allclose(
        logged["manual"]["gradflow/norm_lag_5"].values, logged["torch"]["gradflow/norm_lag_5"].values, rtol=1e-6
    )


def test_without_the_flag_no_gradflow_scalars_are_logged(tmp_path):
    train(parse_args(train_argv(tmp_path, max_steps=2)))
    assert read_scalars(tmp_path / "runs" / "run" / "manual", ["gradflow/lag_below_1e-3"]) == {}


def test_a_resume_may_change_the_flag_and_the_command_measures_the_checkpoint(tmp_path, capsys):
    train(parse_args(train_argv(tmp_path, max_steps=2, cell="gru")))
    train(parse_args(["--resume", str(tmp_path / "runs" / "run"), "--max-steps", "3", "--gradflow-every", "3"]))
    logged = read_scalars(tmp_path / "runs" / "run" / "manual", ["gradflow/lag_below_1e-3"])
    assert logged["gradflow/lag_below_1e-3"].steps == [3]

    checkpoint = load_checkpoint(tmp_path / "runs" / "run" / "manual" / "latest.npz")
    json_path = tmp_path / "flow.json"
    argv = ["--checkpoint", str(tmp_path / "runs" / "run"), "--data", str(tmp_path / "corpus.txt")]
    assert gradflow_main([*argv, "--seq-length", "6", "--json", str(json_path)]) == 0
    curves = json.loads(json_path.read_text())["curves"]
    assert [(curve["cell"], curve["state"]) for curve in curves] == [("gru", "init"), ("gru", "trained")]
    tokens = Vocab(checkpoint.vocab).encode((tmp_path / "corpus.txt").read_text())
    state0 = manual.zero_state("gru", 1, 1, 16)
    chunk = Chunk(checkpoint.engine.params, tokens[None, :6].astype(np.int64), tokens[None, 1:7], state0, "gru")
    assert curves[1]["manual"] == manual_flow(chunk).tolist()  # the checkpoint's weights, measured as they are
    assert curves[0]["manual"] != curves[1]["manual"]


@pytest.mark.exactness
@pytest.mark.parametrize("layers", [1, 2])
def test_a_plugged_cells_step_backward_agrees_with_autograd(layers):
    problem = small_problem(MGU, Sizes(steps=12, layers=layers))  # a nonzero carried-in state, float64
    chunk = Chunk(problem.params, problem.inputs, problem.targets, problem.state0, MGU)
    by_hand, by_autograd = manual_flow(chunk), autograd_flow(chunk)
    assert by_hand.shape == (13,) and np.all(by_hand > 0)
    # The same products in another order: only float64 rounding (~1e-16 a step, 12 steps) separates the two.
    assert max_relative_difference(by_hand, by_autograd) <= 1e-10


def test_the_command_measures_a_plugged_cell(tmp_path, capsys):
    json_path = tmp_path / "flow.json"
    argv = ["--data", str(write_corpus(tmp_path)), "--hidden-size", "4", "--seq-length", "8", "--train-steps", "2"]
    assert gradflow_main([*argv, "--cell", MGU, "--json", str(json_path)]) == 0
    curves = json.loads(json_path.read_text())["curves"]
    assert [(curve["cell"], curve["state"]) for curve in curves] == [(MGU, "init"), (MGU, "trained")]
    assert all(curve["max_relative_difference"] <= 1e-10 for curve in curves)  # float64 rounding, 8 steps
    assert f"| {MGU} | trained | " in capsys.readouterr().out


def without_step_backward(tmp_path) -> str:
    """The example cell with its step_backward renamed away: a complete cell that gradient flow cannot measure."""
    source = (Path(__file__).resolve().parents[1] / "compare" / "examples" / "mgu.py").read_text()
    path = tmp_path / "mgu_no_step.py"
    path.write_text(source.replace("def step_backward(", "def one_step_back("))
    return str(path)


def test_a_plugged_cell_without_step_backward_is_one_line_and_exit_2(tmp_path, capsys):
    cell = without_step_backward(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        gradflow_main(["--cell", f"rnn,{cell}"])
    assert stopped.value.code == 2
    assert capsys.readouterr().err == (
        f"python -m compare.gradflow: error: --cell {cell}: the module has no step_backward, the one step of the "
        "hand-written backward that gradient flow needs (see docs/cells.md#one-step-backward-step_backward)\n"
    )


def test_train_logs_gradient_flow_for_a_plugged_cell_with_step_backward_and_refuses_one_without(tmp_path, capsys):
    config = parse_args(train_argv(tmp_path, impl="manual", max_steps=2, gradflow_every=2, cell=MGU))
    train(config)
    logged = read_scalars(tmp_path / "runs" / "run" / "manual", ["gradflow/norm_lag_0"])
    assert logged["gradflow/norm_lag_0"].values == [1.0]  # g_0 / g_0, logged at step 2
    cell = without_step_backward(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        parse_args(train_argv(tmp_path, run_name="other", gradflow_every=2, cell=cell))
    assert stopped.value.code == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and f"--gradflow-every: --cell {cell}: the module has no step_backward" in error
    assert "(see docs/cells.md#one-step-backward-step_backward)" in error
