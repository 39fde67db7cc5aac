"""The benchmarks' pieces: the naive baseline's gradients, the FLOP count, the peak and load bookkeeping, the CLIs.

No timing is asserted anywhere here: speed depends on the machine and on its load. The
report's tests drive ``compare.benchmarks.suite.run`` with rates, matmul peaks and /proc
readings the test chooses, so they run in milliseconds and mean the same on any machine.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from problems import random_params, random_problem

import manual
from compare.bench import parse_args
from compare.benchmarks import flops, report, suite
from compare.benchmarks.flops import LoadMonitor, MatmulPeak, flops_per_char, macs_per_char
from compare.benchmarks.naive import NaiveEngine, loss_and_grads
from compare.benchmarks.timing import Measurement, Timer
from compare.model.engines import ManualEngine

NAIVE_TOLERANCE = 1e-12  # float64: the baseline sums the same terms as manual in another order


@pytest.mark.exactness
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


@pytest.mark.exactness
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


def run_bench(*args):
    return subprocess.run([sys.executable, "-m", "compare.bench", *args], capture_output=True, text=True, timeout=300)


def test_bench_cli_writes_the_json_interface(tmp_path):
    out = tmp_path / "bench.json"
    flags = "--configs seed --impls manual,naive --steps 2 --warmup 1 --repeats 1 --no-scaling --no-progress"
    result = run_bench(*flags.split(), "--threads", "1", "--peak-size", "64", "--json", str(out))
    assert result.returncode == 0, result.stderr
    document = json.loads(out.read_text())
    machine = document["machine"]
    assert isinstance(machine["cpu"], str) and machine["threads"] == 1 and machine["matmul_gflops"] > 0
    assert machine["peak_threads"] == 1 and isinstance(machine["clean"], bool)
    assert isinstance(machine["peak_exceeded"], bool) and set(machine["matmul_peaks"]) >= {"1"}
    assert [sample["when"] for sample in machine["matmul_peak_samples"] if sample["threads"] == 1] == [
        "before seed",
        "after seed",
    ]
    rows = {(row["config"], row["impl"]): row for row in document["results"]}
    assert set(rows) == {("seed", "manual"), ("seed", "naive")}
    for row in rows.values():
        assert row["chars_per_sec"] > 0 and row["gflops"] > 0 and row["pct_peak"] > 0
        assert row["gflops"] == pytest.approx(row["chars_per_sec"] * flops_per_char(100, row["vocab_size"]) / 1e9)
    assert rows["seed", "manual"]["x_naive"] == pytest.approx(
        rows["seed", "manual"]["chars_per_sec"] / rows["seed", "naive"]["chars_per_sec"]
    )
    assert "| seed |" in result.stdout and "manual" in result.stdout  # the Markdown table


def test_bench_times_a_plugged_cell_in_manual_and_torch(tmp_path):
    out = tmp_path / "bench.json"
    flags = "--cell compare.examples.mgu --configs seed --steps 2 --warmup 1 --repeats 1 --no-scaling --no-progress"
    result = run_bench(*flags.split(), "--threads", "1", "--peak-size", "64", "--json", str(out))
    assert result.returncode == 0, result.stderr
    assert "note: --cell compare.examples.mgu: naive, torch-compiled skipped (the vanilla RNN's only)" in result.stderr
    document = json.loads(out.read_text())
    assert document["cell"] == "compare.examples.mgu"
    rows = {row["impl"]: row for row in document["results"]}
    assert set(rows) == {"manual", "torch"} and all(row["chars_per_sec"] > 0 for row in rows.values())
    assert all(row["gflops"] is None for row in rows.values())  # the FLOP formula counts the vanilla RNN's work
    assert rows["manual"]["x_torch"] == pytest.approx(rows["manual"]["chars_per_sec"] / rows["torch"]["chars_per_sec"])
    assert "| seed | 100 | 1 | 25 | manual |" in result.stdout


BAD_FLAGS = [
    "--cell no_such_cell_module",
    "--cell compare.examples.mgu --impls naive,torch-compiled",
    "--configs huge",
    "--impls manual,jax",
    "--threads 0",
    "--repeats 0",
    "--steps -1",
    "--memory-mb 0",
    "--memory-mb 1,x",
    "--memory-text utf16",
    "--peak-size 0",
    "--json /no/such/dir/x.json",
    "--no-speed --no-scaling",
]


@pytest.mark.parametrize("flags", BAD_FLAGS)
def test_bad_flags_exit_2_with_one_line(flags):
    result = run_bench(*flags.split())
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


# --- the report: peaks measured through the run, rates above them, other processes' load --------------------------


@dataclass
class ChosenRates(Timer):
    """A Timer that times nothing: each (config, impl) runs at the GFLOP/s the test chose (default 1)."""

    gflops: dict = field(default_factory=dict)

    def measure(self, config, impls, tokens, vocab_size, tick=lambda: None) -> list:
        per_char = flops_per_char(config.hidden_size, vocab_size)
        rate = {impl: self.gflops.get((config.name, impl), 1.0) * 1e9 / per_char for impl in impls}
        return [Measurement(config, impl, [rate[impl]], 0.0, vocab_size) for impl in impls]


class FixedLoad:
    """A LoadMonitor that reports the other processes' share the test chose."""

    def __init__(self, pct):
        self.pct = pct

    def start(self):
        return self

    def other_load_pct(self):
        return self.pct


