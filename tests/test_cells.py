"""LSTM and GRU cells and stacked layers, through everything built for the vanilla RNN:
the initializer, training with both implementations, checkpoints, sampling, the report."""
from __future__ import annotations

import numpy as np
import pytest

from compare.checkpoint import load_checkpoint
from compare.gradcheck import GradcheckSettings, run_gradcheck
from compare.init import init_params, param_shapes
from compare.sample import sampling_engine
from compare.sampling import sample_text
from compare.data import Vocab
from compare.train import parse_args, train
from tiny_runs import train_argv

CELLS_AND_LAYERS = [("lstm", 1), ("lstm", 2), ("gru", 1), ("gru", 2), ("rnn", 2)]


def test_parameter_names_and_shapes():
    shapes = param_shapes(vocab_size=11, hidden_size=5, cell="lstm", num_layers=2)
    assert shapes == {"U": (20, 11), "W": (20, 5), "U2": (20, 5), "W2": (20, 5), "V": (11, 5),
                      "b": (20,), "b2": (20,), "c": (11,)}
    assert param_shapes(11, 5, "gru", 1) == {"U": (15, 11), "W": (15, 5), "V": (11, 5), "b": (15,), "c": (11,)}
    assert param_shapes(11, 5, "rnn", 1) == {"U": (5, 11), "W": (5, 5), "V": (11, 5), "b": (5,), "c": (11,)}


def test_lstm_forget_gate_bias_starts_at_one():
    params = init_params(11, 5, seed=0, cell="lstm", num_layers=2)
    for name in ("b", "b2"):
        i, f, g, o = np.split(params[name], 4)  # PyTorch's gate order
        assert np.all(f == 1.0) and not i.any() and not g.any() and not o.any()
    gru = init_params(11, 5, seed=0, cell="gru")
    assert not gru["b"].any()


def test_the_seed_model_draws_the_same_weights_as_before_cells_existed():
    params = init_params(11, 5, seed=7)
    rng = np.random.default_rng(7)  # the original draw order: U, W, V
    for name, shape in (("U", (5, 11)), ("W", (5, 5)), ("V", (11, 5))):
        assert np.array_equal(params[name], rng.normal(0.0, 0.01, size=shape))


@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_training_checkpoints_and_sampling_cover_every_cell(tmp_path, cell, num_layers):
    summary = train(parse_args(train_argv(tmp_path, impl="both", cell=cell, num_layers=num_layers, max_steps=30)))
    for name in ("manual", "torch"):
        assert summary["impls"][name]["losses"][-1] < summary["impls"][name]["losses"][0]

    checkpoint = load_checkpoint(tmp_path / "runs" / "run" / "manual" / "latest.npz")
    assert checkpoint.config["cell"] == cell and checkpoint.config["num_layers"] == num_layers
    assert set(checkpoint.engine.params) == set(param_shapes(len(checkpoint.vocab), 16, cell, num_layers))
    assert checkpoint.engine.hidden.shape == (num_layers, 2 if cell == "lstm" else 1, 2, 16)  # (L, P, B, H)

    # One checkpoint, two implementations, one generator: the same text.
    vocab = Vocab(checkpoint.vocab)
    texts = {impl: sample_text(sampling_engine(checkpoint, impl), vocab, 200, temperature=0.8, prime="the ", seed=5)
             for impl in ("manual", "torch")}
    assert texts["manual"] == texts["torch"]
    assert len(texts["manual"]) == 200


@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_a_checkpoint_resumes_in_the_other_implementation(tmp_path, cell, num_layers):
    flags = {"cell": cell, "num_layers": num_layers}
    whole = train(parse_args(train_argv(tmp_path, "whole", impl="manual", max_steps=30, **flags)))
    train(parse_args(train_argv(tmp_path, "split", impl="manual", max_steps=20, **flags)))
    resumed = train(parse_args(["--resume", str(tmp_path / "runs" / "split" / "manual" / "latest.npz"),
                                "--impl", "torch", "--max-steps", "30"]))
    # float64, two summation orders, 10 steps: rounding-level differences (measured < 1e-14).
    np.testing.assert_allclose(resumed["impls"]["torch"]["losses"], whole["impls"]["manual"]["losses"][20:],
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_gradient_check_report_for_every_cell(cell, num_layers):
    # The report's own targets, at its default settings (H 5, T 25, B 1) with this cell, on 40
    # random entries of each parameter (every entry of a two-layer LSTM takes seconds):
    # complex step and autograd agree with the hand-written gradient to 1e-12.
    settings = GradcheckSettings(cell=cell, num_layers=num_layers, methods=["complex", "manual-vs-autograd"], sample=40)
    results = run_gradcheck(settings)["results"]
    expected_rows = set(param_shapes(1, 1, cell, num_layers)) | {"All"}
    for method in ("complex", "manual-vs-autograd"):
        assert set(results[method]) == expected_rows
        worst = max(row["max"] for row in results[method].values())
        assert worst <= 1e-12, f"{method}: {worst:.2e}"
