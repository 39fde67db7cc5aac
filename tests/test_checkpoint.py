"""Checkpoints: one file format for both implementations, atomic writes, exact resume, Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace

import numpy as np
import pytest
import torch
from numpy.testing import assert_array_equal
from problems import CELLS_AND_LAYERS, random_params
from tiny_runs import PHRASE, train_argv

from compare.data.corpus import StreamBatches, Vocab
from compare.model.checkpoint import (
    Checkpoint,
    CheckpointError,
    RunProgress,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from compare.model.engines import make_engine
from compare.model.init import init_params
from compare.model.state import EngineState
from compare.train import main
from compare.training.config import TrainConfig, parse_args
from compare.training.loop import train

STATE_ARRAYS = ("params", "accumulators")


def small_checkpoint(step: int = 7, hidden: bool = True) -> Checkpoint:
    """A checkpoint of made-up numbers: V = 5, H = 3, B = 2."""
    rng = np.random.default_rng(step)
    params = random_params(vocab_size=5, hidden_size=3, seed=rng, weight_std=1.0)
    accumulators = {name: rng.random(value.shape) for name, value in params.items()}
    state = EngineState(params, accumulators, updates=step, hidden=rng.normal(size=(1, 1, 2, 3)) if hidden else None)
    return Checkpoint(
        impl="manual",
        step=step,
        vocab="abcde",
        data_sha256="0" * 64,
        config=asdict(TrainConfig(hidden_size=3, batch_size=2)),
        progress=RunProgress(smooth_loss=1.5, seconds=2.0, val_loss=1.25, best_val_loss=1.0),
        engine=state,
        torch_rng_state=rng.integers(0, 256, size=torch.get_rng_state().numel(), dtype=np.uint8),  # torch's size
    )


def assert_states_equal(first: EngineState, second: EngineState) -> None:
    """Bit for bit: a checkpoint stores float64, so nothing may be rounded on the way."""
    for kind in STATE_ARRAYS:
        for name in getattr(first, kind):
            assert_array_equal(getattr(first, kind)[name], getattr(second, kind)[name], err_msg=f"{kind}/{name}")
    assert first.updates == second.updates
    assert_array_equal(first.hidden, second.hidden)
    assert (first.moments is None) == (second.moments is None)  # Adam's first moments, where there are any
    for name in first.moments or {}:
        assert second.moments is not None
        assert_array_equal(first.moments[name], second.moments[name], err_msg=f"moments/{name}")
    assert first.damping == second.damping  # Hessian-free's lambda, where there is one


@pytest.mark.parametrize("hidden", [True, False], ids=["hidden", "no-hidden"])
def test_save_and_load_keep_every_field_bit_for_bit(tmp_path, hidden):
    original = small_checkpoint(hidden=hidden)
    save_checkpoint(tmp_path / "latest.npz", original)
    loaded = load_checkpoint(tmp_path / "latest.npz")
    assert_states_equal(original.engine, loaded.engine)
    assert_array_equal(original.torch_rng_state, loaded.torch_rng_state)
    for field in ("impl", "step", "vocab", "data_sha256", "config", "progress"):
        assert getattr(loaded, field) == getattr(original, field), field


@pytest.mark.parametrize("crash", [OSError("disk full"), KeyboardInterrupt()], ids=["OSError", "Ctrl-C"])
def test_a_crash_while_saving_leaves_the_previous_checkpoint(tmp_path, monkeypatch, crash):
    path = tmp_path / "latest.npz"
    save_checkpoint(path, small_checkpoint(step=1))

    def write_half_then_crash(file, **arrays):
        file.write(b"PK\x03\x04 the first bytes of a zip")
        raise crash

    monkeypatch.setattr(np, "savez", write_half_then_crash)
    with pytest.raises(type(crash)):
        save_checkpoint(path, small_checkpoint(step=2))
    assert load_checkpoint(path).step == 1
    assert list(tmp_path.iterdir()) == [path]  # the temporary file is gone too


def test_broken_or_foreign_files_are_refused_with_a_reason(tmp_path):
    save_checkpoint(tmp_path / "good.npz", small_checkpoint())
    data = (tmp_path / "good.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    (tmp_path / "text.npz").write_text("not a checkpoint")
    with np.load(tmp_path / "good.npz") as archive:
        arrays = dict(archive)
    arrays["header"] = np.frombuffer(bytes(arrays["header"]).replace(b'"version": 1', b'"version": 2'), np.uint8)
    np.savez(tmp_path / "future.npz", **arrays)
    for name, reason in [
        ("truncated", "not a readable"),
        ("text", "not a readable"),
        ("future", "version 2"),
        ("missing", "no such"),
    ]:
        with pytest.raises(CheckpointError, match=reason):
            load_checkpoint(tmp_path / f"{name}.npz")


def test_find_checkpoint_accepts_a_file_an_impl_directory_or_a_run_directory(tmp_path):
    run = tmp_path / "run"
    for impl in ("manual", "torch"):
        (run / impl).mkdir(parents=True)
    (run / "manual" / "latest.npz").touch()
    (run / "manual" / "best.npz").touch()
    assert find_checkpoint(run / "manual" / "best.npz") == run / "manual" / "best.npz"
    assert find_checkpoint(run / "manual") == run / "manual" / "latest.npz"
    assert find_checkpoint(run, "manual") == run / "manual" / "latest.npz"
    assert find_checkpoint(run, "torch") == run / "manual" / "latest.npz"  # falls back to the other implementation
    assert find_checkpoint(run, "manual", names=("best.npz", "latest.npz")) == run / "manual" / "best.npz"
    (run / "torch" / "latest.npz").touch()
    assert find_checkpoint(run, "torch") == run / "torch" / "latest.npz"
    with pytest.raises(CheckpointError, match="no latest.npz"):
        find_checkpoint(tmp_path)


def trained_engine(impl: str, batches: StreamBatches, params: dict, steps: int, optimizer: str = "adagrad"):
    engine = make_engine(impl, params, lr=0.1, clip=0.5, dtype="float64", optimizer=optimizer)
    engine.reset_hidden(batches.inputs.shape[0])
    for index in range(steps):
        engine.train_step(*batches.get_batch(index))
    return engine


@pytest.mark.exactness
@pytest.mark.parametrize("optimizer", ["adagrad", "rmsprop", "adam", "hf"])
@pytest.mark.parametrize(
    "writer, reader", [("manual", "torch"), ("torch", "manual"), ("manual", "manual"), ("torch", "torch")]
)
def test_a_checkpoint_continues_in_either_implementation(tmp_path, writer, reader, optimizer):
    vocab = Vocab.from_text(PHRASE)
    batches = StreamBatches(vocab.encode(PHRASE * 10), batch_size=2, seq_length=10)
    params = init_params(len(vocab), 16, seed=1)
    source = trained_engine(writer, batches, params, steps=5, optimizer=optimizer)
    checkpoint = replace(
        small_checkpoint(),
        vocab=vocab.chars,
        engine=source.export_state(),
        config=asdict(TrainConfig(hidden_size=16, batch_size=2, optimizer=optimizer)),
    )
    save_checkpoint(tmp_path / "latest.npz", checkpoint)

    target = make_engine(
        reader, init_params(len(vocab), 16, seed=2), lr=0.1, clip=0.5, dtype="float64", optimizer=optimizer
    )
    target.load_state(load_checkpoint(tmp_path / "latest.npz").engine)
    assert_states_equal(source.export_state(), target.export_state())
    assert target.export_state().updates == 5

    source_loss = source.train_step(*batches.get_batch(5)).loss
    target_loss = target.train_step(*batches.get_batch(5)).loss
    if writer == reader:
        assert target_loss == source_loss
    else:
        assert abs(target_loss - source_loss) < 1e-12  # float64, two summation orders: rounding only


def final_checkpoint(tmp_path, run_name: str, impl: str) -> Checkpoint:
    return load_checkpoint(tmp_path / "runs" / run_name / impl / "latest.npz")


@pytest.mark.exactness
@pytest.mark.parametrize("impl", ["manual", "torch", "both"])
def test_resumed_training_equals_uninterrupted_training(tmp_path, impl):
    # 80 steps in one go, or 40 + 40. Epochs are 42 steps: the resume point is mid-epoch
    # (the carried hidden state matters) and the second half crosses an epoch boundary.
    # 40 is a multiple of --eval-every, so both runs validate at the same steps.
    whole = train(parse_args(train_argv(tmp_path, "whole", impl=impl, max_steps=80)))
    first = train(parse_args(train_argv(tmp_path, "split", impl=impl, max_steps=40)))
    second = train(parse_args(["--resume", str(tmp_path / "runs" / "split"), "--max-steps", "80"]))
    assert second["steps"] == 80
    for name, result in whole["impls"].items():
        # Exactly equal, not close: the resumed run must do the very same arithmetic.
        assert first["impls"][name]["losses"] + second["impls"][name]["losses"] == result["losses"]
        uninterrupted, resumed = final_checkpoint(tmp_path, "whole", name), final_checkpoint(tmp_path, "split", name)
        assert_states_equal(uninterrupted.engine, resumed.engine)
        assert resumed.engine.updates == 80
        assert resumed.progress.smooth_loss == uninterrupted.progress.smooth_loss
        assert resumed.progress.val_loss == uninterrupted.progress.val_loss


@pytest.mark.exactness
@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a_resumed_rmsprop_or_adam_run_equals_one_that_never_stopped(tmp_path, optimizer, capsys):
    # As the test above: 60 steps in one go, or 40 + 20 across the epoch boundary at 42, both engines at once.
    flags = {"impl": "both", "optimizer": optimizer, "lr": 0.01}
    whole = train(parse_args(train_argv(tmp_path, "whole", max_steps=60, **flags)))
    first = train(parse_args(train_argv(tmp_path, "split", max_steps=40, **flags)))
    resumed_config = parse_args(["--resume", str(tmp_path / "runs" / "split"), "--max-steps", "60"])
    assert resumed_config.optimizer == optimizer
    second = train(resumed_config)
    for name, result in whole["impls"].items():
        # Exactly equal: the moments (and Adam's step count, which its bias correction reads) came back whole.
        assert first["impls"][name]["losses"] + second["impls"][name]["losses"] == result["losses"], name
        uninterrupted, resumed = final_checkpoint(tmp_path, "whole", name), final_checkpoint(tmp_path, "split", name)
        assert_states_equal(uninterrupted.engine, resumed.engine)
        assert resumed.engine.updates == 60

    capsys.readouterr()  # drop the progress bars
    with pytest.raises(SystemExit) as exit_info:  # the optimizer's state means nothing to another optimizer
        parse_args(["--resume", str(tmp_path / "runs" / "split"), "--optimizer", "adagrad"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and f"--optimizer adagrad (checkpoint: {optimizer})" in stderr, stderr


@pytest.mark.exactness
def test_a_resumed_hf_run_equals_one_that_never_stopped(tmp_path):
    # 12 steps in one go, or 7 + 5 across the epoch boundary at 4 and 8: lambda must come back exactly
    flags = {"impl": "both", "optimizer": "hf", "batch_size": 8, "seq_length": 25, "eval_every": 4}
    whole = train(parse_args(train_argv(tmp_path, "whole", max_steps=12, **flags)))
    first = train(parse_args(train_argv(tmp_path, "split", max_steps=7, **flags)))
    second = train(parse_args(["--resume", str(tmp_path / "runs" / "split"), "--max-steps", "12"]))
    for name, result in whole["impls"].items():
        assert first["impls"][name]["losses"] + second["impls"][name]["losses"] == result["losses"], name
        uninterrupted, resumed = final_checkpoint(tmp_path, "whole", name), final_checkpoint(tmp_path, "split", name)
        assert_states_equal(uninterrupted.engine, resumed.engine)
        assert resumed.engine.damping is not None and resumed.engine.updates == 12


@pytest.mark.exactness
@pytest.mark.parametrize("schedule", ["step", "cosine"])
def test_a_resumed_run_keeps_its_learning_rate_schedule(tmp_path, schedule, capsys):
    # 2 epochs of 42 steps: the step schedule decays at 42 and the cosine runs to 0 at 84. 40 + 20 steps or 60 at once.
    flags = {"impl": "both", "lr_schedule": schedule, "lr_decay": 0.5, "epochs": 2}
    whole = train(parse_args(train_argv(tmp_path, "whole", max_steps=60, **flags)))
    first = train(parse_args(train_argv(tmp_path, "split", max_steps=40, **flags)))
    second = train(parse_args(["--resume", str(tmp_path / "runs" / "split"), "--max-steps", "60"]))
    for name, result in whole["impls"].items():
        # Exactly equal: the resumed engines replayed the schedule to the rate step 41 uses.
        assert first["impls"][name]["losses"] + second["impls"][name]["losses"] == result["losses"], name
        assert_states_equal(
            final_checkpoint(tmp_path, "whole", name).engine, final_checkpoint(tmp_path, "split", name).engine
        )

    capsys.readouterr()  # drop the progress bars
    more_epochs = ["--resume", str(tmp_path / "runs" / "split"), "--epochs", "3"]
    if schedule == "step":  # decays every epoch, however many there are
        assert parse_args(more_epochs).epochs == 3
        return
    with pytest.raises(SystemExit) as exit_info:  # the cosine's horizon is --epochs: other epochs, another schedule
        parse_args(more_epochs)
    assert exit_info.value.code == 2
    assert "--epochs 3 (checkpoint: 2)" in capsys.readouterr().err


@pytest.mark.exactness
def test_a_manual_checkpoint_resumes_in_torch_with_the_same_losses(tmp_path):
    whole = train(parse_args(train_argv(tmp_path, "whole", impl="manual", max_steps=60)))
    train(parse_args(train_argv(tmp_path, "split", impl="manual", max_steps=40)))
    resumed = train(
        parse_args(
            [
                "--resume",
                str(tmp_path / "runs" / "split" / "manual" / "latest.npz"),
                "--impl",
                "torch",
                "--max-steps",
                "60",
            ]
        )
    )
    np.testing.assert_allclose(
        resumed["impls"]["torch"]["losses"], whole["impls"]["manual"]["losses"][40:], rtol=0, atol=1e-12
    )  # float64, two summation orders over 20 steps: rounding only
    assert (tmp_path / "runs" / "split" / "torch" / "latest.npz").is_file()


@pytest.mark.exactness
@pytest.mark.parametrize("cell, num_layers", CELLS_AND_LAYERS)
def test_a_checkpoint_resumes_in_the_other_implementation(tmp_path, cell, num_layers):
    flags = {"cell": cell, "num_layers": num_layers}
    whole = train(parse_args(train_argv(tmp_path, "whole", impl="manual", max_steps=30, **flags)))
    train(parse_args(train_argv(tmp_path, "split", impl="manual", max_steps=20, **flags)))
    resumed = train(
        parse_args(
            [
                "--resume",
                str(tmp_path / "runs" / "split" / "manual" / "latest.npz"),
                "--impl",
                "torch",
                "--max-steps",
                "30",
            ]
        )
    )
    np.testing.assert_allclose(
        resumed["impls"]["torch"]["losses"], whole["impls"]["manual"]["losses"][20:], rtol=0, atol=1e-12
    )  # float64, two summation orders over 10 steps: rounding only


def test_resume_refuses_flags_that_change_the_model(tmp_path, capsys):
    train(parse_args(train_argv(tmp_path, max_steps=5)))
    capsys.readouterr()  # drop the progress bar
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--resume", str(tmp_path / "runs" / "run"), "--hidden-size", "32", "--max-steps", "10"])
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "--hidden-size 32 (checkpoint: 16)" in stderr, stderr


def test_resume_refuses_a_changed_training_text(tmp_path, capsys):
    train(parse_args(train_argv(tmp_path, max_steps=5)))
    other = tmp_path / "other.txt"
    other.write_text(PHRASE.upper() * 20)
    assert main(["--resume", str(tmp_path / "runs" / "run"), "--data", str(other), "--max-steps", "10"]) == 2
    assert "training text differs" in capsys.readouterr().err


@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_mid_run_leaves_a_loadable_checkpoint_and_event_file(tmp_path, signal_number):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    argv = train_argv(tmp_path, epochs=10**6, checkpoint_every=20)
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "compare.train", *argv], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr
        )
        latest = tmp_path / "runs" / "run" / "manual" / "latest.npz"
        deadline = time.monotonic() + 120
        while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        process.send_signal(signal_number)  # mid-run: the first periodic checkpoint exists
        exit_code = process.wait(timeout=120)
    message = stderr_path.read_text()
    assert exit_code == 128 + signal_number, message
    assert f"stopped by {signal.Signals(signal_number).name}" in message and "--resume" in message

    checkpoint = load_checkpoint(latest)
    assert checkpoint.step >= 20
    events = EventAccumulator(str(latest.parent))
    events.Reload()
    logged_steps = [event.step for event in events.Scalars("loss/train")]
    assert logged_steps == list(range(1, checkpoint.step + 1))  # --log-every 1: every step up to the save

    resumed = train(parse_args(["--resume", str(tmp_path / "runs" / "run"), "--max-steps", str(checkpoint.step + 3)]))
    assert len(resumed["impls"]["manual"]["losses"]) == 3
