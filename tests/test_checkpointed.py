"""Checkpointed BPTT (manual/checkpointed.py, torchref/checkpointed.py) against the plain backward of each side."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import asdict

import numpy as np
import pytest
import torch
from tiny_runs import train_argv, write_corpus

import manual
import torchref
from compare.model.checkpoint import load_checkpoint
from compare.model.checkpoint_reading import config_problem
from compare.train import main as train_main
from compare.training.agreement import AGREEMENT_BOUND, relative_difference
from compare.training.config import TrainConfig, parse_args
from compare.training.loop import train
from manual import checkpointed
from tests.problems import MODEL_GRID, random_problem
from tests.twins import torch_loss_and_grads, torch_model
from torchref import checkpointed as torch_checkpointed

STEPS = 10
SEGMENT_LENGTHS = (1, 3, 4, STEPS)  # every step its own segment, 3 and 4 (neither divides T = 10), one segment


def plain_and_checkpointed(problem: dict, dtype: type, segment_length: int) -> tuple:
    """(plain loss, plain grads, checkpointed loss, checkpointed grads) of one problem in ``dtype``."""
    params = {name: value.astype(dtype) for name, value in problem["params"].items()}
    state0 = problem["state0"].astype(dtype)
    args = (params, problem["inputs"], problem["targets"], state0, problem["cell"])
    loss, cache = manual.forward(*args)
    loss_k, _, cache_k = checkpointed.forward(*args, segment_length=segment_length)
    return loss, manual.backward(cache), loss_k, checkpointed.backward(cache_k)


@pytest.mark.exactness
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("cell, layers, batch", MODEL_GRID)
def test_one_segment_is_the_plain_backward_bit_for_bit(cell, layers, batch, dtype):
    problem = random_problem(cell=cell, num_layers=layers, batch_size=batch, seq_length=STEPS)
    for segment_length in (STEPS, STEPS + 5):  # k >= T: the same operations in the same order as the plain pass
        loss, grads, loss_k, grads_k = plain_and_checkpointed(problem, dtype, segment_length)
        assert loss_k == loss
        for name, grad in grads.items():
            assert np.array_equal(grads_k[name], grad), name  # tolerance 0: nothing is regrouped


@pytest.mark.exactness
@pytest.mark.parametrize("segment_length", SEGMENT_LENGTHS)
@pytest.mark.parametrize("cell, layers, batch", MODEL_GRID)
def test_segments_give_the_plain_gradients(cell, layers, batch, segment_length):
    problem = random_problem(cell=cell, num_layers=layers, batch_size=batch, seq_length=STEPS)
    loss, grads, loss_k, grads_k = plain_and_checkpointed(problem, np.float64, segment_length)
    # the sums over time are regrouped by segment: the bound on identical inputs computed two ways (agreement.py)
    bound = AGREEMENT_BOUND["float64"]
    assert relative_difference(np.asarray(loss_k), np.asarray(loss)) <= bound
    for name, grad in grads.items():
        assert relative_difference(grads_k[name], grad) <= bound, name


def test_segment_length_below_one_is_refused():
    problem = random_problem(seq_length=4)
    with pytest.raises(ValueError, match="segment_length"):
        checkpointed.forward(
            problem["params"], problem["inputs"], problem["targets"], problem["state0"], "rnn", "mean", 0
        )


@pytest.mark.exactness
@pytest.mark.parametrize("segment_length", SEGMENT_LENGTHS)
@pytest.mark.parametrize("cell, layers, batch", MODEL_GRID)
def test_torch_checkpoint_gives_the_twins_plain_gradients(cell, layers, batch, segment_length):
    problem = random_problem(cell=cell, num_layers=layers, batch_size=batch, seq_length=STEPS)
    loss, grads = torch_loss_and_grads(problem)
    model: torchref.CharRNN = torch_model(problem)
    loss_k, _ = torch_checkpointed.loss(
        model,
        torch.from_numpy(problem["inputs"]),
        torch.from_numpy(problem["targets"]),
        torch.from_numpy(problem["state0"]),
        segment_length,
    )
    loss_k.backward()
    # the per-segment sums regroup the loss and every gradient: the bound on identical inputs (agreement.py)
    bound = AGREEMENT_BOUND["float64"]
    assert relative_difference(np.asarray(float(loss_k.detach())), np.asarray(loss)) <= bound
    for name, param in model.named_parameters():
        assert param.grad is not None
        assert relative_difference(param.grad.numpy(), grads[name].numpy()) <= bound, name


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_the_hand_cache_keeps_at_most_what_autograd_saves(cell):
    from compare.benchmarks.saved import measure

    result = measure(cell, layers=1, hidden=8, steps=12, vocab=7)
    hand = result["hand"]
    assert hand["hidden"] == (12 + 1) * 8 * 8  # h_0 .. h_T, B = 1, H = 8, float64: seen once, not once per view
    assert sum(hand.values()) <= sum(result["autograd_by_shape"].values())
    assert sum(result["autograd_by_operation"].values()) == sum(result["autograd_by_shape"].values())


# compare.train --segment-length: checkpointed BPTT in the training loop (docs/memory.md#in-training)


def train_run(directory, run_name: str, **flags) -> dict:
    """The losses per implementation of a tiny float64 run (tests/tiny_runs.py: T = 10, B = 2, H = 16)."""
    summary = train(parse_args(train_argv(directory, run_name, **flags)))
    return {impl: np.array(record["losses"]) for impl, record in summary["impls"].items()}


@pytest.fixture
def checkpointed_calls(monkeypatch) -> dict[str, int]:
    """How often each side's checkpointed pass runs: the engines must take it when --segment-length is set."""
    calls = {"manual": 0, "torch": 0}
    manual_backward, torch_loss = checkpointed.backward, torch_checkpointed.loss

    def counted_backward(*args, **kwargs):
        calls["manual"] += 1
        return manual_backward(*args, **kwargs)

    def counted_loss(*args, **kwargs):
        calls["torch"] += 1
        return torch_loss(*args, **kwargs)

    monkeypatch.setattr(checkpointed, "backward", counted_backward)
    monkeypatch.setattr(torch_checkpointed, "loss", counted_loss)
    return calls


