"""--preset original: min-char-rnn.py's training (summed loss, clip 5, AdaGrad eps 1e-8 inside the root).

The oracle is a literal transcription of min-char-rnn.py's lossFun and update loop; the engines are
driven through the real training loop (compare.training.loop) or built by it (build_run).
"""

from __future__ import annotations

import functools
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from problems import CELLS_AND_LAYERS, random_problem
from tiny_runs import PHRASE
from twins import as_tensors

import manual
import torchref
from compare.cli.errors import UsageError
from compare.model.checkpoint import load_checkpoint
from compare.model.engines import make_engine
from compare.model.init import init_params
from compare.training.config import build_parser, parse_args
from compare.training.loop import build_run, train
from compare.training.parallel import DataParallel, StopRequest, join_ranks

# 540 characters: 21 chunks of 25 per epoch in both min-char-rnn (p + 26 < 540) and StreamBatches
# ((540 - 1) // 25), so 50 steps cross two epoch boundaries at the same steps in both.
TEXT = PHRASE.replace(" ", "  ") * 10
STEPS = 50
# How closely a float64 run can follow min-char-rnn is set by min-char-rnn's own dynamics, not by the code.
# Its products W h_{t-1}, W^T da_t and V^T dy_t are dot products of up to H terms, added in an order each BLAS
# kernel chooses (its SIMD width, its blocking): the first step's weights differ by ~1e-16 between kernels
# (measured). AdaGrad's first update moves every weight whose gradient is well above 1e-4 by about lr = 0.1, so at
# hidden size 100 W's spectral radius is 1 after one step and 5 after three, and each step amplifies the
# difference 20 to 100 times: min-char-rnn's own weights move by ~1e-12 after 3 steps, its losses by more than
# 1e-6 within 20 (test_min_char_rnns_own_sensitivity). At hidden size 8 W stays below 1 and the difference stays
# at a few ulps over 50 steps. So every comparison with min-char-rnn is bounded by its own spread, measured here
# (rounding_spread), and a rule changed in one place fails that bound by orders of magnitude
# (test_the_bound_rejects_the_rule_without_its_clip). The full size is compared for its first 3 updates, the
# rule over 50 steps at hidden size 8.
CONDITIONED = [(100, 3), (8, STEPS)]  # (hidden size, steps)
# How far past one measured spread another rounding of the same run may land. Measured: at most 2x, under every
# OpenBLAS kernel and torch CPU capability (docs/tolerances.md); the run without its clip lands 10^7x past the bound.
SPREAD_FACTOR = 10


def preset_argv(tmp_path, run_name="original", *flags):
    data = tmp_path / "corpus.txt"
    data.write_text(TEXT)
    return [
        "--preset",
        "original",
        "--data",
        str(data),
        "--logdir",
        str(tmp_path / "runs"),
        "--run-name",
        run_name,
        "--seed",
        "5",
        *flags,
    ]


