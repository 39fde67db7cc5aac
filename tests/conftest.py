"""Shared fixtures: small float64 problems that both implementations see identically."""
from __future__ import annotations

import numpy as np
import pytest

import manual
from compare.init import init_params

# Every cell with one and two layers, one stream and several: the grid issue 7 asks the proofs to cover.
MODEL_GRID = [(cell, layers, batch) for cell in ("rnn", "lstm", "gru") for layers in (1, 2) for batch in (1, 4)]


def random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=0, weight_std=0.5,
                   cell="rnn", num_layers=1):
    """Parameters, a batch and a nonzero carried-in state (hidden and, for lstm, cell), all float64.

    The weights are drawn larger than the training init (std 0.5 instead of 0.01) so
    that every gradient entry is far from zero and relative errors mean something.
    """
    rng = np.random.default_rng(seed)
    params = init_params(vocab_size, hidden_size, seed, cell, num_layers)
    for name in params:
        params[name] = rng.normal(0.0, weight_std, size=params[name].shape)
    state_shape = manual.zero_state(cell, num_layers, batch_size, hidden_size).shape  # (L, P, B, H)
    return {
        "cell": cell,
        "params": params,
        "inputs": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "targets": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "state0": rng.normal(0.0, 0.5, size=state_shape),
    }


@pytest.fixture(params=MODEL_GRID, ids=[f"{cell}-L{layers}-B{batch}" for cell, layers, batch in MODEL_GRID])
def problem(request):
    cell, layers, batch = request.param
    return random_problem(batch_size=batch, seed=batch + 10 * layers, cell=cell, num_layers=layers)


@pytest.fixture(autouse=True, scope="session")
def torch_on_one_thread():
    """The tests' tensors hold a few hundred numbers: waking a thread pool for each small op
    only slows them down (measured 10x on a busy two-core machine). Subprocesses are unaffected."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
