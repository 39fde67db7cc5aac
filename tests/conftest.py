"""Shared fixtures: small float64 problems that both implementations see identically."""
from __future__ import annotations

import numpy as np
import pytest

from compare.init import init_params


def random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=0, weight_std=0.5):
    """Parameters, a batch and a nonzero carried-in hidden state, all float64.

    The weights are drawn larger than the training init (std 0.5 instead of 0.01) so
    that every gradient entry is far from zero and relative errors mean something.
    """
    rng = np.random.default_rng(seed)
    params = init_params(vocab_size, hidden_size, seed)
    for name in params:
        params[name] = rng.normal(0.0, weight_std, size=params[name].shape)
    return {
        "params": params,
        "inputs": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "targets": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "h0": rng.normal(0.0, 0.5, size=(batch_size, hidden_size)),
    }


@pytest.fixture(params=[1, 4], ids=["B=1", "B=4"])
def problem(request):
    return random_problem(batch_size=request.param, seed=request.param)
