"""Four routes, one gradient: BPTT by hand, RTRL by hand (manual.rtrl), reverse-mode autograd and
forward-mode autograd (torchref.forward), per cell, float64, from a nonzero carried state; and over a
stream of chunks, RTRL (influence carried across the boundaries) against BPTT over the whole stream."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import manual
from compare.training.agreement import relative_difference
from manual import rtrl
from tests.problems import random_problem
from tests.tiny_runs import train_argv
from tests.twins import torch_loss_and_grads, torch_model
from torchref import forward

pytestmark = pytest.mark.exactness

CELLS = ("rnn", "lstm", "gru")
# float64 (u = 1.1e-16): each gradient entry is a few hundred roundings (T = 6 steps of H-long products, the
# softmax, the T*B-term sums) taken in a different order by each route; n*u ~ 3e-14, so 1e-12 is rounding only
ROUNDING = 1e-12


def rtrl_chunk(problem: dict, reduction: str = "mean"):
    """(loss, grads, state_T, influence_T) by RTRL from the problem's state, influence zero."""
    params = problem["params"]
    influence0 = rtrl.zero_influence(params, problem["cell"], problem["inputs"].shape[0])
    return rtrl.chunk(
        params, problem["inputs"], problem["targets"], problem["state0"], influence0, problem["cell"], reduction
    )


def forward_mode(problem: dict, influence0=None, reduction: str = "mean"):
    """(loss function of theta, the point theta_0) of the problem's chunk, for torchref.forward."""
    model = torch_model(problem)
    function = forward.loss_function(
        model,
        torch.from_numpy(problem["inputs"]),
        torch.from_numpy(problem["targets"]),
        torch.from_numpy(problem["state0"]),
        influence0,
        reduction,
    )
    return function, forward.params_of(model)


@pytest.mark.parametrize("cell", CELLS)
def test_four_routes_agree_per_parameter(cell):
    problem = random_problem(cell=cell, batch_size=2, seq_length=6, seed=3)
    loss, cache = manual.forward(problem["params"], problem["inputs"], problem["targets"], problem["state0"], cell)
    bptt = manual.backward(cache)
    rtrl_loss, by_rtrl, state_T, _ = rtrl_chunk(problem)
    _, reverse = torch_loss_and_grads(problem)
    function, at = forward_mode(problem)
    by_jacfwd, _ = forward.forward_gradient(function, at)
    assert relative_difference(np.asarray(rtrl_loss), np.asarray(loss)) <= ROUNDING
    np.testing.assert_array_equal(state_T, cache.state_last)  # the same forward, the same operations
    for name, reference in bptt.items():
        for route, grads in (("rtrl", by_rtrl), ("reverse", reverse), ("forward", by_jacfwd)):
            other = np.asarray(grads[name])
            assert relative_difference(other, reference) <= ROUNDING, (route, name)


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_directional_derivatives_equal_jvp(cell):
    problem = random_problem(cell=cell, batch_size=2, seq_length=6, seed=4)
    _, by_rtrl, _, _ = rtrl_chunk(problem)
    function, at = forward_mode(problem)
    rng = np.random.default_rng(5)
    for _ in range(3):
        direction = {name: rng.normal(size=value.shape) for name, value in problem["params"].items()}
        mine = sum(float(np.sum(by_rtrl[name] * v)) for name, v in direction.items())
        _, theirs = forward.directional_derivative(function, at, {k: torch.from_numpy(v) for k, v in direction.items()})
        assert relative_difference(np.asarray(mine), theirs.numpy()) <= ROUNDING


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_influence_equals_jacfwd_of_the_state(cell):
    problem = random_problem(cell=cell, batch_size=2, seq_length=5, seed=6)
    _, _, _, influence = rtrl_chunk(problem)
    function, at = forward_mode(problem)
    _, d_state = forward.forward_gradient(function, at)
    for name in rtrl.RECURRENT:
        theirs = d_state[name][0].numpy()  # (P, B, H, *shape) -> RTRL's (B, P*H, *shape)
        parts, streams, size = theirs.shape[:3]
        theirs = np.moveaxis(theirs, 1, 0).reshape(streams, parts * size, *theirs.shape[3:])
        assert relative_difference(influence[name], theirs) <= ROUNDING, name


