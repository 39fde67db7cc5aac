"""Hessian-free optimization (Martens 2010) by hand (manual/hessian_free.py) against its torch.func twin
(torchref/hessian_free.py), float64: the CG solve, the per-step lockstep, the damping rule, and training."""

from __future__ import annotations

import re
import subprocess
import sys
from functools import partial

import numpy as np
import pytest
import torch
from problems import random_problem
from tiny_runs import train_argv
from twins import as_tensors

import manual
import torchref
from compare.gradients.second_order import SECOND_ORDER_BOUND
from compare.training.config import parse_args
from manual import hessian, hessian_free
from torchref import hessian_free as torch_hessian_free
from torchref import second

pytestmark = pytest.mark.exactness

U = 2.0**-53  # float64 unit roundoff


def flat(vector: dict) -> np.ndarray:
    return np.concatenate([np.asarray(value).ravel() for value in vector.values()])


def unflat(values: np.ndarray, like: dict) -> dict[str, np.ndarray]:
    out, start = {}, 0
    for name, value in like.items():
        out[name] = values[start : start + value.size].reshape(value.shape)
        start += value.size
    return out


def gauss_newton_matrix(cache: manual.Cache) -> np.ndarray:
    """G itself, column by column from manual's G v: small problems only."""
    params = cache.params
    size = sum(value.size for value in params.values())
    columns = []
    for index in range(size):
        unit = np.zeros(size)
        unit[index] = 1.0
        columns.append(flat(hessian.gauss_newton_vector_product(cache, unflat(unit, params))))
    return np.stack(columns, axis=1)


def manual_batch(problem: dict) -> tuple[float, manual.Cache, dict[str, np.ndarray]]:
    loss, cache = manual.forward(
        problem["params"], problem["inputs"], problem["targets"], problem["state0"], problem["cell"]
    )
    grads = manual.backward(cache)
    return float(loss), cache, {name: grads[name] for name in problem["params"]}  # the parameters' order


@pytest.mark.parametrize("impl", ["manual", "torch"])
@pytest.mark.parametrize("damping", [1.0, 1e-2])
def test_conjugate_gradient_solves_the_damped_system_in_n_steps(impl, damping):
    problem = random_problem(vocab_size=4, hidden_size=3, batch_size=2, seq_length=5)
    _, cache, grads = manual_batch(problem)
    system = gauss_newton_matrix(cache) + damping * np.eye(sum(g.size for g in grads.values()))
    n = len(system)
    if impl == "manual":
        d = hessian_free.conjugate_gradient(
            lambda v: hessian.gauss_newton_vector_product(cache, v), grads, damping, iterations=n
        )
    else:
        torch_grads = {name: torch.from_numpy(value) for name, value in grads.items()}
        torch_d = torch_hessian_free.conjugate_gradient(
            lambda v: {
                name: torch.from_numpy(value)
                for name, value in hessian.gauss_newton_vector_product(
                    cache, {key: entry.numpy() for key, entry in v.items()}
                ).items()
            },
            torch_grads,
            damping,
            iterations=n,
        )
        d = {name: value.numpy() for name, value in torch_d.items()}
    solution = np.linalg.solve(system, -flat(grads))
    condition = np.linalg.cond(system)
    # CG in floating point converges to a relative error of order kappa u (Greenbaum 1997, attainable accuracy);
    # n steps of n-term dot products and axpys make it at most n kappa u each way: 2 n kappa u
    bound = 2 * n * condition * U * np.linalg.norm(solution)
    assert np.linalg.norm(flat(d) - solution) <= bound, (np.linalg.norm(flat(d) - solution), bound)


@pytest.mark.parametrize("module", [hessian_free, torch_hessian_free], ids=["manual", "torch"])
def test_conjugate_gradient_stops_where_the_damped_curvature_vanishes(module):
    # lambda 0 and a direction G does not see (a character the minibatch lacks): p . (G + lambda I) p = 0
    zeros = np.zeros if module is hessian_free else torch.zeros
    grads = {"c": zeros(3) + 1.0}
    d = module.conjugate_gradient(lambda v: {"c": 0 * v["c"]}, grads, 0.0, iterations=10)
    assert float(abs(d["c"]).max()) == 0.0  # no step rather than a division by zero


def torch_twin(problem: dict) -> tuple[torchref.CharRNN, tuple[torch.Tensor, ...]]:
    model = torchref.CharRNN(problem["params"], cell=problem["cell"], dtype=torch.float64)
    batch = tuple(torch.from_numpy(problem[key]) for key in ("inputs", "targets", "state0"))
    return model, batch