def min_char_rnn(data, params, steps, hidden_size=100, seq_length=25, learning_rate=1e-1, shifted=False):
    """min-char-rnn.py's lossFun and main loop, line for line (its globals passed in; clips counted).

    shifted: subtract max(y) before exp, as manual does: the same function, rounded differently.
    params: {'U', 'W', 'V', 'b', 'c'}, the same weights as Wxh, Whh, Why, bh, by (biases as columns).
    Returns the loss of every step, the last smooth_loss, the parameters, their memories, the clip count.
    """
    chars = sorted(set(data))  # the original's list(set(data)), in a fixed order
    vocab_size = len(chars)
    char_to_ix = {ch: i for i, ch in enumerate(chars)}
    Wxh, Whh, Why = (params[name].copy() for name in ("U", "W", "V"))
    bh, by = params["b"].reshape(-1, 1).copy(), params["c"].reshape(-1, 1).copy()
    clipped = 0

    def lossFun(inputs, targets, hprev):
        nonlocal clipped
        xs, hs, ys, ps = {}, {}, {}, {}
        hs[-1] = np.copy(hprev)
        loss = 0
        for t in range(len(inputs)):
            xs[t] = np.zeros((vocab_size, 1))
            xs[t][inputs[t]] = 1
            hs[t] = np.tanh(np.dot(Wxh, xs[t]) + np.dot(Whh, hs[t - 1]) + bh)
            ys[t] = np.dot(Why, hs[t]) + by
            ys_t = ys[t] - np.max(ys[t]) if shifted else ys[t]  # the test's variant; the original: ys[t]
            ps[t] = np.exp(ys_t) / np.sum(np.exp(ys_t))
            loss += -np.log(ps[t][targets[t], 0])
        dWxh, dWhh, dWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
        dbh, dby = np.zeros_like(bh), np.zeros_like(by)
        dhnext = np.zeros_like(hs[0])
        for t in reversed(range(len(inputs))):
            dy = np.copy(ps[t])
            dy[targets[t]] -= 1
            dWhy += np.dot(dy, hs[t].T)
            dby += dy
            dh = np.dot(Why.T, dy) + dhnext
            dhraw = (1 - hs[t] * hs[t]) * dh
            dbh += dhraw
            dWxh += np.dot(dhraw, xs[t].T)
            dWhh += np.dot(dhraw, hs[t - 1].T)
            dhnext = np.dot(Whh.T, dhraw)
        for dparam in [dWxh, dWhh, dWhy, dbh, dby]:
            clipped += int(np.sum(np.abs(dparam) > 5))  # the count is the test's; the clip is the original's
            np.clip(dparam, -5, 5, out=dparam)
        return loss, dWxh, dWhh, dWhy, dbh, dby, hs[len(inputs) - 1]

    n, p = 0, 0
    mWxh, mWhh, mWhy = np.zeros_like(Wxh), np.zeros_like(Whh), np.zeros_like(Why)
    mbh, mby = np.zeros_like(bh), np.zeros_like(by)
    smooth_loss = -np.log(1.0 / vocab_size) * seq_length
    losses = []
    while n < steps:
        if p + seq_length + 1 >= len(data) or n == 0:
            hprev = np.zeros((hidden_size, 1))
            p = 0
        inputs = [char_to_ix[ch] for ch in data[p : p + seq_length]]
        targets = [char_to_ix[ch] for ch in data[p + 1 : p + seq_length + 1]]
        loss, dWxh, dWhh, dWhy, dbh, dby, hprev = lossFun(inputs, targets, hprev)
        smooth_loss = smooth_loss * 0.999 + loss * 0.001
        losses.append(loss)
        for param, dparam, mem in zip(
            [Wxh, Whh, Why, bh, by], [dWxh, dWhh, dWhy, dbh, dby], [mWxh, mWhh, mWhy, mbh, mby], strict=True
        ):
            mem += dparam * dparam
            param += -learning_rate * dparam / np.sqrt(mem + 1e-8)
        p += seq_length
        n += 1
    names = ("U", "W", "V", "b", "c")
    final = dict(zip(names, (Wxh, Whh, Why, bh[:, 0], by[:, 0]), strict=True))
    memories = dict(zip(names, (mWxh, mWhh, mWhy, mbh[:, 0], mby[:, 0]), strict=True))
    return {"losses": losses, "smooth_loss": smooth_loss, "params": final, "memories": memories, "clipped": clipped}


def reversed_hidden(arrays):
    """U, W, V, b, c (or their memories) with the hidden units numbered backwards: the same network, in which
    every sum over the hidden units adds its terms in another order. Its own inverse."""
    return {
        "U": arrays["U"][::-1],
        "W": arrays["W"][::-1, ::-1],
        "V": arrays["V"][:, ::-1],
        "b": arrays["b"][::-1],
        "c": arrays["c"],
    }


def trajectory(result, numbering=dict):
    """What the comparison compares, by name: min-char-rnn's per-chunk losses, its smooth loss, each parameter
    and each AdaGrad memory. numbering maps parameter-shaped arrays back to the usual hidden-unit order."""
    return {
        "losses": np.asarray(result["losses"]),
        "smooth loss": np.asarray(result["smooth_loss"]),
        **numbering(result["params"]),
        **{f"memory of {name}": value for name, value in numbering(result["memories"]).items()},
    }


