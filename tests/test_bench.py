"""The benchmarks' pieces: the naive baseline's gradients, the FLOP count, the CLIs.

No timing is asserted anywhere here: speed depends on the machine and on its load.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual
from compare.benchmarks.flops import flops_per_char, macs_per_char
from compare.benchmarks.naive import NaiveEngine, loss_and_grads
from compare.model.engines import ManualEngine
from problems import random_params, random_problem

ROOT = Path(__file__).resolve().parents[1]
NAIVE_TOLERANCE = 1e-12  # float64: the baseline sums the same terms as manual in another order


@pytest.mark.parametrize("batch_size", [1, 3])
def test_naive_loss_and_gradients_equal_manual_in_float64(batch_size):
    problem = random_problem(batch_size=batch_size, seed=batch_size)  # one-layer rnn: what the baseline runs
    params, inputs, targets, state0 = (problem[key] for key in ("params", "inputs", "targets", "state0"))
    loss, cache = manual.forward(params, inputs, targets, state0)
    grads = manual.backward(cache)
    naive = loss_and_grads(params, inputs, targets, state0[0, 0])  # (layers, parts, B, H) -> the baseline's (B, H)
    assert naive.loss == pytest.approx(float(loss), abs=NAIVE_TOLERANCE)
    for name, grad in grads.items():
        scale = max(1.0, float(np.max(np.abs(grad))))
        assert np.max(np.abs(naive.grads[name] - grad)) <= NAIVE_TOLERANCE * scale, name
    assert np.allclose(naive.h_last, cache.state_last[0, 0], rtol=0, atol=NAIVE_TOLERANCE)


def test_naive_engine_trains_in_lockstep_with_manual():
    params = random_params(seed=7)
    engines = [ManualEngine(params, 0.1, 5.0, "float64"), NaiveEngine(params, 0.1, 5.0, "float64")]
    rng = np.random.default_rng(0)
    for engine in engines:
        engine.reset_hidden(2)
    for _ in range(3):
        inputs, targets = rng.integers(0, 7, size=(2, 2, 6))
        stats = [engine.train_step(inputs, targets) for engine in engines]
        assert stats[0].loss == pytest.approx(stats[1].loss, abs=NAIVE_TOLERANCE)
    for name in params:
        assert np.allclose(engines[0].params[name], engines[1].params[name], rtol=0, atol=NAIVE_TOLERANCE)


def test_flop_formula_counts_every_product_of_a_tiny_case():
    hidden, vocab = 2, 3
    forward = hidden * hidden + vocab * hidden  # W h_{t-1}, V h_t
    backward = vocab * hidden + vocab * hidden + hidden * hidden + hidden * hidden  # dV, V^T do, dW, W^T da
    assert macs_per_char(hidden, vocab) == forward + backward == 30
    assert flops_per_char(hidden, vocab) == 60
    assert macs_per_char(100, 103) == 3 * 100 * 100 + 3 * 103 * 100


def run_bench(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "compare.bench", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_bench_cli_writes_the_json_interface(tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench("--configs", "seed", "--impls", "manual,naive", "--steps", "2", "--warmup", "1",
                       "--repeats", "1", "--no-scaling", "--no-progress", "--threads", "1", "--json", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    machine = document["machine"]
    assert isinstance(machine["cpu"], str) and machine["threads"] == 1 and machine["matmul_gflops"] > 0
    rows = {(row["config"], row["impl"]): row for row in document["results"]}
    assert set(rows) == {("seed", "manual"), ("seed", "naive")}
    for row in rows.values():
        assert row["chars_per_sec"] > 0 and row["gflops"] > 0 and row["pct_peak"] > 0
        assert row["gflops"] == pytest.approx(row["chars_per_sec"] * flops_per_char(100, row["vocab_size"]) / 1e9)
    assert "| seed |" in result.stdout and "manual" in result.stdout  # the Markdown table


@pytest.mark.parametrize("flags", [["--configs", "huge"], ["--impls", "manual,jax"], ["--threads", "0"],
                                   ["--repeats", "0"], ["--steps", "-1"], ["--memory-mb", "0"],
                                   ["--json", "/no/such/dir/x.json"], ["--no-speed", "--no-scaling"]])
def test_bad_flags_exit_2_with_one_line(flags):
    result = run_bench(*flags)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "error:" in result.stderr


def test_the_distributed_benchmark_refuses_a_batch_it_cannot_split(capsys):
    from compare.benchmarks.distributed import layouts
    from compare.benchmarks.distributed import main as bench_main

    assert [(layout.processes, layout.threads) for layout in layouts([1, 2])] == [(1, 1), (1, 2), (2, 1)]
    with pytest.raises(SystemExit) as exit_info:
        bench_main(["--configs", "large", "--processes", "1,3"])  # batch 128 over 3 processes
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert "batch size 128 does not split over [3] processes" in stderr, stderr
