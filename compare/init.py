"""The one weight initializer both implementations start from."""
from __future__ import annotations

import numpy as np

INIT_STD = 0.01  # the original write-up's sigma (min-char-rnn's 0.01 * randn)


def init_params(vocab_size: int, hidden_size: int, seed: int) -> dict:
    """float64 parameters: U (H, V), W (H, H), V (V, H) from N(0, 0.01^2); b (H,), c (V,) zero.

    Drawn in the fixed order U, W, V from ``np.random.default_rng(seed)``, so the same
    arguments give the same weights on every run and for every implementation.
    """
    rng = np.random.default_rng(seed)
    return {
        "U": rng.normal(0.0, INIT_STD, size=(hidden_size, vocab_size)),
        "W": rng.normal(0.0, INIT_STD, size=(hidden_size, hidden_size)),
        "V": rng.normal(0.0, INIT_STD, size=(vocab_size, hidden_size)),
        "b": np.zeros(hidden_size),
        "c": np.zeros(vocab_size),
    }
