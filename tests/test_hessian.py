"""Second order by hand (manual/hessian.py) against autograd (torchref/second.py) and the complex step,
float64, every cell with one and two layers, one stream and several (docs/second-order.md)."""

from __future__ import annotations

import numpy as np
import pytest
from mutants import mutant
from problems import MODEL_GRID, random_problem

import manual
from compare import gradcheck
from compare.gradients import second_order
from compare.gradients.oracles import Problem
from compare.gradients.second_order import SECOND_ORDER_BOUND, random_direction
from manual import hessian

pytestmark = pytest.mark.exactness


def problem_of(cell: str, layers: int, batch: int, seed: int = 0) -> Problem:
    drawn = random_problem(batch_size=batch, cell=cell, num_layers=layers, seed=seed)
    return Problem(drawn["params"], drawn["inputs"], drawn["targets"], drawn["state0"], cell)


def flat(arrays: dict[str, np.ndarray]) -> np.ndarray:
    return np.concatenate([value.ravel() for value in arrays.values()])


def dot(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> float:
    return float(flat(a) @ flat({name: b[name] for name in a}))


@pytest.mark.parametrize(("cell", "layers", "batch"), MODEL_GRID)
def test_three_routes_to_hessian_vector_product_agree(cell, layers, batch):
    problem = problem_of(cell, layers, batch)
    report = second_order.second_order_check(problem, seed=1)
    for name, row in report["errors"].items():
        for column, error in row.items():
            # rounding only on every route (measured <= 1e-15): SECOND_ORDER_BOUND's reason is at its definition
            assert error <= SECOND_ORDER_BOUND, f"{cell} x{layers}, B={batch}: {name} {column} {error:.2e}"
    assert report["agree"]


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_hessian_is_symmetric(cell):
    problem = problem_of(cell, 2, 3)
    v, w = random_direction(problem.params, 1), random_direction(problem.params, 2)
    _, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, cell)
    h_v, h_w = hessian.hessian_vector_product(cache, v), hessian.hessian_vector_product(cache, w)
    # each product is within SECOND_ORDER_BOUND of H's norm-wise (the test above), so each dot within that times
    # |v| |Hw| (or |w| |Hv|); the dots' own rounding, n u |v| |Hw| with n ~ 500, is far below
    bound = SECOND_ORDER_BOUND * (
        np.linalg.norm(flat(v)) * np.linalg.norm(flat(h_w)) + np.linalg.norm(flat(w)) * np.linalg.norm(flat(h_v))
    )
    assert abs(dot(v, h_w) - dot(w, h_v)) <= bound


def test_symmetry_catches_a_one_sided_slip(monkeypatch):
    # RW^T da_{t+1} dropped from R{dh_t}: the W-h cross term then enters H v through the forward R-pass only.
    # (A term dropped from a symmetric block, tanh'' say, leaves H symmetric: the routes test catches those.)
    wrong = mutant(hessian, "rnn_r_backward", " + r_from_r_W[t]", "")
    monkeypatch.setitem(hessian.R_PASSES, "rnn", (hessian.rnn_r_forward, wrong))
    with pytest.raises(AssertionError):
        test_hessian_is_symmetric("rnn")


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_gauss_newton_is_positive_semidefinite_and_hessian_is_not(cell):
    problem = problem_of(cell, 2, 3)
    _, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, cell)
    curvatures = []
    for seed in range(20):
        v = random_direction(problem.params, seed)
        g_v = hessian.gauss_newton_vector_product(cache, v)
        # v^T G v = (Jv)^T H_L (Jv) >= 0 exactly; computed, it may fall below 0 by the product's error times |v|
        assert dot(v, g_v) >= -SECOND_ORDER_BOUND * np.linalg.norm(flat(v)) * np.linalg.norm(flat(g_v))
        curvatures.append(dot(v, hessian.hessian_vector_product(cache, v)))
    assert min(curvatures) < 0  # weights of std 0.5: H is indefinite, so the check above tells G from H


# One realistic slip per cell and pass: a term of the product rule left out.
SLIPS = [
    ("rnn", "rnn_r_forward", "r_a_known[t] + r_hidden[t] @ cache.W.T", "r_a_known[t]"),  # W R{h_{t-1}} dropped
    ("rnn", "rnn_r_backward", ' + trace["d_h"][t] * r_slope[t]', ""),  # dh_t R{tanh'(a_t)} dropped
    ("lstm", "lstm_r_forward", " + f[t] * r_cells[t]", ""),  # f_t R{s_{t-1}} dropped
    ("lstm", "lstm_r_backward", " + d_s * r_f[t]", ""),  # ds_t R{f_t} dropped
    ("gru", "gru_r_forward", " + z[t] * r_hidden[t]", ""),  # z_t R{h_{t-1}} dropped
    ("gru", "gru_r_backward", " + d_h * r_z[t]\n", "\n"),  # dh_t R{z_t} dropped from R{dh_{t-1}}
]


@pytest.mark.parametrize(("cell", "function", "correct", "slip"), SLIPS)
def test_a_slip_in_an_r_pass_is_caught(monkeypatch, cell, function, correct, slip):
    forward, backward = hessian.R_PASSES[cell]
    wrong = mutant(hessian, function, correct, slip)
    passes = (wrong, backward) if function.endswith("forward") else (forward, wrong)
    monkeypatch.setitem(hessian.R_PASSES, cell, passes)
    report = second_order.second_order_check(problem_of(cell, 1, 2), seed=1)
    assert not report["agree"]
    assert report["largest"] > 1e-6  # a missing term is wrong at first order, not at rounding level


def test_gradcheck_second_order_prints_the_table_and_exits_0(capsys):
    argv = ["--second-order", "--cell", "gru", "--num-layers", "2", "--hidden-size", "4", "--seq-length", "5"]
    assert gradcheck.main([*argv, "--init-scale", "50"]) == 0
    out = capsys.readouterr().out
    for name in ("| U |", "| W2 |", "gauss-newton", "the routes agree"):
        assert name in out


def test_gradcheck_second_order_exits_1_on_a_wrong_r_pass(monkeypatch, capsys):
    wrong = mutant(hessian, "rnn_r_forward", "r_a_known[t] + r_hidden[t] @ cache.W.T", "r_a_known[t]")
    monkeypatch.setitem(hessian.R_PASSES, "rnn", (wrong, hessian.rnn_r_backward))
    assert gradcheck.main(["--second-order", "--hidden-size", "4", "--seq-length", "5", "--init-scale", "50"]) == 1
    assert "DISAGREE" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--diagnose"], "--second-order"),
        (["--sample", "3"], "--second-order"),
        (["--cell", "compare.examples.mgu"], "built-in cells"),
    ],
)
def test_gradcheck_second_order_refuses_what_it_cannot_do(capsys, extra, message):
    with pytest.raises(SystemExit) as exit_info:
        gradcheck.main(["--second-order", "--hidden-size", "4", "--seq-length", "5", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1