def perturbed_step_spread(problem: dict, damping: float, g_error: np.ndarray, product_error: float) -> float:
    """How far manual's step moves when its inputs move as much as manual's and torch's disagree: g by
    +-g_error per entry, every G v by +-product_error relative per entry (random signs, 3 draws: the largest)."""
    params = {name: value.copy() for name, value in problem["params"].items()}
    _, cache, grads = manual_batch({**problem, "params": params})
    exact = flat(
        hessian_free.conjugate_gradient(partial(hessian.gauss_newton_vector_product, cache), grads, damping, 10)
    )
    spread = 0.0
    for seed in range(3):
        rng = np.random.default_rng(seed)
        noisy_g = unflat(flat(grads) + g_error * rng.choice([-1.0, 1.0], size=g_error.size), grads)

        def noisy_product(v: dict, rng: np.random.Generator = rng) -> dict:
            product = flat(hessian.gauss_newton_vector_product(cache, v))
            return unflat(product * (1 + product_error * rng.choice([-1.0, 1.0], size=product.size)), v)

        moved = flat(hessian_free.conjugate_gradient(noisy_product, noisy_g, damping, 10))
        spread = max(spread, float(np.linalg.norm(moved - exact)))
    return spread


@pytest.mark.parametrize(("cell", "layers"), [("rnn", 1), ("lstm", 2), ("gru", 1)])
def test_each_manual_step_agrees_with_torchs_from_the_same_state(cell, layers):
    problem = random_problem(cell=cell, num_layers=layers, seed=2)
    params = problem["params"]
    model, batch = torch_twin(problem)
    named = dict(model.named_parameters())
    manual_hf, torch_hf = hessian_free.HessianFree(params), torch_hessian_free.HessianFree(named)
    arguments = (problem["inputs"], problem["targets"], problem["state0"], cell)
    direction = unflat(np.random.default_rng(9).normal(size=len(flat(params))), params)
    for step in range(6):
        for name in params:  # manual starts from torch's state
            params[name][...] = named[name].detach().numpy()
        manual_hf.damping = torch_hf.damping
        loss, cache, grads = manual_batch(problem)
        model.zero_grad()
        torch_loss, _ = model.loss(*batch)
        torch_loss.backward()
        torch_grads = {name: param.grad.detach().clone() for name, param in named.items()}
        # what the two sides' inputs disagree by: the gradients, and G v on one direction (relative)
        g_error = np.abs(flat(grads) - flat(torch_grads))
        manual_product = flat(hessian.gauss_newton_vector_product(cache, direction))
        torch_product = flat(second.gauss_newton_vector_product(model, *batch, as_tensors(direction)))
        product_error = float(np.max(np.abs(manual_product - torch_product)) / np.max(np.abs(torch_product)))
        spread = perturbed_step_spread(problem, torch_hf.damping, g_error, max(product_error, U))

        manual_hf.step(
            grads,
            loss,
            partial(hessian.gauss_newton_vector_product, cache),
            lambda: float(manual.forward(params, *arguments)[0]),
        )
        torch_hf.step(
            torch_grads,
            float(torch_loss.detach()),
            lambda v: second.gauss_newton_vector_product(model, *batch, v),
            lambda: float(model.loss(*batch)[0].detach()),
        )
        after_manual, after_torch = flat(params), flat({n: p.detach() for n, p in named.items()})
        where = f"{cell} x{layers}, step {step}"
        # k < n CG steps are no solve: their iterate amplifies input errors by up to ~kappa^(k/2) (1e9 measured at
        # lambda 0.09), so the yardstick is measured: the spread of manual's own step under input errors as large
        # as the two sides' disagreement (three draws: a factor 4 for the worst direction they may miss), plus the
        # update's rounding on each side (2 u |theta|)
        bound = 4 * spread + 2 * U * np.linalg.norm(after_torch)
        assert np.linalg.norm(after_manual - after_torch) <= bound, where
        assert manual_hf.damping == torch_hf.damping, where  # rho agrees to rounding: the same branch of the rule


