"""The weight initializer both implementations start from: names, shapes, draws, biases."""

from __future__ import annotations

import numpy as np

from compare.model.init import init_params, param_shapes


def test_init_params_shapes_and_determinism():
    params = init_params(vocab_size=11, hidden_size=7, seed=1)
    assert {name: value.shape for name, value in params.items()} == {
        "U": (7, 11),
        "W": (7, 7),
        "V": (11, 7),
        "b": (7,),
        "c": (11,),
    }
    assert all(value.dtype == np.float64 for value in params.values())
    assert not params["b"].any() and not params["c"].any()
    assert 0.008 < params["U"].std() < 0.012  # N(0, 0.01^2): 77 draws land within 20% of the std
    again = init_params(vocab_size=11, hidden_size=7, seed=1)
    assert all(np.array_equal(params[name], again[name]) for name in params)


def test_parameter_names_and_shapes():
    shapes = param_shapes(vocab_size=11, hidden_size=5, cell="lstm", num_layers=2)
    assert shapes == {
        "U": (20, 11),
        "W": (20, 5),
        "U2": (20, 5),
        "W2": (20, 5),
        "V": (11, 5),
        "b": (20,),
        "b2": (20,),
        "c": (11,),
    }
    assert param_shapes(11, 5, "gru", 1) == {"U": (15, 11), "W": (15, 5), "V": (11, 5), "b": (15,), "c": (11,)}
    assert param_shapes(11, 5, "rnn", 1) == {"U": (5, 11), "W": (5, 5), "V": (11, 5), "b": (5,), "c": (11,)}


def test_lstm_forget_gate_bias_starts_at_one():
    params = init_params(11, 5, seed=0, cell="lstm", num_layers=2)
    for name in ("b", "b2"):
        i, f, g, o = np.split(params[name], 4)  # PyTorch's gate order
        assert np.all(f == 1.0) and not i.any() and not g.any() and not o.any()
    gru = init_params(11, 5, seed=0, cell="gru")
    assert not gru["b"].any()


def test_the_seed_model_draws_U_then_W_then_V_from_one_generator():
    params = init_params(11, 5, seed=7)
    rng = np.random.default_rng(7)  # the one-layer rnn's draw order: U, W, V
    for name, shape in (("U", (5, 11)), ("W", (5, 5)), ("V", (11, 5))):
        assert np.array_equal(params[name], rng.normal(0.0, 0.01, size=shape))
