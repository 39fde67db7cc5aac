"""compare.bench --calls and its counter (compare.benchmarks.calls): what one training step executes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from compare.bench import main
from compare.benchmarks import baseline
from compare.benchmarks.baseline import BaselineEngine
from compare.benchmarks.calls import OperationCounts, count_operations
from compare.model.engines import ManualEngine
from compare.model.init import init_params

VOCAB, HIDDEN, BATCH, SEQ = 9, 8, 1, 6


def batch(seed: int = 0) -> tuple:
    tokens = np.random.default_rng(seed).integers(0, VOCAB, size=(BATCH, SEQ + 1))
    return tokens[:, :-1], tokens[:, 1:]


def counted_step(engine, warmup: int = 2) -> OperationCounts:
    """The counts of one step after ``warmup`` steps, on the same data each time."""
    engine.reset_hidden(BATCH)
    inputs, targets = batch()
    for _ in range(warmup):
        engine.train_step(inputs, targets)
    return count_operations(lambda: engine.train_step(inputs, targets))


def manual_engine(num_layers: int = 1, cell: str = "rnn") -> ManualEngine:
    return ManualEngine(init_params(VOCAB, HIDDEN, 0, cell, num_layers), 0.1, 5.0, "float32", cell)


@pytest.mark.parametrize("cell", ["rnn", "lstm"])
def test_the_counts_are_positive_and_the_same_for_the_same_step(cell):
    first, second = counted_step(manual_engine(cell=cell)), counted_step(manual_engine(cell=cell))
    assert first == second
    assert min(first.c_functions, first.c_callables, first.python_calls, first.operators) > 0
    assert first.operations == first.c_calls + first.python_calls + first.operators


def test_a_second_layer_is_more_of_every_count():
    one, two = counted_step(manual_engine(1)), counted_step(manual_engine(2))
    assert two.c_calls > one.c_calls and two.python_calls > one.python_calls and two.operators > one.operators


def test_each_added_call_and_operator_is_counted_exactly_once(monkeypatch):
    """One wrapper (1 Python call) around the loss adds a built-in, a ufunc and two operators."""
    plain = counted_step(BaselineEngine(init_params(VOCAB, HIDDEN, 0), 0.1, 5.0))
    original = baseline.softmax_cross_entropy

    def heavier(logits, targets):
        spare = np.empty(3)  # a built-in function: a 'c_call'
        np.add(spare, 1.0, out=spare)  # a ufunc called by name: no 'c_call', seen at its CALL opcode
        _ = (spare + spare)[0]  # two operators: BINARY_OP, BINARY_SUBSCR
        return original(logits, targets)

    monkeypatch.setattr(baseline, "softmax_cross_entropy", heavier)
    more = counted_step(BaselineEngine(init_params(VOCAB, HIDDEN, 0), 0.1, 5.0))
    assert (more.c_functions, more.c_callables) == (plain.c_functions + 1, plain.c_callables + 1)
    assert more.python_calls == plain.python_calls + 1
    assert more.operators == plain.operators + 2


def test_the_command_counts_baseline_and_every_cell(tmp_path, capsys):
    out = tmp_path / "calls.json"
    argv = [
        "--calls",
        "--hidden-size",
        str(HIDDEN),
        "--warmup",
        "1",
        "--steps",
        "1",
        "--repeats",
        "1",
        "--json",
        str(out),
    ]
    assert main(argv) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(row["impl"], row["cell"]) for row in rows] == [("baseline", "rnn")] + [
        ("manual", cell) for cell in ("rnn", "lstm", "gru")
    ]
    for row in rows:
        assert row["operations"] == row["c_calls"] + row["python_calls"] + row["operators"] > 0
        assert row["c_calls"] == row["c_functions"] + row["c_callables"] and row["us_per_step"] > 0
    assert "| baseline | rnn |" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flag, value", [("--cells", "tree"), ("--steps", "0"), ("--hidden-size", "-1"), ("--json", "/no/such/dir/x.json")]
)
def test_bad_calls_flags_are_one_line_and_exit_2(flag, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--calls", flag, value])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and flag in error
