"""The loss plot of real runs: the figure's lines are the event files' numbers, the PNG has the asked size."""

from __future__ import annotations

import shutil
import struct
from pathlib import Path

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tiny_runs import train_argv

from compare.plot import main
from compare.plotting.events import read_run
from compare.plotting.figure import COMPARISON_STYLES, draw_figure
from compare.training.config import parse_args
from compare.training.loop import train

STEPS = 30


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """{"both": a 30-step --impl both run, "torch": a run directory holding only its torch/ logs}."""
    directory = tmp_path_factory.mktemp("plot")
    train(parse_args(train_argv(directory, run_name="both", impl="both", max_steps=STEPS, eval_every=10)))
    both = directory / "runs" / "both"
    # What --impl torch writes is what --impl both writes to torch/: copying it saves a second run.
    shutil.copytree(both / "torch", directory / "runs" / "torch" / "torch")
    return {"both": both, "torch": directory / "runs" / "torch"}


def logged(directory: Path, tag: str):
    """(steps, values) of ``tag`` as TensorBoard itself reads them."""
    accumulator = EventAccumulator(str(directory), size_guidance={"scalars": 0})
    accumulator.Reload()
    events = accumulator.Scalars(tag)
    return [event.step for event in events], [event.value for event in events]


def png_size(path: Path):
    """(width, height) in pixels, from the PNG's IHDR chunk."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def lines_by_label(axes) -> dict:
    return {line.get_label(): line for line in axes.get_lines()}


def test_the_curves_are_what_the_event_files_hold(runs):
    curves = read_run(runs["both"])
    assert curves.run_name == "both"
    assert [impl.impl for impl in curves.impls] == ["manual", "torch"]
    for impl in curves.impls:
        assert (impl.smooth.steps, impl.smooth.values) == logged(runs["both"] / impl.impl, "loss/smooth")
        assert (impl.val.steps, impl.val.values) == logged(runs["both"] / impl.impl, "loss/val")
        assert impl.smooth.steps == list(range(1, STEPS + 1)) and impl.val.steps == [10, 20, 30]
    for tag in ("agree/grad_rel_max", "agree/loss", "chaos/max_abs_param"):
        assert (curves.comparison[tag].steps, curves.comparison[tag].values) == logged(runs["both"] / "both", tag)


def test_the_figure_draws_one_smooth_line_per_implementation_and_the_comparison(runs):
    curves = read_run(runs["both"])
    losses, comparison = draw_figure(curves, width=8, height=6, dpi=50).axes
    lines = lines_by_label(losses)
    smooth_lines = [label for label in lines if "smooth" in label]
    assert smooth_lines == ["manual: smooth training loss", "torch: smooth training loss"]
    for impl in curves.impls:
        smooth = lines[f"{impl.impl}: smooth training loss"]
        assert list(smooth.get_xdata()) == impl.smooth.steps and list(smooth.get_ydata()) == impl.smooth.values
        val = lines[f"{impl.impl}: validation loss"]
        assert list(val.get_xdata()) == impl.val.steps and list(val.get_ydata()) == impl.val.values
    assert "nats per character" in losses.get_ylabel()
    assert comparison.get_yscale() == "log"
    comparison_lines = lines_by_label(comparison)
    assert set(comparison_lines) == {COMPARISON_STYLES[tag]["label"] for tag in curves.comparison}
    for tag in ("agree/grad_rel_max", "agree/loss", "chaos/max_abs_param"):
        steps, values = logged(runs["both"] / "both", tag)
        # logged in log10 (an exact 0 a decade below float64's rounding), drawn as 10**value on a log scale
        drawn = [(step, 10.0**value) for step, value in zip(steps, values, strict=True)]
        line = comparison_lines[COMPARISON_STYLES[tag]["label"]]
        assert list(zip(line.get_xdata(), line.get_ydata(), strict=True)) == drawn, tag
    # float64 rounding: the parameter drift is tiny but never exactly 0 in this run, so every step has its point
    chaos = comparison_lines[COMPARISON_STYLES["chaos/max_abs_param"]["label"]]
    assert list(chaos.get_xdata()) == list(range(1, STEPS + 1))
    # the implementation error stays at float64 rounding while the trajectories drift (the figure's point)
    assert max(comparison_lines[COMPARISON_STYLES["agree/grad_rel_max"]["label"]].get_ydata()) < 1e-12


def test_a_single_implementation_run_has_one_panel_and_one_smooth_line(runs):
    figure = draw_figure(read_run(runs["torch"]), width=8, height=6, dpi=50)
    assert len(figure.axes) == 1
    assert [label for label in lines_by_label(figure.axes[0]) if "smooth" in label] == ["torch: smooth training loss"]


def test_cli_writes_a_png_of_the_asked_size(runs, tmp_path, capsys):
    out = tmp_path / "loss.png"
    assert main([str(runs["both"]), "--out", str(out), "--width", "6", "--height", "4", "--dpi", "50"]) == 0
    assert png_size(out) == (300, 200)
    assert main([str(runs["torch"])]) == 0  # default --out: RUN_DIR/loss.png, 8 x 6 inches at 100 dpi
    assert png_size(runs["torch"] / "loss.png") == (800, 600)


@pytest.mark.parametrize(
    "argv, message",
    [(["/no/such/run"], "no such run directory"), (["."], "no loss/smooth"), ([".", "--dpi", "0"], "--dpi")],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)  # "." is then an empty directory, not a run
    try:
        code = main(argv)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    stderr = capsys.readouterr().err
    assert message in stderr and len(stderr.strip().splitlines()) == 1
