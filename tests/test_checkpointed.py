"""Checkpointed BPTT (manual/checkpointed.py, torchref/checkpointed.py) against the plain backward of each side."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import manual
import torchref
from compare.training.agreement import AGREEMENT_BOUND, relative_difference
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