@pytest.mark.exactness
def test_impl_both_with_segments_agrees_and_follows_the_plain_run(tmp_path, checkpointed_calls):
    steps = 8
    plain = train_run(tmp_path, "plain", impl="both", max_steps=steps)
    segmented = train_run(tmp_path, "k3", impl="both", max_steps=steps, segment_length=3, agree_every=1)
    assert checkpointed_calls == {"manual": steps, "torch": steps}
    # sums over time regrouped by segment, then a few AdaGrad steps: the bound on identical inputs (agreement.py)
    bound = AGREEMENT_BOUND["float64"]
    assert relative_difference(segmented["manual"], segmented["torch"]) <= bound
    for impl in ("manual", "torch"):
        assert relative_difference(segmented[impl], plain[impl]) <= bound, impl
    checkpoint = load_checkpoint(tmp_path / "runs" / "k3" / "manual" / "latest.npz")
    assert checkpoint.config["segment_length"] == 3


@pytest.mark.exactness
def test_one_segment_per_chunk_trains_bit_for_bit_as_the_plain_run(tmp_path):
    plain = train_run(tmp_path, "plain", impl="both", max_steps=5)
    one_segment = train_run(tmp_path, "k10", impl="both", max_steps=5, segment_length=10)  # k = T
    for impl in ("manual", "torch"):
        assert np.array_equal(one_segment[impl], plain[impl]), impl  # tolerance 0: the same operations in order


def long_run_argv(directory, **flags) -> list:
    """One step of T = 10,000 on a corpus long enough for it: the plain cache is about 8 MB (float64, H 16)."""
    (directory / "long").mkdir(exist_ok=True)  # train_argv writes its own corpus.txt in ``directory``
    corpus = write_corpus(directory / "long", repeats=250)  # 11,250 characters
    return train_argv(directory, data=corpus, seq_length=10_000, batch_size=1, val_frac=0, max_steps=1, **flags)


