"""The one weight initializer both implementations start from, for every cell and layer.

Parameters (H hidden size, V vocabulary size, G gate blocks: 1 rnn, 3 gru, 4 lstm):

    U  (G*H, V)   layer 1 input weights, read by column lookup (x_t is one-hot)
    W  (G*H, H)   layer 1 recurrent weights
    b  (G*H,)     layer 1 bias
    U2, W2, b2    layer 2: U2 is (G*H, H), it reads layer 1's hidden state; and so on
    V  (V, H)     output weights, read the top layer
    c  (V,)       output bias

Gate blocks are stacked in PyTorch's order: lstm i, f, g, o; gru r, z, n.
"""

from __future__ import annotations

import numpy as np

from compare.model.cells import manual_cell
from manual import layer_param_names

INIT_STD = 0.01  # the original write-up's sigma (min-char-rnn's 0.01 * randn)
FORGET_BIAS = 1.0  # char-rnn starts the LSTM forget gate open, so memories last from the start


def param_shapes(
    vocab_size: int, hidden_size: int, cell: str = "rnn", num_layers: int = 1
) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every parameter, in the order the initializer draws them."""
    gate_rows = manual_cell(cell).GATES * hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(num_layers):
        names = layer_param_names(layer)
        shapes[names["U"]] = (gate_rows, vocab_size if layer == 0 else hidden_size)
        shapes[names["W"]] = (gate_rows, hidden_size)
    shapes["V"] = (vocab_size, hidden_size)
    for layer in range(num_layers):
        shapes[layer_param_names(layer)["b"]] = (gate_rows,)
    shapes["c"] = (vocab_size,)
    return shapes


def init_params(
    vocab_size: int, hidden_size: int, seed: int, cell: str = "rnn", num_layers: int = 1
) -> dict[str, np.ndarray]:
    """float64 parameters: every U, W and V from N(0, 0.01^2), biases zero (LSTM forget gates 1).

    Drawn in the fixed order of ``param_shapes`` (U, W, [U2, W2, ...], V) from
    ``np.random.default_rng(seed)``, so the same arguments give the same weights on every
    run and for every implementation; the one-layer vanilla RNN draws U, W, V as before.
    """
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(vocab_size, hidden_size, cell, num_layers).items():
        is_bias = len(shape) == 1
        params[name] = np.zeros(shape) if is_bias else rng.normal(0.0, INIT_STD, size=shape)
    if cell == "lstm":
        for layer in range(num_layers):
            params[layer_param_names(layer)["b"]][hidden_size : 2 * hidden_size] = FORGET_BIAS  # rows of f
    return params
