"""--impl both through the real training loop: the implementation error apart from the chaos, and what
TensorBoard is given to show it (the comparison layout, the HParams table, run names, cadence)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.hparams import plugin_data_pb2
from tiny_runs import train_argv

import manual
from compare.model.checkpoint import load_checkpoint
from compare.training.agreement import log10_or_floor
from compare.training.config import parse_args
from compare.training.logger import HPARAMS, progress_postfix
from compare.training.loop import train

GRADIENT_NAMES = ("U", "W", "V", "b", "c")


def events(directory):
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    return accumulator


def logged(directory, tag: str) -> list[float]:
    return [event.value for event in events(directory).Scalars(tag)]


def train_both(directory, run_name: str, **flags):
    train(parse_args(train_argv(directory, run_name, impl="both", **flags)))
    return directory / "runs" / run_name


def without_flag(argv: list, flag: str) -> list:
    index = argv.index(flag)
    return argv[:index] + argv[index + 2 :]


@pytest.mark.exactness
def test_the_implementation_error_stays_at_rounding_while_the_trajectories_drift_apart(tmp_path):
    # H 100, as at the defaults: AdaGrad's first steps amplify the rounding of the tiny gradients
    run_dir = train_both(tmp_path, "h100", hidden_size=100, max_steps=60, agree_every=1)
    agree = logged(run_dir / "both", "agree/grad_rel_max")
    assert len(agree) == 60  # --agree-every 1: every step, before its update
    assert max(agree) <= -12  # log10; float64: the two compute the same gradient to rounding (target 1e-12 relative)
    assert max(logged(run_dir / "both", "agree/loss")) <= -12  # the same for the loss
    assert logged(run_dir / "both", "chaos/max_abs_param")[-1] > -6  # while the free-running weights part by 1e-6+


@pytest.mark.exactness
def test_a_planted_gradient_bug_shows_in_its_own_parameter_only(tmp_path, monkeypatch):
    """The measurement compares the hand-written gradient with autograd's, not a run with itself."""
    correct_backward = manual.backward

    def backward_with_a_bug(cache, out=None):
        grads = correct_backward(cache, out)
        grads["W"] *= 1 + 1e-7  # a relative error of 1e-7 in dW only (in place: the engine's flat buffer holds it)
        return grads

    monkeypatch.setattr(manual, "backward", backward_with_a_bug)
    run_dir = train_both(tmp_path, "bug", max_steps=20, agree_every=5)
    assert all(-7.5 < value < -6.5 for value in logged(run_dir / "both", "agree/grad_rel/W"))  # log10 of 1e-7
    for name in ("U", "V", "b", "c"):
        assert max(logged(run_dir / "both", f"agree/grad_rel/{name}")) <= -12, name  # float64 rounding
    assert max(logged(run_dir / "both", "agree/loss")) <= -12  # the forward pass has no bug


@pytest.mark.exactness
def test_measuring_leaves_both_trajectories_untouched(tmp_path):
    measured = train_both(tmp_path, "measured", max_steps=30, agree_every=1)
    unmeasured = train_both(tmp_path, "unmeasured", max_steps=30, agree_every=0)
    assert not (unmeasured / "both").exists() or "agree/loss" not in events(unmeasured / "both").Tags()["scalars"]
    for impl in ("manual", "torch"):
        # bit for bit: the probe copies the manual weights into a twin of its own and never writes back
        with_probe = load_checkpoint(measured / impl / "latest.npz").engine
        without = load_checkpoint(unmeasured / impl / "latest.npz").engine
        for name, value in without.params.items():
            assert np.array_equal(with_probe.params[name], value), (impl, name)
        assert np.array_equal(with_probe.hidden, without.hidden), impl


def test_validation_runs_about_ten_times_when_not_told(tmp_path):
    argv = without_flag(train_argv(tmp_path, "cadence", max_steps=84), "--eval-every")
    train(parse_args(argv))
    steps = [event.step for event in events(tmp_path / "runs" / "cadence" / "manual").Scalars("loss/val")]
    assert steps == [*range(8, 81, 8), 84]  # every 84 // 10 steps, and the last


