"""compare.bench --peers: PyTorch's fused modules as a peer of every cell, with a thread sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compare.bench import main
from compare.benchmarks.fused import FusedEngine
from compare.benchmarks.peers import CELL_NAMES, PEER_IMPLS


@pytest.mark.parametrize("cell", CELL_NAMES)
def test_the_fused_peer_trains_what_the_others_train(cell):
    """It is a real model on the same task: it starts near ln V and learns a repeated phrase."""
    vocab_size, batch_size, steps = 7, 2, 8
    tokens = np.tile(np.arange(vocab_size), 40)
    engine = FusedEngine(cell, vocab_size, hidden_size=16, lr=0.1, clip=5.0)
    engine.reset_hidden(batch_size)
    losses = []
    for start in range(0, 240, batch_size * steps):
        chunk = tokens[start : start + batch_size * steps + 1]
        inputs = np.stack([chunk[i * steps : (i + 1) * steps] for i in range(batch_size)])
        targets = np.stack([chunk[i * steps + 1 : (i + 1) * steps + 1] for i in range(batch_size)])
        losses.append(engine.train_step(inputs, targets).loss)
    assert abs(losses[0] - math.log(vocab_size)) < 0.5  # an untrained softmax over V symbols
    assert losses[-1] < 0.5 * losses[0]  # the cycle 0..6 is learned


def test_every_cell_and_thread_count_gets_a_row_with_its_ratio(tmp_path, capsys):
    out = tmp_path / "peers.json"
    argv = ["--peers", "--configs", "seed", "--threads", "1,2", "--steps", "2", "--repeats", "1", "--json", str(out)]
    assert main(argv) == 0
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [(row["threads"], row["cell"]) for row in rows] == [(t, cell) for t in (1, 2) for cell in CELL_NAMES]
    for row in rows:
        rates = row["chars_per_sec"]
        assert set(rates) == set(PEER_IMPLS) and min(rates.values()) > 0
        assert row["manual_vs_fused"] == rates["manual"] / rates["fused"]  # one run, one ratio
    table = capsys.readouterr().out
    assert "| H100 B1 T25 | lstm | 2 |" in table and "other processes used" in table


@pytest.mark.parametrize(
    "flag, value", [("--threads", "0"), ("--threads", "x"), ("--cells", "tree"), ("--configs", "huge")]
)
def test_bad_peer_flags_are_one_line_and_exit_2(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--peers", flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and flag in error