@functools.cache
def rounding_spread(hidden_size, steps):
    """How far min-char-rnn's own run moves when only its rounding changes: name by name, the largest difference
    between it and the same run rounded three other ways: its softmax shifted by the row maximum (as manual
    computes it), its hidden units numbered backwards (every H-term sum in another order, as another BLAS kernel
    adds it), and its initial weights one ulp up."""
    params = init_params(len(set(TEXT)), hidden_size, seed=5)
    run = functools.partial(min_char_rnn, TEXT, steps=steps, hidden_size=hidden_size)
    oracle = trajectory(run(params))
    rounded_otherwise = [
        trajectory(run(params, shifted=True)),
        trajectory(run(reversed_hidden(params)), numbering=reversed_hidden),
        trajectory(run({name: np.nextafter(value, np.inf) for name, value in params.items()})),
    ]
    return {
        name: max(np.max(np.abs(other[name] - value)) for other in rounded_otherwise) for name, value in oracle.items()
    }


def rounding_bound(spread, steps, name):
    """What rounding alone may change in ``name``: SPREAD_FACTOR times min-char-rnn's own measured spread, plus one
    ulp of each value a step (the two implementations' AdaGrad memories drift by that: tests/test_optimizer.py)."""
    return {"rtol": steps * np.finfo(np.float64).eps, "atol": SPREAD_FACTOR * spread[name]}


def trajectory_of_run(summary, impl, checkpoint):
    """The same names as ``trajectory`` for a run of compare.train, in min-char-rnn's units (nats per chunk)."""
    result = summary["impls"][impl]
    engine = checkpoint.engine
    names = ("U", "W", "V", "b", "c")
    return trajectory(
        {
            "losses": 25 * np.array(result["losses"]),  # the run logs nats per character; min-char-rnn, per chunk
            "smooth_loss": 25 * result["train_loss"],
            "params": {name: engine.params[name] for name in names},
            "memories": {name: engine.accumulators[name] for name in names},
        }
    )


def train_preset(tmp_path, impl, hidden_size, steps, *flags):
    """--preset original through compare.train, and what it compares with min-char-rnn (its checkpoint too)."""
    argv = ["--impl", impl, "--max-steps", str(steps), "--hidden-size", str(hidden_size), *flags]
    summary = train(parse_args(preset_argv(tmp_path, "original", *argv)))
    checkpoint = load_checkpoint(tmp_path / "runs" / "original" / impl / "latest.npz")
    return trajectory_of_run(summary, impl, checkpoint), checkpoint


@pytest.mark.exactness
def test_min_char_rnns_own_sensitivity():
    # why the full size is compared for 3 steps only: by 20, rounding alone moves its own losses by a millionth
    assert rounding_spread(100, 20)["losses"] > 1e-6


@pytest.mark.exactness
@pytest.mark.parametrize("hidden_size, steps", CONDITIONED)
@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_the_preset_trains_as_min_char_rnn_does(tmp_path, impl, hidden_size, steps):
    run, checkpoint = train_preset(tmp_path, impl, hidden_size, steps)
    assert checkpoint.vocab == "".join(sorted(set(TEXT)))  # the oracle's char_to_ix is the run's
    oracle = min_char_rnn(TEXT, init_params(len(checkpoint.vocab), hidden_size, seed=5), steps, hidden_size)
    assert oracle["clipped"] > 0  # the clip of the summed gradient is part of what is compared

    spread = rounding_spread(hidden_size, steps)
    for name, expected in trajectory(oracle).items():
        # float64, only the rounding differs (softmax shift, summation orders): within what it does to min-char-rnn
        np.testing.assert_allclose(run[name], expected, **rounding_bound(spread, steps, name), err_msg=name)


@pytest.mark.exactness
@pytest.mark.parametrize("hidden_size, steps", CONDITIONED)
def test_the_bound_rejects_the_rule_without_its_clip(tmp_path, hidden_size, steps):
    run, checkpoint = train_preset(tmp_path, "manual", hidden_size, steps, "--clip", "0")
    oracle = trajectory(min_char_rnn(TEXT, init_params(len(checkpoint.vocab), hidden_size, seed=5), steps, hidden_size))
    spread = rounding_spread(hidden_size, steps)
    for name in ("U", "W", "V", "b", "c"):  # one change of the rule fails the comparison in every weight
        assert not np.allclose(run[name], oracle[name], **rounding_bound(spread, steps, name)), name