# GFLOP/s of each peak measurement, in the order the run takes them, per thread count: numpy, torch.
PEAKS_1_THREAD = [(10.0, 25.0), (30.0, 5.0), (20.0, 5.0), (12.0, 1.0), (11.0, 1.0)]  # best: numpy's 30
PEAKS_4_THREADS = [(40.0, 40.0), (90.0, 60.0), (60.0, 60.0), (50.0, 50.0), (50.0, 50.0)]


@pytest.fixture
def chosen_machine(monkeypatch):
    """4 cores; the matmul peak's measurements come from the lists above; 3% load unless a test sets it."""
    monkeypatch.setattr(flops, "available_cores", lambda: 4)
    queues = {1: list(PEAKS_1_THREAD), 4: list(PEAKS_4_THREADS)}
    monkeypatch.setattr(
        flops, "measure_matmul_peak", lambda threads, size: MatmulPeak(*queues[threads].pop(0), threads)
    )
    monkeypatch.setattr(suite, "LoadMonitor", lambda: FixedLoad(3.0))
    return monkeypatch


def run_chosen(capsys, gflops=None, configs="seed,large", scaling=False) -> tuple:
    flags = ["--configs", configs, "--impls", "naive,manual,torch", "--threads", "1", "--no-flush-denormals"]
    settings = parse_args(flags + ["--no-progress", "--scaling" if scaling else "--no-scaling"])
    settings.timer = ChosenRates(gflops=gflops or {})
    document = suite.run(settings)
    return document, capsys.readouterr().out


def test_the_peak_is_measured_before_between_and_after_the_configs_and_the_best_counts(chosen_machine, capsys):
    document, out = run_chosen(capsys, {("large", "manual"): 15.0}, scaling=True)
    machine = document["machine"]
    whens = ["before seed", "after seed", "after large", "after the hidden sweep", "after the batch sweep"]
    assert [(s["when"], s["threads"]) for s in machine["matmul_peak_samples"]] == [
        (when, threads) for when in whens for threads in (1, 4)
    ]
    assert list(machine["matmul_peaks"]["1"].values()) == [30.0, 30.0, 25.0, 5]  # GFLOP/s; numpy, torch; count
    assert machine["matmul_peaks"]["4"]["gflops"] == 90.0
    assert machine["peak_threads"] == 1 and machine["matmul_gflops"] == 30.0  # --threads 1: the 1-thread peak
    rows = {(row["config"], row["impl"]): row for row in document["results"]}
    assert rows["large", "manual"]["pct_peak"] == pytest.approx(50.0)
    assert "best of 5 measured before, between and after the configurations: 1 thread 30 GFLOP/s" in out
    assert "; 4 threads 90 GFLOP/s (NumPy 90, torch 60)" in out and "of the 1-thread peak, 30 GFLOP/s" in out
    assert "| % of 1-thread peak |" in out and "| 15.0 | 50.0 |" in out
    assert "manual % of 1-thread peak" in out  # the scaling tables say which peak too


