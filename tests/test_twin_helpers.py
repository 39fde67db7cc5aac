"""The helpers that ``manual`` and ``torchref`` each keep a copy of, so that neither imports
the other: the parameter names per layer, the cell table (cells, gate blocks, state parts)
and the layer count of a parameter dict. Both copies must say the same thing."""

from __future__ import annotations

import numpy as np

import manual.model
import torchref.model

CELL_NAMES = ("rnn", "lstm", "gru")
LAYER_COUNTS = (1, 2, 3)


def param_dict(cell: str, num_layers: int, vocab_size: int = 7, hidden_size: int = 5) -> dict:
    """Zeros of the right shapes under manual's names: U, W, b per layer, then V and c."""
    rows = manual.model.CELLS[cell].GATES * hidden_size
    params = {}
    for layer in range(num_layers):
        names = manual.model.layer_param_names(layer)
        params[names["U"]] = np.zeros((rows, vocab_size if layer == 0 else hidden_size))
        params[names["W"]] = np.zeros((rows, hidden_size))
        params[names["b"]] = np.zeros(rows)
    params["V"] = np.zeros((vocab_size, hidden_size))
    params["c"] = np.zeros(vocab_size)
    return params


def test_same_cell_table():
    assert list(manual.model.CELLS) == list(torchref.model.CELLS) == list(CELL_NAMES)
    for cell in CELL_NAMES:
        mine, twin = manual.model.CELLS[cell], torchref.model.CELLS[cell]
        assert mine.__name__ == f"manual.{cell}" and twin.__name__ == f"torchref.{cell}"
        assert mine.GATES == twin.GATES, cell
        assert mine.STATE_PARTS == twin.STATE_PARTS, cell
    assert [manual.model.CELLS[cell].GATES for cell in CELL_NAMES] == [1, 4, 3]
    assert [manual.model.CELLS[cell].STATE_PARTS for cell in CELL_NAMES] == [1, 2, 1]


def test_same_layer_param_names():
    assert manual.model.layer_param_names(0) == {"U": "U", "W": "W", "b": "b"}
    assert manual.model.layer_param_names(1) == {"U": "U2", "W": "W2", "b": "b2"}
    for cell in CELL_NAMES:
        for num_layers in LAYER_COUNTS:
            for layer in range(num_layers):
                mine = manual.model.layer_param_names(layer)
                twin = torchref.model.layer_param_names(layer)
                assert mine == twin, (cell, num_layers, layer)


def test_same_layer_count():
    for cell in CELL_NAMES:
        for num_layers in LAYER_COUNTS:
            params = param_dict(cell, num_layers)
            assert manual.model.count_layers(params) == num_layers, (cell, num_layers)
            assert torchref.model.count_layers(params) == num_layers, (cell, num_layers)


def test_torch_model_takes_the_manual_names_and_state_shape():
    for cell in CELL_NAMES:
        for num_layers in LAYER_COUNTS:
            params = param_dict(cell, num_layers)
            model = torchref.model.CharRNN(params, cell=cell)
            assert model.num_layers == manual.model.count_layers(params), (cell, num_layers)
            assert [name for name, _ in model.named_parameters()] == list(params), (cell, num_layers)
            manual_state = manual.model.zero_state(cell, num_layers, batch_size=3, hidden_size=5)
            assert tuple(model.zero_state(3).shape) == manual_state.shape, (cell, num_layers)
