"""The training CLI end to end: event files read back with TensorBoard's own reader, and its flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_runs import train_argv

from compare.data.corpus import Vocab, split_train_val
from compare.model.checkpoint import load_checkpoint
from compare.model.engines import make_engine
from compare.training.config import TrainConfig, parse_args
from compare.training.loop import estimate_loss, validation_batches

SCALAR_TAGS = {"loss/train", "loss/smooth", "loss/val", "speed/chars_per_sec", "grad/global_norm"}
STEPS = 30


def run_train(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "compare.train", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def load_events(run_dir: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text("the cat sat on the mat. the dog sat on the log.\n" * 60)
    return path


@pytest.mark.parametrize("impl", ["manual", "torch", "both"])
def test_train_cli_writes_the_documented_tags(tmp_path, corpus, impl):
    text = corpus.read_text()
    _, val_tokens = split_train_val(Vocab.from_text(text).encode(text), TrainConfig.val_frac)  # the default
    result = run_train(
        "--impl",
        impl,
        "--data",
        str(corpus),
        "--max-steps",
        str(STEPS),
        "--batch-size",
        "2",
        "--seq-length",
        "8",
        "--hidden-size",
        "16",
        "--log-every",
        "10",
        "--eval-every",
        "15",
        "--sample-every",
        "15",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "cli",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert "run directory" in result.stdout

    impls = ["manual", "torch"] if impl == "both" else [impl]
    for name in impls:
        events = load_events(tmp_path / "cli" / name)
        tags = events.Tags()
        assert SCALAR_TAGS <= set(tags["scalars"])
        assert [e.step for e in events.Scalars("loss/train")] == [10, 20, 30]
        assert [e.step for e in events.Scalars("loss/val")] == [15, 30]
        # the last loss/val is the validation loss of the weights saved at that step, not any other number
        latest = load_checkpoint(tmp_path / "cli" / name / "latest.npz")
        assert latest.step == STEPS
        engine = make_engine(name, latest.engine.params, lr=0.1, clip=5.0, dtype=latest.config["dtype"])
        recomputed = estimate_loss(engine, validation_batches(val_tokens, 2, 8))
        assert events.Scalars("loss/val")[-1].value == pytest.approx(recomputed, rel=1e-6, abs=0)  # float32 storage
        assert any(tag.startswith("sample") for tag in tags["tensors"])  # add_text is stored as a tensor
        assert not any(tag.startswith("hparam/") for tag in tags["scalars"])  # HParams reads loss/*: no 1-point charts

    if impl == "both":
        both = load_events(tmp_path / "cli" / "both")
        assert {"chaos/loss", "chaos/max_abs_param", "agree/loss", "agree/grad_rel_max"} <= set(both.Tags()["scalars"])
        assert [e.step for e in both.Scalars("chaos/loss")] == list(range(1, STEPS + 1))
        assert [e.step for e in both.Scalars("agree/grad_rel_max")] == [10, 20, 30]  # --agree-every 10, and the last
        # log10: float32, 30 steps, the drift is rounding only, and so is the implementation error
        assert max(e.value for e in both.Scalars("chaos/max_abs_param")) < -3
        assert max(e.value for e in both.Scalars("agree/grad_rel_max")) < -4
    else:
        assert not (tmp_path / "cli" / "both").exists()


@pytest.mark.exactness
def test_float64_drift_is_rounding_only(tmp_path, corpus):
    result = run_train(
        "--impl",
        "both",
        "--dtype",
        "float64",
        "--data",
        str(corpus),
        "--max-steps",
        "20",
        "--batch-size",
        "2",
        "--seq-length",
        "8",
        "--hidden-size",
        "8",
        "--logdir",
        str(tmp_path),
        "--run-name",
        "f64",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    both = load_events(tmp_path / "f64" / "both")
    # log10. float64 rounding only: at H 8 and 20 steps AdaGrad's first update does not amplify it (docs/tolerances.md)
    assert max(e.value for e in both.Scalars("chaos/max_abs_param")) < -12
    assert max(e.value for e in both.Scalars("chaos/loss")) < -12


@pytest.mark.parametrize(
    "flag, value",
    [("--hidden-size", "0"), ("--lr", "-1"), ("--batch-size", "-2"), ("--val-frac", "1.5"), ("--clip", "-1")],
)
def test_bad_hyperparameters_exit_2_with_one_line(tmp_path, flag, value):
    result = run_train(flag, value, "--logdir", str(tmp_path), cwd=tmp_path)
    assert result.returncode == 2
    assert flag in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_device_cuda_is_refused_in_one_line_where_it_cannot_run(tmp_path, capsys, impl):
    import torch

    if impl == "torch" and torch.cuda.is_available():
        pytest.skip("this machine has a GPU: --device cuda is valid here")
    with pytest.raises(SystemExit) as exit_info:
        parse_args(train_argv(tmp_path, "gpu", impl=impl, device="cuda"))
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "--device cuda" in stderr, stderr


def test_help_documents_every_flag(tmp_path):
    result = run_train("--help", cwd=tmp_path)
    assert result.returncode == 0
    for flag in (
        "--impl",
        "--data",
        "--corpus",
        "--hidden-size",
        "--seq-length",
        "--batch-size",
        "--lr",
        "--clip",
        "--epochs",
        "--max-steps",
        "--seed",
        "--dtype",
        "--val-frac",
        "--log-every",
        "--eval-every",
        "--sample-every",
        "--logdir",
        "--run-name",
        "--threads",
    ):
        assert flag in result.stdout


def test_a_run_needing_more_memory_than_is_available_is_refused_before_any_weight(tmp_path, monkeypatch):
    from compare.cli.errors import UsageError
    from compare.training.loop import train

    monkeypatch.setattr("compare.model.init.available_memory", lambda: 50_000_000)  # 50 MB, whatever this machine has
    config = parse_args(train_argv(tmp_path, hidden_size=2048, num_layers=2))
    with pytest.raises(UsageError) as raised:
        train(config)
    assert str(raised.value) == (
        "training (--hidden-size 2048, --num-layers 2, vocabulary 28) needs at least 307 MB of memory (an estimate), "
        "more than the 50 MB this machine has available; lower --hidden-size, --num-layers, --batch-size or "
        "--seq-length, or keep fewer steps with --segment-length (checkpointed BPTT: docs/memory.md)"
    )
    assert not (tmp_path / "runs" / "run").exists()


@pytest.mark.parametrize(
    "command, argv, message",
    [
        ("train", ["--hidden-size", "100000"], "--hidden-size must be at most 65,536"),
        ("train", ["--seq-length", "10000000"], "--seq-length must be at most 1,000,000"),
        ("train", ["--batch-size", "10000000"], "--batch-size must be at most 1,000,000"),
        ("gradcheck", ["--num-layers", "2000"], "--num-layers must be at most 1,024"),
        ("gradflow", ["--seq-length", "10000000"], "--seq-length must be at most 1,000,000"),
        ("bench_cells", ["--hidden-size", "100000"], "--hidden-size must be at most 65,536"),
        ("bench", ["--peak-size", "100000000"], "--peak-size 100,000,000 needs at least"),
        ("sample", ["--length", "2000000"], "--length must be between 1 and 1,000,000"),
    ],
)
def test_every_size_flag_is_bounded_in_one_line_before_any_work(tmp_path, command, argv, message):
    result = subprocess.run(
        [sys.executable, "-m", f"compare.{command}", *argv], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert message in result.stderr
