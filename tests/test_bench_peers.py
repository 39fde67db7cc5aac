"""compare.bench --peers: PyTorch's fused modules as a peer of every cell, with a thread sweep."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from compare.bench import main
from compare.benchmarks.flops import flops_per_char
from compare.benchmarks.fused import FusedEngine
from compare.benchmarks.peers import CELL_NAMES, PEER_IMPLS, impls_of
from compare.benchmarks.products import ProductsEngine


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


def test_every_cell_and_thread_count_gets_a_row_with_its_ratios_and_flop_rates(tmp_path, capsys):
    out = tmp_path / "peers.json"
    argv = ["--peers", "--configs", "seed", "--threads", "1,2", "--steps", "2", "--repeats", "1"]
    assert main([*argv, "--peak-size", "128", "--json", str(out)]) == 0
    document = json.loads(out.read_text())
    rows = document["rows"]
    assert [(row["threads"], row["cell"]) for row in rows] == [(t, cell) for t in (1, 2) for cell in CELL_NAMES]
    assert impls_of("rnn") == PEER_IMPLS and "baseline" not in impls_of("lstm") + impls_of("gru")
    peaks = {threads: document["matmul_peaks"][threads]["gflops"] for threads in ("1", "2")}
    # measured before the cells and after each thread count's config: 3 times on each thread count
    assert [(s["when"], s["threads"]) for s in document["matmul_peak_samples"]] == [
        (when, t) for when in ("before", "after seed on 1", "after seed on 2") for t in (1, 2)
    ]
    for threads in ("1", "2"):  # the best of the run's measurements
        assert peaks[threads] == max(
            s["gflops"] for s in document["matmul_peak_samples"] if str(s["threads"]) == threads
        )
    for row in rows:
        rates = row["chars_per_sec"]
        assert set(rates) == set(impls_of(row["cell"])) and min(rates.values()) > 0
        assert row["manual_vs_fused"] == rates["manual"] / rates["fused"]  # one run, one ratio
        expected = rates["manual"] / rates["baseline"] if row["cell"] == "rnn" else None
        assert row["manual_vs_baseline"] == expected
        gates = {"rnn": 1, "gru": 3, "lstm": 4}[row["cell"]]
        assert row["flops_per_char"] == flops_per_char(100, row["vocab_size"], gates)
        for impl, rate in rates.items():
            # the same expressions as compare.benchmarks.peers, so exactly equal
            assert row["gflops"][impl] == rate * row["flops_per_char"] / 1e9
            assert row["pct_of_1_thread_peak"][impl] == 100 * row["gflops"][impl] / peaks["1"]
            assert row["pct_of_own_peak"][impl] == 100 * row["gflops"][impl] / peaks[str(row["threads"])]
    table = capsys.readouterr().out
    assert "| H100 B1 T25 | lstm | 2 |  |" in table and "other processes used" in table
    assert "float32 128x128 matmul peak" in table and "after seed on 2: 1 thread" in table


@pytest.mark.parametrize(
    "flag, value",
    [("--threads", "0"), ("--threads", "x"), ("--cells", "tree"), ("--configs", "huge"), ("--peak-size", "0")],
)
def test_bad_peer_flags_are_one_line_and_exit_2(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--peers", flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and flag in error


def test_the_products_alone_are_the_vanilla_steps_products_and_their_flop_count(monkeypatch):
    """Each product equals its NumPy expression, and the multiply-adds of the products the engine really
    calls (counted from their operands' shapes) are flops_per_char's per character."""
    vocab_size, hidden_size, streams, steps = 7, 5, 3, 4
    engine = ProductsEngine(vocab_size, hidden_size, seed=1)
    engine.reset_hidden(streams)
    multiply_adds = []

    def counted(product):
        def call(a, b, out=None):
            multiply_adds.append(a.size * b.shape[-1])  # (m, k) x (k, n): m k n
            return product(a, b, out=out)

        return call

    monkeypatch.setattr(np, "dot", counted(np.dot))
    monkeypatch.setattr(np, "matmul", counted(np.matmul))
    inputs = np.zeros((streams, steps), dtype=np.int64)
    engine.train_step(inputs, inputs)
    monkeypatch.undo()
    rows = steps * streams
    assert 2 * sum(multiply_adds) == flops_per_char(hidden_size, vocab_size, 1) * rows
    buf = engine.buffers
    hidden, d_x_proj, d_logits = buf["hidden"], buf["d_x_proj"], buf["d_logits"]
    top_rows, prev_rows = hidden[1:].reshape(rows, -1), hidden[:-1].reshape(rows, -1)
    # float32 BLAS against float64 NumPy: products of 5 to 12 terms in [-1, 1], so within 1e-5
    close = {"rtol": 1e-5, "atol": 1e-5}
    np.testing.assert_allclose(buf["pre"], hidden[:-1] @ engine.W.T.astype(np.float64), **close)
    np.testing.assert_allclose(buf["logits"], top_rows @ engine.V.T.astype(np.float64), **close)
    np.testing.assert_allclose(buf["d_V"], d_logits.T @ top_rows.astype(np.float64), **close)
    np.testing.assert_allclose(buf["d_hidden"], d_logits @ engine.V.astype(np.float64), **close)
    np.testing.assert_allclose(buf["d_h_next"], d_x_proj[0] @ engine.W.astype(np.float64), **close)
    np.testing.assert_allclose(buf["d_W"], d_x_proj.reshape(rows, -1).T @ prev_rows.astype(np.float64), **close)
