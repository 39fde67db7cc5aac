"""The one builder of small random float64 problems: weights, a batch and a carried-in state.

Every test that needs random weights or a random batch draws them here, so that both
implementations (and every test) see the same kind of problem.
"""

from __future__ import annotations

import numpy as np

import manual
from compare.model.init import param_shapes

# Every cell with one and two layers, one stream and several: the grid the gradient proofs cover.
MODEL_GRID = [(cell, layers, batch) for cell in ("rnn", "lstm", "gru") for layers in (1, 2) for batch in (1, 4)]
# Every cell and depth besides the one-layer rnn (the seed model, which other tests cover on its own).
CELLS_AND_LAYERS = [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2), ("rnn", 2)]


def random_params(vocab_size=7, hidden_size=5, seed=0, weight_std=0.5, cell="rnn", num_layers=1) -> dict:
    """Every parameter (biases too) drawn from N(0, weight_std^2) in float64, in the initializer's order.

    ``seed`` is an int, or a np.random.Generator whose draws then continue here. The weights
    are drawn larger than the training init (std 0.5 instead of 0.01) so that every gradient
    entry is far from zero and relative errors mean something.
    """
    rng = np.random.default_rng(seed)  # returns a Generator unchanged
    return {
        name: rng.normal(0.0, weight_std, size=shape)
        for name, shape in param_shapes(vocab_size, hidden_size, cell, num_layers).items()
    }


def random_problem(
    vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=0, weight_std=0.5, cell="rnn", num_layers=1
) -> dict:
    """Parameters, a batch and a nonzero carried-in state (hidden and, for lstm, cell), all float64.

    Keys: cell, params, inputs and targets (B, T) int64, state0 (layers, parts, B, H).
    """
    rng = np.random.default_rng(seed)
    params = random_params(vocab_size, hidden_size, rng, weight_std, cell, num_layers)
    state_shape = manual.zero_state(cell, num_layers, batch_size, hidden_size).shape  # (L, P, B, H)
    return {
        "cell": cell,
        "params": params,
        "inputs": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "targets": rng.integers(0, vocab_size, size=(batch_size, seq_length)),
        "state0": rng.normal(0.0, 0.5, size=state_shape),
    }