@pytest.mark.exactness
def test_both_implementations_agree_step_by_step_under_the_preset(tmp_path):
    config = parse_args(preset_argv(tmp_path, "lockstep", "--impl", "both", "--hidden-size", "8"))
    run = build_run(config, DataParallel())  # the engines exactly as compare.train builds them
    manual_engine, torch_engine = run.engines
    clipped_steps = 0
    for step in range(STEPS):
        index = step % len(run.batches)
        if index == 0:
            for engine in run.engines:
                engine.reset_hidden(config.batch_size)
        inputs, targets = run.batches.get_batch(index)
        manual_stats, torch_stats = (engine.train_step(inputs, targets) for engine in run.engines)
        assert abs(manual_stats.loss - torch_stats.loss) < 1e-12, f"step {step}"  # the lockstep bound
        torch.testing.assert_close(
            as_tensors(manual_engine.numpy_params()),
            as_tensors(torch_engine.numpy_params()),
            rtol=0,
            atol=1e-12,  # tests/test_lockstep.py's float64 bound for the seed model
            msg=lambda m, step=step: f"step {step}: {m}",
        )
        assert manual_stats.clipped == torch_stats.clipped
        clipped_steps += manual_stats.clipped > 0
    assert 0 < clipped_steps < STEPS  # both paths of the clip are compared


@pytest.mark.exactness
@pytest.mark.parametrize("cell, num_layers", [("rnn", 1), *CELLS_AND_LAYERS])
def test_the_summed_gradient_is_exactly_n_times_the_mean_one(cell, num_layers):
    # T * B = 32, a power of two: dividing by it is exact, so the mean's gradient is the sum's, scaled exactly.
    problem = random_problem(batch_size=4, seq_length=8, seed=2, cell=cell, num_layers=num_layers)
    args = (problem["params"], problem["inputs"], problem["targets"], problem["state0"], cell)
    (mean_loss, mean_cache), (sum_loss, sum_cache) = (manual.forward(*args, reduction=r) for r in ("mean", "sum"))
    assert sum_loss == 32 * mean_loss
    mean_grads, sum_grads = manual.backward(mean_cache), manual.backward(sum_cache)

    for name, grad in sum_grads.items():
        np.testing.assert_array_equal(grad, 32 * mean_grads[name], err_msg=name)  # exact: the scaling is by 2^5

    model = torchref.CharRNN(problem["params"], cell=cell)
    tensors = [torch.as_tensor(problem[key]) for key in ("inputs", "targets", "state0")]
    autograd = {}
    for reduction in ("mean", "sum"):
        model.zero_grad()
        model.loss(*tensors, reduction=reduction)[0].backward()
        autograd[reduction] = {name: param.grad.clone() for name, param in model.named_parameters()}
    for name, grad in autograd["sum"].items():
        torch.testing.assert_close(grad, 32 * autograd["mean"][name], rtol=0, atol=0, msg=name)  # exact, as above


@pytest.mark.exactness
@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_a_summed_step_reports_per_character_and_measures_the_summed_gradient(impl):
    problem = random_problem(batch_size=4, seq_length=8, seed=3)
    stats = {}
    for reduction in ("mean", "sum"):
        engine = make_engine(impl, problem["params"], lr=0.1, clip=0, dtype="float64", loss_reduction=reduction)
        engine.reset_hidden(4)
        stats[reduction] = engine.train_step(problem["inputs"], problem["targets"])
    assert stats["sum"].loss == stats["mean"].loss  # nats per character both: sum / 32 is the mean, exactly
    assert stats["sum"].grad_norm == 32 * stats["mean"].grad_norm  # exact: squares scale by 2^10, the root by 2^5


def test_the_preset_sets_min_char_rnns_settings_and_typed_flags_override_it():
    default = parse_args([])
    assert (default.loss_reduction, default.adagrad_eps, default.adagrad_eps_placement) == ("mean", 1e-10, "outside")
    original = parse_args(["--preset", "original"])
    expected = {
        "loss_reduction": "sum",
        "adagrad_eps": 1e-8,
        "adagrad_eps_placement": "inside",
        "clip": 5.0,
        "lr": 0.1,
        "hidden_size": 100,
        "seq_length": 25,
        "batch_size": 1,
        "cell": "rnn",
        "num_layers": 1,
        "dtype": "float64",
        "val_frac": 0.0,
        "sample_every": 100,
        "sample_length": 200,
    }
    assert {name: getattr(original, name) for name in expected} == expected
    for argv in (["--preset", "original", "--lr", "0.05", "--loss-reduction", "mean"],
                 ["--lr", "0.05", "--loss-reduction", "mean", "--preset", "original"]):  # fmt: skip
        typed = parse_args(argv)
        assert (typed.lr, typed.loss_reduction) == (0.05, "mean"), argv
        assert replace(typed, lr=0.1, loss_reduction="sum") == original  # and every other setting is the preset's
    assert "override" in " ".join(build_parser().format_help().split())