def stream_problem(cell: str, chunks: int = 3, length: int = 4, seed: int = 7) -> tuple[dict, list]:
    """One problem over the whole stream and its split into chunks of ``length`` characters."""
    whole = random_problem(cell=cell, batch_size=2, seq_length=chunks * length, seed=seed)
    pieces = [
        (whole["inputs"][:, k * length : (k + 1) * length], whole["targets"][:, k * length : (k + 1) * length])
        for k in range(chunks)
    ]
    return whole, pieces


@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_over_a_stream_is_bptt_over_the_whole_stream(cell):
    whole, pieces = stream_problem(cell)
    params = whole["params"]
    loss, cache = manual.forward(params, whole["inputs"], whole["targets"], whole["state0"], cell, "sum")
    untruncated = manual.backward(cache)
    stream_loss, by_rtrl, _, _ = rtrl.stream(params, pieces, whole["state0"], cell, "sum")
    assert relative_difference(np.asarray(stream_loss), np.asarray(loss)) <= ROUNDING
    for name, reference in untruncated.items():
        assert relative_difference(by_rtrl[name], reference) <= ROUNDING, name
    # the carry is what makes it exact: BPTT chunk by chunk (gradient cut at each boundary) is far off
    truncated = truncated_gradient(params, pieces, whole["state0"], cell)
    assert relative_difference(truncated["W"], untruncated["W"]) > 1e-3


def truncated_gradient(params, pieces, state0, cell):
    """BPTT chunk by chunk, the state carried but each chunk's starting state a constant."""
    total = {name: np.zeros_like(value) for name, value in params.items()}
    state = state0
    for inputs, targets in pieces:
        _, cache = manual.forward(params, inputs, targets, state, cell, "sum")
        for name, grad in manual.backward(cache).items():
            total[name] += grad
        state = cache.state_last
    return total


@pytest.mark.parametrize("cell", CELLS)
def test_forward_mode_over_a_stream_carries_the_influence(cell):
    whole, pieces = stream_problem(cell, seed=8)
    _, cache = manual.forward(whole["params"], whole["inputs"], whole["targets"], whole["state0"], cell, "sum")
    untruncated = manual.backward(cache)
    state, influence = whole["state0"], None
    total: dict = {}
    for inputs, targets in pieces:
        chunk = {**whole, "inputs": inputs, "targets": targets, "state0": state}
        function, at = forward_mode(chunk, influence, "sum")
        grads, influence = forward.forward_gradient(function, at)
        influence = {name: influence[name] for name in rtrl.RECURRENT}  # V and c never reach the state
        total = {name: total.get(name, 0) + grads[name].numpy() for name in grads}
        state = function(at)[1].detach().numpy()
    for name, reference in untruncated.items():
        assert relative_difference(total[name], reference) <= ROUNDING, name


def run_gradcheck(argv: list[str], capsys) -> tuple[int, str, str]:
    """compare.gradcheck's main in this process: (exit code, stdout, stderr)."""
    from compare.gradcheck import main

    try:
        code = main(argv)
    except SystemExit as exit_info:  # argparse's errors exit from inside the parser
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("cell", CELLS)
def test_gradcheck_routes_prints_every_pair_and_agrees(cell, tmp_path, capsys):
    report = tmp_path / "routes.json"
    argv = ["--routes", "--cell", cell, "--hidden-size", "3", "--seq-length", "6", "--json", str(report)]
    code, out, _ = run_gradcheck(argv, capsys)
    assert code == 0, out
    pairs = "| weights | bptt vs rtrl | bptt vs reverse | bptt vs forward | rtrl vs reverse | rtrl vs forward |"
    assert pairs in out
    for name in ("b", "c", "U", "W", "V", "loss"):
        assert f"| {name} | " in out
    record = json.loads(report.read_text())
    assert record["verdict"]["agree"] and record["verdict"]["bound"] == ROUNDING
    assert max(max(pair["grads"].values()) for pair in record["routes"].values()) <= ROUNDING