@pytest.mark.parametrize("module", [hessian_free, torch_hessian_free], ids=["manual", "torch"])
def test_levenberg_marquardt_raises_lambda_below_a_quarter_and_lowers_it_above_three_quarters(module):
    assert module.adjusted_damping(2.0, 0.1) == 3.0  # the model promised more than the loss gave
    assert module.adjusted_damping(2.0, -1.0) == 3.0  # the loss went up
    assert module.adjusted_damping(3.0, 0.9) == 2.0  # the model was good: trust it further
    for rho in (0.25, 0.5, 0.75, float("nan")):  # the bounds themselves, and q(s) = 0, leave it
        assert module.adjusted_damping(2.0, rho) == 2.0, rho
    floor = module.MIN_DAMPING
    assert module.adjusted_damping(1.2 * floor, 0.9) == floor  # 2/3 of it would be below the floor
    assert module.adjusted_damping(1.2 * floor, 0.9, min_damping=0.0) == 1.2 * floor * 2 / 3  # Martens' rule alone


def quadratic(matrix: np.ndarray, linear: np.ndarray, x: np.ndarray) -> float:
    return float(linear @ x + 0.5 * x @ matrix @ x)


def test_an_exactly_quadratic_loss_has_rho_one_and_lowers_the_damping():
    rng = np.random.default_rng(0)
    factor = rng.normal(size=(6, 6))
    matrix, linear = factor @ factor.T + np.eye(6), rng.normal(size=6)  # G positive definite
    params = {"x": rng.normal(size=6)}
    optimizer = hessian_free.HessianFree(params, damping=0.5, min_damping=0.0)
    loss = quadratic(matrix, linear, params["x"])
    grads = {"x": linear + matrix @ params["x"]}
    optimizer.step(grads, loss, lambda v: {"x": matrix @ v["x"]}, lambda: quadratic(matrix, linear, params["x"]))
    # L(theta + s) - L(theta) = g.s + 1/2 s.Gs = q(s) exactly, in exact arithmetic; rounded, a few u of |L|
    assert abs(optimizer.ratio - 1) < 1e-10
    assert optimizer.damping == 0.5 * 2 / 3

    stuck = hessian_free.HessianFree({"x": np.zeros(6)}, damping=0.5, min_damping=0.0)
    stuck.step({"x": linear.copy()}, 0.0, lambda v: {"x": matrix @ v["x"]}, lambda: 0.0)  # the loss did not move
    assert stuck.ratio == 0.0 and stuck.damping == 0.75


def val_losses(directory, run_name: str, **flags) -> tuple[list[float], str]:
    """The validation losses a tiny compare.train run prints (one per implementation), and its stdout."""
    argv = [str(arg) for arg in train_argv(directory, run_name, val_frac=0.1, batch_size=8, seq_length=25, **flags)]
    run = subprocess.run(
        [sys.executable, "-m", "compare.train", *argv], cwd=directory, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    return [float(loss) for loss in re.findall(r"val loss ([0-9.]+) nats/char", run.stdout)], run.stdout


def test_train_with_hf_in_both_implementations_agrees_and_lowers_the_loss(tmp_path):
    # Batches of 8 x 25 characters: HF fits each minibatch's quadratic model (docs/training.md#optimizers)
    val, stdout = val_losses(tmp_path, "hf", impl="both", optimizer="hf", max_steps=40, agree_every=10)
    worst = float(re.search(r"implementation error, .*?: ([0-9.e+-]+) at worst", stdout).group(1))
    assert worst <= SECOND_ORDER_BOUND, stdout  # float64 rounding: the train command's own float64 bound
    assert "verdict: manual and autograd agree" in stdout, stdout
    # the two runs after 40 steps, printed to four decimals: they differ by rounding (the lockstep test above)
    assert len(val) == 2 and val[0] == val[1], stdout
    # it learns: below the untrained model's loss (one step of 1e-12 leaves the weights as they start) by a
    # tenth of a nat, many times the printed four decimals
    untrained, _ = val_losses(tmp_path, "untrained", impl="manual", optimizer="adagrad", lr=1e-12, max_steps=1)
    assert val[0] < untrained[0] - 0.1, (val, untrained)


@pytest.mark.parametrize(
    "flags, named",
    [
        (["--grad", "rtrl"], "--grad rtrl"),
        (["--segment-length", "5"], "--segment-length"),
        (["--lr-schedule", "cosine"], "--lr-schedule"),
    ],
)
def test_hf_refuses_what_its_products_are_not_written_for(tmp_path, capsys, flags, named):
    with pytest.raises(SystemExit) as exit_info:
        parse_args([*train_argv(tmp_path, "hf"), "--optimizer", "hf", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--optimizer hf" in error and named in error, error


def test_hf_takes_lr_one_unless_told(tmp_path):
    assert parse_args([*train_argv(tmp_path, "hf"), "--optimizer", "hf"]).lr == 1.0
    assert parse_args([*train_argv(tmp_path, "hf"), "--optimizer", "hf", "--lr", "0.5"]).lr == 0.5