def test_runs_without_a_name_get_short_numbered_names(tmp_path):
    for _ in range(2):
        train(parse_args(without_flag(train_argv(tmp_path, max_steps=2), "--run-name")))
    assert sorted(path.name for path in (tmp_path / "runs").iterdir()) == ["rnn-1", "rnn-2"]


def test_the_comparison_layout_and_the_hparams_table(tmp_path):
    run_dir = train_both(tmp_path, "board", max_steps=10)
    manual_events = events(run_dir / "manual")
    layout = layout_pb2.Layout.FromString(
        manual_events.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    )
    charts = {chart.title: list(chart.multiline.tag) for chart in layout.category[0].chart}
    assert list(charts.values()) == [
        ["loss/smooth"],
        ["loss/val"],
        ["agree/loss", "agree/grad_rel_max"],
        ["chaos/max_abs_param", "chaos/loss"],
    ]
    for impl in ("manual", "torch"):
        content = events(run_dir / impl).PluginTagToContent("hparams")
        start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
        settings = start.session_start_info.hparams
        assert set(settings) == {"impl", *HPARAMS}  # what tells runs apart, not paths, encodings or timeouts
        assert settings["impl"].string_value == impl and settings["hidden_size"].number_value == 16
        assert ("_hparams_/experiment" in content) == (impl == "manual")  # the columns: one run writes them
    content = events(run_dir / "manual").PluginTagToContent("hparams")
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    assert [info.name for info in experiment.hparam_infos] == ["impl", *HPARAMS]  # impl first: it names the row
    metric_tags = [metric.name.tag for metric in experiment.metric_infos]
    assert metric_tags == ["loss/smooth", "loss/val"]  # the logged curves themselves
    for impl in ("manual", "torch"):
        assert set(metric_tags) <= set(events(run_dir / impl).Tags()["scalars"])


def test_the_progress_bar_names_each_loss_and_counts_wall_time_speed():
    run = SimpleNamespace(
        config=SimpleNamespace(batch_size=4, seq_length=25),
        progress={"manual": SimpleNamespace(smooth_loss=2.0), "torch": SimpleNamespace(smooth_loss=2.25)},
    )
    # 100 steps of 4 x 25 characters since step 50 started, in 5 s of wall time: 100 * 100 / 5
    assert progress_postfix(run, step=150, start_step=50, wall_seconds=5.0) == (
        "loss manual 2.000, torch 2.250 | 2,000 chars/s"
    )


@pytest.mark.parametrize("value", ["-1", "x"])
def test_agree_every_must_be_a_count(tmp_path, value, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_args(train_argv(tmp_path, agree_every=value))
    assert exit_info.value.code == 2
    assert "--agree-every" in capsys.readouterr().err


@pytest.mark.exactness
def test_under_the_original_preset_the_summed_loss_is_what_is_compared(tmp_path, monkeypatch):
    """--preset original trains on the sum: the probe must compare that loss's gradients, not the mean's."""
    run_dir = train_both(tmp_path, "original", preset="original", max_steps=20, agree_every=1)
    assert max(logged(run_dir / "both", "agree/grad_rel_max")) <= -12  # float64 rounding, as for the mean
    correct_forward = manual.forward

    def forward_of_the_mean(params, inputs, targets, state0, cell="rnn", reduction="mean"):
        return correct_forward(params, inputs, targets, state0, cell)  # ignores the sum: a realistic slip

    monkeypatch.setattr(manual, "forward", forward_of_the_mean)
    slipped = train_both(tmp_path, "slipped", preset="original", max_steps=3, agree_every=1)
    assert min(logged(slipped / "both", "agree/loss")) > -1  # the sum is T*B = 20 times the mean: far apart


@pytest.mark.parametrize("dtype, floor", [("float32", -8.2), ("float64", -17.0)])
def test_an_exact_zero_is_logged_just_below_the_rounding_level(dtype, floor):
    # a decade below the unit roundoff (2^-24, 2^-53): under the rounding band, not a plunge to an arbitrary -20
    assert log10_or_floor(0.0, dtype) == pytest.approx(floor, abs=0.05)
    assert log10_or_floor(1e-3, dtype) == pytest.approx(-3.0, abs=1e-12)  # log10, float64 arithmetic
