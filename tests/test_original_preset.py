"""--preset original: min-char-rnn.py's training (summed loss, clip 5, AdaGrad eps 1e-8 inside the root).

The oracle is a literal transcription of min-char-rnn.py's lossFun and update loop; the engines are
driven through the real training loop (compare.training.loop) or built by it (build_run).
"""

from __future__ import annotations

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
from compare.training.distributed import DataParallel
from compare.training.flags import build_parser, parse_args
from compare.training.joining import join_ranks
from compare.training.loop import build_run, train
from compare.training.stop import StopRequest

# 540 characters: 21 chunks of 25 per epoch in both min-char-rnn (p + 26 < 540) and StreamBatches
# ((540 - 1) // 25), so 50 steps cross two epoch boundaries at the same steps in both.
TEXT = PHRASE.replace(" ", "  ") * 10
STEPS = 50
# How long a float64 comparison can hold at 1e-12 is set by min-char-rnn's own dynamics, not by the code:
# AdaGrad's first updates are +-lr steps on weights of size 0.01, and at hidden size 100 a one-ulp change
# of its softmax (the max shift) moves its own losses by more than 1e-6 within 20 steps
# (test_min_char_rnns_own_sensitivity).
# So the full-size preset is compared for its first updates, and the rule over 50 steps at hidden size 8.
CONDITIONED = [(100, 3), (8, STEPS)]  # (hidden size, steps) where that change stays below 1e-12


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


def largest_loss_change(hidden_size, steps):
    """How far min-char-rnn's own losses move when its softmax is rounded differently (max shift or not)."""
    params = init_params(len(set(TEXT)), hidden_size, seed=5)
    first, second = (min_char_rnn(TEXT, params, steps, hidden_size, shifted=shift) for shift in (False, True))
    return float(np.max(np.abs(np.subtract(first["losses"], second["losses"]))))


def test_min_char_rnns_own_sensitivity():
    for hidden_size, steps in CONDITIONED:
        assert largest_loss_change(hidden_size, steps) < 1e-12, (hidden_size, steps)
    assert largest_loss_change(100, 20) > 1e-6  # why the full size is compared for 3 steps only


@pytest.mark.parametrize("hidden_size, steps", CONDITIONED)
@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_the_preset_trains_as_min_char_rnn_does(tmp_path, impl, hidden_size, steps):
    flags = ["--impl", impl, "--max-steps", str(steps), "--hidden-size", str(hidden_size)]
    summary = train(parse_args(preset_argv(tmp_path, "original", *flags)))
    checkpoint = load_checkpoint(tmp_path / "runs" / "original" / impl / "latest.npz")
    assert checkpoint.vocab == "".join(sorted(set(TEXT)))  # the oracle's char_to_ix is the run's
    oracle = min_char_rnn(TEXT, init_params(len(checkpoint.vocab), hidden_size, seed=5), steps, hidden_size)
    assert oracle["clipped"] > 0  # the clip of the summed gradient is part of what is compared

    # float64; min-char-rnn's softmax skips the max shift and sums in another order: rounding only.
    tolerance = {"rtol": 1e-12, "atol": 1e-12}
    result = summary["impls"][impl]
    per_chunk = 25 * np.array(result["losses"])  # the run logs nats per character; min-char-rnn's loss is per chunk
    np.testing.assert_allclose(per_chunk, oracle["losses"], **tolerance)
    assert 25 * result["train_loss"] == pytest.approx(oracle["smooth_loss"], **{"rel": 1e-12, "abs": 0})
    for name, value in oracle["params"].items():
        np.testing.assert_allclose(checkpoint.engine.params[name], value, **tolerance, err_msg=name)
        np.testing.assert_allclose(checkpoint.engine.accumulators[name], oracle["memories"][name], **tolerance)


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
    ],
)
def test_bad_optimizer_settings_are_one_line_errors(flags, phrase, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(flags)
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and phrase in stderr, stderr


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
    for key in ("loss_reduction", "adagrad_eps", "adagrad_eps_placement"):
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


def test_data_parallel_training_refuses_the_summed_loss(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    config = parse_args(preset_argv(tmp_path, "parallel", "--batch-size", "2"))
    with pytest.raises(UsageError, match="--loss-reduction sum"), join_ranks(config, StopRequest()):
        pass