@pytest.mark.parametrize("fastest", [29.0, 45.0])
def test_a_rate_above_the_peak_is_flagged_next_to_its_table(chosen_machine, capsys, fastest):
    document, out = run_chosen(capsys, {("large", "torch"): fastest})
    above = fastest > 30.0  # the best 1-thread peak
    assert document["machine"]["peak_exceeded"] is above
    warning = "Warning: torch at large ran at 150% of the 1-thread peak: the peak was measured under load"
    table_end = out.index("| large | 512 | 128 | 25 | torch |")
    assert (warning in out[table_end:].splitlines()[1]) is above  # the line right under the table
    assert out.count("Warning:") == int(above)


@pytest.mark.parametrize("load, clean", [(3.0, True), (10.0, True), (42.0, False), (None, False)])
def test_the_run_is_called_clean_only_at_most_10_percent_other_load(chosen_machine, capsys, load, clean):
    chosen_machine.setattr(suite, "LoadMonitor", lambda: FixedLoad(load))
    document, out = run_chosen(capsys, configs="seed")
    assert document["machine"]["other_load_pct"] == load and document["machine"]["clean"] is clean
    if load is None:
        assert "NOT a clean run: the load of other processes could not be read" in out
    elif clean:
        assert f"clean run (other processes used {load:.1f}% of the CPUs)" in out and "NOT" not in out
    else:
        assert "NOT a clean run: other processes used 42.0% of the CPUs (> 10%); ratios are indicative only" in out


def test_the_json_carries_the_ratios_measured_in_the_run(chosen_machine, capsys):
    document, _ = run_chosen(
        capsys, {("seed", "naive"): 2.0, ("seed", "manual"): 8.0, ("seed", "torch"): 0.5}, configs="seed"
    )
    rows = {row["impl"]: row for row in document["results"]}
    assert rows["manual"]["x_torch"] == pytest.approx(16.0) and rows["manual"]["x_naive"] == pytest.approx(4.0)
    assert rows["torch"]["x_torch"] == pytest.approx(1.0) and rows["naive"]["x_torch"] == pytest.approx(4.0)


def write_proc(root: Path, cpus: dict, processes: dict) -> None:
    """A fake /proc: ``cpus`` {index: (busy, idle)} ticks; ``processes`` {pid: (ppid, comm, utime, cutime)}."""
    lines = ["cpu  1 2 3 4 5 6 7 8 0 0"]  # the all-CPU line, which must be ignored
    for index, (busy, idle) in cpus.items():
        lines.append(f"cpu{index} {busy - 3} 1 1 {idle} 0 0 0 1 0 0")  # user nice system idle iowait irq softirq steal
    (root / "stat").write_text("\n".join(lines) + "\nintr 5 0 0\n\nctxt 9\n")
    for pid, (ppid, comm, utime, cutime) in processes.items():
        (root / str(pid)).mkdir(exist_ok=True)
        (root / str(pid) / "stat").write_text(f"{pid} ({comm}) S {ppid} 1 1 0 -1 0 0 0 0 0 {utime} 0 {cutime} 0 20 0\n")


def test_the_load_monitor_counts_other_processes_on_this_process_cpus(tmp_path):
    # this process (100), its child 101 (a name with spaces and parentheses) and grandchild 102; 200 is another's
    processes = {100: (1, "py", 500, 0), 101: (100, "a (b) c", 40, 0), 102: (101, "cc", 7, 0), 200: (1, "sh", 9, 0)}
    write_proc(tmp_path, {0: (1000, 5000), 1: (2000, 4000), 2: (0, 0)}, processes)
    monitor = LoadMonitor(proc=tmp_path, pid=100, cpus={0, 1}).start()
    # over the run: cpu0 and cpu1 tick 1000 times, 600 of them busy; this tree uses 300 (self 200, child 50 of
    # which its finished child's 20, grandchild 50); cpu2, which this process may not use, is busy throughout
    processes.update(
        {100: (1, "py", 700, 0), 101: (100, "a (b) c", 70, 20), 102: (101, "cc", 57, 0), 200: (1, "sh", 99, 0)}
    )
    write_proc(tmp_path, {0: (1400, 5100), 1: (2200, 4300), 2: (1000, 0)}, processes)
    assert monitor.other_load_pct() == pytest.approx(30.0)  # (600 - 300) / 1000
    assert report.load_verdict(monitor.other_load_pct()) == (
        False,
        "NOT a clean run: other processes used 30.0% of the CPUs (> 10%); ratios are indicative only",
    )