def test_gradcheck_routes_exits_1_when_rtrl_is_wrong(monkeypatch, capsys):
    def without_the_recurrent_term(cache):  # the rnn's R_t zeroed: the W h_{t-1} path of the influence lost
        A, R, S = rtrl.rnn_jacobians(cache)
        return A, np.zeros_like(R), S

    monkeypatch.setitem(rtrl.JACOBIANS, rtrl.rnn, without_the_recurrent_term)
    code, out, _ = run_gradcheck(["--routes", "--hidden-size", "3", "--seq-length", "6"], capsys)
    assert code == 1
    assert "DISAGREE" in out and "rtrl" in out.splitlines()[-1]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--num-layers", "2"], "--routes compares one layer"),
        (["--sample", "3"], "--routes compares whole gradients route against route: leave out --sample"),
        (["--hidden-size", "400"], "--routes is impractical at these sizes: RTRL's influence is"),
    ],
)
def test_gradcheck_routes_refuses_in_one_line(argv, message, capsys):
    code, _, err = run_gradcheck(["--routes", *argv], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert message in err


def run_train(argv: list, capsys) -> tuple[int, str, str]:
    """compare.train's main in this process: (exit code, stdout, stderr)."""
    from compare.train import main

    try:
        code = main([str(arg) for arg in argv])
    except SystemExit as exit_info:  # argparse's errors exit from inside the parser
        code = int(exit_info.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_impl_both_grad_rtrl_agrees_at_rounding_level(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = train_argv(tmp_path, impl="both", grad="rtrl", cell="lstm", hidden_size=4, max_steps=6, agree_every=2)
    code, out, err = run_train(argv, capsys)
    assert code == 0, err
    verdict = [line for line in out.splitlines() if line.startswith("verdict:")]
    assert verdict and "agree" in verdict[0] and "DISAGREE" not in verdict[0], out


def rtrl_engine(cell: str = "rnn"):
    """A float64 ManualEngine with --grad rtrl, two steps in (its influence nonzero), and the next batch."""
    from compare.model.engines import ManualEngine

    problem = random_problem(cell=cell, batch_size=2, seq_length=5, seed=9)
    engine = ManualEngine(problem["params"], lr=0.1, clip=5.0, dtype="float64", cell=cell, gradient="rtrl")
    engine.reset_hidden(2)
    rng = np.random.default_rng(10)
    for _ in range(2):
        engine.train_step(rng.integers(0, 7, size=(2, 5)), rng.integers(0, 7, size=(2, 5)))
    return engine, (rng.integers(0, 7, size=(2, 5)), rng.integers(0, 7, size=(2, 5)))


@pytest.mark.parametrize("cell", CELLS)
def test_the_agreement_probe_compares_rtrl_with_forward_mode_autograd(cell):
    from compare.training.agreement import AgreementProbe

    engine, batch = rtrl_engine(cell)
    assert engine.influence is not None and np.abs(engine.influence["W"]).max() > 0.01  # carried, not zero
    agreement = AgreementProbe(engine).measure(*batch)
    assert agreement.verdict("float64").agree, agreement  # float64's bound, AGREEMENT_BOUND


def test_the_agreement_probe_catches_a_wrong_rtrl(monkeypatch):
    from compare.training.agreement import AgreementProbe

    def without_the_recurrent_term(cache):  # the W h_{t-1} path of the influence lost
        A, R, S = rtrl.rnn_jacobians(cache)
        return A, np.zeros_like(R), S

    engine, batch = rtrl_engine("rnn")
    monkeypatch.setitem(rtrl.JACOBIANS, rtrl.rnn, without_the_recurrent_term)
    assert not AgreementProbe(engine).measure(*batch).verdict("float64").agree


@pytest.mark.parametrize(
    "flags, message",
    [
        ({"num_layers": 2}, "--grad rtrl trains one layer"),
        ({"hidden_size": 400}, "--grad rtrl (--hidden-size 400, --batch-size 2) is impractical at these sizes"),
    ],
)
def test_train_grad_rtrl_refuses_in_one_line(flags, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_train(train_argv(tmp_path, grad="rtrl", **flags), capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert message in err


def test_bench_rtrl_prints_every_route_and_the_fitted_exponents(capsys):
    from compare.bench import main

    assert main(["--rtrl", "--sizes", "2,3", "--seq-length", "3", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "| H | bptt µs/step | bptt peak MB | rtrl µs/step | rtrl peak MB | reverse µs/step" in out
    assert out.count("\n| 2 | ") == 1 and out.count("\n| 3 | ") == 1
    for route, theory in (("bptt", "H^2"), ("rtrl", "H^4"), ("reverse", "H^2"), ("forward", "H^4")):
        assert re.search(rf"^\| {route} \| -?\d+\.\d\d \| -?\d+\.\d\d \| {re.escape(theory)}", out, flags=re.M), route
    assert "load average" in out


def test_bench_rtrl_draws_time_and_memory_against_h(tmp_path, capsys):
    from compare.bench import main

    out = tmp_path / "rtrl-cost.png"
    assert main(["--rtrl", "--sizes", "2,3", "--seq-length", "3", "--repeats", "1", "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 0


@pytest.mark.parametrize("command", [["compare.bench", "--rtrl"], ["compare.gradflow", "--truncation"]])
def test_out_into_a_missing_directory_is_refused_before_the_work(command, tmp_path):
    missing = tmp_path / "no" / "figure.png"
    finished = subprocess.run(
        [sys.executable, "-m", *command, "--out", str(missing)], cwd=tmp_path, capture_output=True, text=True
    )
    assert finished.returncode == 2 and finished.stderr.count("\n") == 1, finished.stderr
    assert f"--out {missing}: no such directory to write it in" in finished.stderr


@pytest.mark.parametrize("sizes", ["0,8", "8,x", "1024"])
def test_bench_rtrl_refuses_bad_sizes_in_one_line(sizes, capsys):
    code, err = 0, ""
    try:
        from compare.bench import main

        code = main(["--rtrl", "--sizes", sizes])
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--sizes must be" in err, err


@pytest.mark.parametrize("cell", CELLS)
def test_truncation_bias_is_zero_for_one_chunk_and_shrinks_with_k(cell):
    from compare.gradients.truncation import exact_gradient, truncated_gradient, truncation_bias

    problem = random_problem(cell=cell, hidden_size=3, seed=11)
    tokens = np.random.default_rng(12).integers(0, 7, size=41)  # a stream of 40 steps
    one_chunk = truncated_gradient(problem["params"], cell, tokens, 40)
    assert relative_difference(one_chunk, exact_gradient(problem["params"], cell, tokens)) <= ROUNDING
    rows = truncation_bias(problem["params"], cell, tokens, (1, 5, 20))
    assert [row.length for row in rows] == [1, 5, 20]
    assert rows[0].relative_error > rows[-1].relative_error > 0  # cut less often, less bias
    assert all(0 < row.cosine <= 1 + ROUNDING and 0 < row.flow < np.inf for row in rows)


def test_gradflow_truncation_prints_the_table(capsys):
    from compare.gradflow import main

    assert main(["--truncation", "--cells", "gru", "--hidden-size", "3", "--stream-length", "30"]) == 0
    out = capsys.readouterr().out
    assert "| K | gru init rel. error | gru init cosine | gru init flow g_K/g_0 |" in out
    assert re.search(r"^\| 1 \| \d\.\d\de-\d\d \| \d\.\d{6} \| ", out, flags=re.M), out
    assert "\n| 25 | " in out and "\n| 50 | " not in out  # K below the stream's 30 steps only


def test_gradflow_truncation_draws_the_errors_beside_the_flow(tmp_path, capsys):
    from compare.gradflow import main

    out = tmp_path / "truncation.png"
    argv = ["--truncation", "--cells", "rnn,gru", "--hidden-size", "3", "--stream-length", "30", "--train-steps", "2"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "| K | rnn init rel. error |" in capsys.readouterr().out
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 0


def test_gradflow_truncation_refuses_a_cell_without_rtrl(capsys):
    from compare.gradflow import main

    try:
        code = main(["--truncation", "--cells", "mgu"])
    except SystemExit as exit_info:
        code = int(exit_info.code or 0)
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "--cells must name built-in cells" in err, err