@pytest.mark.parametrize(
    "flags, phrase",
    [
        (["--adagrad-eps", "0"], "--adagrad-eps must be a positive number"),
        (["--adagrad-eps", "nan"], "--adagrad-eps must be a positive number"),
        (["--loss-reduction", "max"], "invalid choice"),
        (["--preset", "modern"], "invalid choice"),
        (["--optimizer", "sgd"], "invalid choice"),
        (["--clip-norm", "-1"], "--clip-norm must be a number >= 0"),
        (["--clip-norm", "nan"], "--clip-norm must be a number >= 0"),
        (["--lr-schedule", "linear"], "invalid choice"),
        (["--lr-decay", "0"], "--lr-decay must be in (0, 1]"),
        (["--lr-decay", "1.5"], "--lr-decay must be in (0, 1]"),
        (["--lr-decay-every", "0"], "--lr-decay-every must be a positive number of epochs"),
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(flags, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(flags)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and phrase in stderr, stderr


@pytest.mark.exactness
def test_a_resumed_run_keeps_the_presets_settings(tmp_path, capsys):
    whole = train(parse_args(preset_argv(tmp_path, "whole", "--impl", "both", "--max-steps", "30")))
    first = train(parse_args(preset_argv(tmp_path, "split", "--impl", "both", "--max-steps", "15")))
    resumed_config = parse_args(["--resume", str(tmp_path / "runs" / "split"), "--max-steps", "30"])
    assert (resumed_config.loss_reduction, resumed_config.adagrad_eps_placement) == ("sum", "inside")
    assert resumed_config.adagrad_eps == 1e-8
    second = train(resumed_config)
    for impl in ("manual", "torch"):  # exactly equal: the resumed run must do the very same arithmetic, same rule
        assert first["impls"][impl]["losses"] + second["impls"][impl]["losses"] == whole["impls"][impl]["losses"], impl

    capsys.readouterr()  # drop the progress bars
    for flag, value, refusal in (
        ("--loss-reduction", "mean", "--loss-reduction mean (checkpoint: sum)"),
        ("--adagrad-eps-placement", "outside", "--adagrad-eps-placement outside (checkpoint: inside)"),
        ("--adagrad-eps", "1e-10", "--adagrad-eps 1e-10 (checkpoint: 1e-08)"),
    ):
        with pytest.raises(SystemExit) as exit_info:
            parse_args(["--resume", str(tmp_path / "runs" / "split"), flag, value, "--max-steps", "40"])
        assert exit_info.value.code == 2
        stderr = capsys.readouterr().err
        assert stderr.count("\n") == 1 and refusal in stderr, stderr


def test_a_checkpoint_from_before_these_settings_meant_pytorchs_conventions(tmp_path):
    train(parse_args(preset_argv(tmp_path, "old", "--max-steps", "2")))
    path = tmp_path / "runs" / "old" / "manual" / "latest.npz"
    with np.load(path) as archive:
        arrays = dict(archive)
    header = json.loads(arrays["header"].tobytes())
    for key in ("loss_reduction", "adagrad_eps", "adagrad_eps_placement", "optimizer"):
        header["config"].pop(key)
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    old = tmp_path / "old.npz"
    np.savez(old, **arrays)
    config = load_checkpoint(old).config
    assert (config["loss_reduction"], config["adagrad_eps"], config["adagrad_eps_placement"]) == (
        "mean",
        1e-10,
        "outside",
    )
    assert config["optimizer"] == "adagrad"  # the only optimizer there was


def test_data_parallel_training_refuses_the_summed_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = parse_args(preset_argv(tmp_path, "parallel", "--batch-size", "2"))
    with pytest.raises(UsageError, match="--loss-reduction sum"), join_ranks(config, StopRequest()):
        pass