def test_the_load_monitor_says_none_without_proc(tmp_path):
    assert LoadMonitor(proc=tmp_path / "missing", pid=1, cpus=None).start().other_load_pct() is None


def test_bench_second_order_times_the_configs_asked_for_and_says_which_targets_it_meets(capsys):
    from compare.bench import main

    assert main(["--second-order", "--configs", "seed", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n| H ") == 1 and "\n| H 100, B 1, T 25 | " in out  # the large configuration left out
    verdict = (
        r"^H 100, B 1, T 25: the hand-written H v costs \d+\.\d\dx its gradient \(target at most 3x: (met|missed)\)"
    )
    assert re.search(verdict + r"; autograd's H v costs \d+\.\d\dx the hand-written one", out, flags=re.M), out


def test_bench_second_order_refuses_an_unknown_config_in_one_line(capsys):
    from compare.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--second-order", "--configs", "seed,huge"])
    err = capsys.readouterr().err
    assert (
        exit_info.value.code == 2 and err.count("\n") == 1 and "--configs 'seed,huge': choose from seed, large" in err
    )


def test_bench_optimizers_trains_each_one_through_compare_train_and_tables_its_losses(tmp_path, monkeypatch, capsys):
    from compare.bench import main
    from compare.benchmarks.optimizers import RATES

    monkeypatch.chdir(tmp_path)  # whatever lands in the working directory lands here, and is checked below
    logdir, figure = tmp_path / "runs", tmp_path / "optimizers.png"
    args = ["--optimizers", "adagrad,rmsprop", "--steps", "12", "--logdir", str(logdir), "--out", str(figure)]
    assert main([*args, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("machine: ") and "load average" in out.splitlines()[0]
    assert "| optimizer | `--lr` | training loss, mean of steps 2 | 4 | 8 | 12 | validation loss at 12 |" in out
    rows = [line.split(" | ") for line in out.splitlines() if line.startswith(("| adagrad", "| rmsprop"))]
    assert [row[0][2:] for row in rows] == ["adagrad", "rmsprop"]  # one row per optimizer asked for, in its order
    for row in rows:
        assert float(row[1]) == RATES[row[0][2:]]
        losses, timings = [float(cell) for cell in row[2:7]], [float(cell.strip(" |")) for cell in row[7:]]
        assert all(0 < loss < 10 for loss in losses), row  # finite, in nats per character (ln 65 is 4.17)
        assert timings[0] > 0 and timings[1] >= 0, row
    assert sorted(path.name for path in logdir.iterdir()) == ["adagrad", "rmsprop"]  # the runs, kept for TensorBoard
    assert sorted(path.name for path in tmp_path.iterdir()) == ["optimizers.png", "runs"]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_optimizers_windows_end_at_a_sixth_a_third_two_thirds_and_all_of_the_steps():
    from compare.benchmarks.optimizers import windows

    assert windows(3000) == [(251, 500), (751, 1000), (1751, 2000), (2751, 3000)]
    assert windows(12) == [(2, 2), (4, 4), (8, 8), (12, 12)]


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--optimizers sgd", "--optimizers: unknown or empty ['sgd']; choose from"),
        ("--optimizers --steps 0", "--steps and --threads must be at least 1, got 0 and 1"),
        ("--optimizers --out /no/such/dir/o.png", "--out /no/such/dir/o.png: no such directory to write it in"),
        ("--optimizers --threads x", "argument --threads: invalid int value: 'x'"),
    ],
)
def test_bench_optimizers_refuses_bad_flags_in_one_line(flags, message, capsys):
    from compare.bench import main

    with pytest.raises(SystemExit) as exit_info:
        main(flags.split())
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err