def test_a_long_sequence_beyond_memory_is_refused_and_segments_make_it_fit(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("compare.model.init.available_memory", lambda: 2_000_000)  # 2 MB, whatever this machine has
    assert train_main(long_run_argv(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "more than the 2 MB this machine has available" in err, err
    assert "--segment-length" in err
    assert not (tmp_path / "runs" / "run").exists()

    assert train_main(long_run_argv(tmp_path, segment_length=100)) == 0
    out = capsys.readouterr().out
    # 8 bytes x (3 x 1,196 parameters + 16 state + 100 saved states x 16 + 100 steps x (3 x 16 + 2 x 28)) = 124,832
    assert "memory: at least 125 kB (an estimate, checkpointed BPTT, the state kept every 100 steps" in out, out


def test_an_old_checkpoint_reads_as_plain_bptt():
    config = {name: value for name, value in asdict(TrainConfig()).items() if name != "segment_length"}
    assert config_problem(config) is None
    assert config["segment_length"] == 0


def test_a_negative_segment_length_is_refused_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as raised:
        parse_args(train_argv(tmp_path, segment_length=-1))
    assert raised.value.code == 2
    assert "--segment-length must be >= 0" in capsys.readouterr().err


# bench --memory-curve (compare/benchmarks/saved.py): the plumbing; the figures are the benchmark's


def test_the_curve_leaves_out_segments_at_or_above_t():
    from compare.benchmarks.saved import segment_lengths

    assert segment_lengths(1000, ["10", "100", "sqrt"]) == [10, 32, 100]  # sqrt(1000) = 31.6
    assert segment_lengths(100, ["10", "100", "sqrt"]) == [10]  # k = 100 = T is the plain backward


def test_the_memory_curve_prints_plain_and_checkpointed_rows_with_the_machine(tmp_path):
    argv = ["--memory-curve", "--steps", "20", "--segments", "5,50", "--sides", "hand", "--no-progress"]
    finished = subprocess.run(
        [sys.executable, "-m", "compare.bench", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert finished.returncode == 0, finished.stderr
    lines = finished.stdout.splitlines()
    assert lines[0].startswith("machine: ") and "load average" in lines[0]
    rows = [line for line in lines if line.startswith("| rnn |")]
    assert [row.split(" | ")[1:4] for row in rows] == [["20", "plain", "hand"], ["20", "k = 5", "hand"]]
    assert rows[0].endswith("| 1.000 | 1.00 |")  # the plain backward against itself


def test_a_bad_memory_curve_flag_is_one_line(tmp_path):
    finished = subprocess.run(
        [sys.executable, "-m", "compare.bench", "--memory-curve", "--sides", "hand,jax"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert finished.returncode == 2 and finished.stderr.count("\n") == 1, finished.stderr


def curve_row(cell, steps, segment_length, peak_bytes, seconds, side="hand"):
    """One row as curve_main collects it: the plain backward of the same T is 1,000 bytes in 1 s."""
    return (
        cell,
        steps,
        segment_length,
        side,
        {"peak_bytes": peak_bytes, "seconds": seconds},
        {"peak_bytes": 1000, "seconds": 1.0},
    )


def test_the_target_verdict_reads_the_rows_at_t_10000():
    from compare.benchmarks.saved import target_verdict

    rows = [
        curve_row("rnn", 10_000, 10, 50, 2.0),  # 5% of the peak but 2x the time
        curve_row("rnn", 10_000, 100, 90, 1.2),  # 9% in 1.2x: meets it
        curve_row("lstm", 10_000, 100, 101, 1.0),  # 10.1%: misses it
        curve_row("lstm", 10_000, 100, 10, 1.0, side="autograd"),  # not the hand-written backward
        curve_row("gru", 1_000, 100, 10, 1.0),  # not T = 10,000
    ]
    verdict = target_verdict(rows)
    assert "rnn met (k = 100: 9.0% of the plain peak in 1.20x its time)" in verdict
    assert "lstm missed (k = 100: 10.1% of the plain peak in 1.00x its time)" in verdict
    assert "gru" not in verdict and target_verdict(rows[-1:]) == ""


@pytest.mark.parametrize("side", ["hand", "autograd"])
def test_a_steps_peak_resident_memory_covers_what_its_backward_keeps(side):
    import argparse

    from compare.benchmarks.saved import curve_cell_in_subprocess, measure

    one_call = argparse.Namespace(threads=1, repeats=1, no_progress=True)
    peaks = {
        dtype: curve_cell_in_subprocess(side, "rnn", 64, 2000, 0, one_call, layers=2, dtype=dtype)["peak_bytes"]
        for dtype in ("float64", "float32")
    }
    kept = measure("rnn", layers=2, hidden=64, steps=2000)  # about 3 MB, far above the measure's page coarseness
    kept_bytes = sum(kept["hand" if side == "hand" else "autograd_by_shape"].values())
    assert peaks["float64"] >= kept_bytes, (peaks, kept_bytes)  # the step holds at least its cache at once
    if side == "hand":  # NumPy arrays alone: twice the bytes in float64 (autograd's graph nodes do not double)
        assert peaks["float64"] > 1.5 * peaks["float32"], peaks
