"""Every cell (LSTM, GRU) and stacked layers, end to end: training with both implementations,
the checkpoint it leaves, and sampling from that checkpoint with either implementation."""

from __future__ import annotations

import pytest
from problems import CELLS_AND_LAYERS
from tiny_runs import train_argv

from compare.data.corpus import Vocab
from compare.model.checkpoint import load_checkpoint
from compare.model.init import param_shapes
from compare.model.sampling import sample_text, sampling_engine
from compare.training.config import parse_args
from compare.training.loop import train

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability


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
    texts = {
        impl: sample_text(sampling_engine(checkpoint, impl), vocab, 200, temperature=0.8, prime="the ", seed=5)
        for impl in ("manual", "torch")
    }
    assert texts["manual"] == texts["torch"]
    assert len(texts["manual"]) == 200
