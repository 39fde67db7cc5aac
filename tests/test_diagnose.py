"""Proof that gradcheck --diagnose is right: planted bugs in the example cell and the three built-in ones,
each diagnosed with the right verdict, parameter, gate, path and first bad time step.

Sizes: V 6, H 4, B 3, T 5, float64 (tests/planted.py). The backward runs from step T = 5 down, so a bug
in a step's own derivatives shows first at step 5 (output path), one in the carried gradient at step 4.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from planted import Sizes, broken_backward, broken_cell, small_problem

from compare.gradients.diagnose import diagnose

ROOT = Path(__file__).resolve().parents[1]
MGU = "compare.examples.mgu"
T = Sizes().steps
ALL_GATES = {"rnn": ["a"], "lstm": ["i", "f", "g", "o"], "gru": ["r", "z", "n"], MGU: ["f", "n"]}
PARTS = {"rnn": 1, "lstm": 2, "gru": 1, MGU: 1}

# name -> (cell, correct fragment, slip, layers, expected layer, first bad step, path, gates wrong there)
CELL_BUGS = {
    "mgu: f's sigmoid' dropped": (MGU, "d_f * f * (1 - f)", "d_f * f", 1, 1, T, "output", ["f"]),
    "lstm: o's sigmoid' half dropped": ("lstm", "d_o[t] *= o[t]", "d_o[t] *= 1", 1, 1, T, "output", ["o"]),
    "gru: r's sigmoid' half dropped, 2 layers": (
        "gru",
        "np.subtract(1, gates[t, :, : 2 * size], out=factor)",
        "np.subtract(1, gates[t, :, : 2 * size], out=factor); factor[:, :size] = 1",
        2,
        2,
        T,
        "output",
        ["r"],
    ),
    "rnn: tanh' dropped": (
        "rnn",
        "np.multiply(d_h, tanh_grad[t], out=d_x_proj[t])",
        "np.copyto(d_x_proj[t], d_h)",
        1,
        1,
        T,
        "output",
        ["a"],
    ),
    "rnn: W transposed in the carry": (
        "rnn",
        "np.dot(d_x_proj[t], cache.W)",
        "np.dot(d_x_proj[t], cache.W.T)",
        1,
        1,
        T - 1,
        "recurrent",
        ["a"],
    ),
    "mgu: W_f transposed in the carry": (
        MGU,
        "d_f_pre @ W_f\n",
        "d_f_pre @ W_f.T\n",
        1,
        1,
        T - 1,
        "recurrent",
        ["f", "n"],
    ),
    "lstm: cell-state carry dropped": (
        "lstm",
        "np.multiply(d_s, f[t], out=d_s_next)",
        "np.multiply(d_s, 0 * f[t], out=d_s_next)",
        1,
        1,
        T - 1,
        "recurrent",
        ["i", "f", "g"],
    ),
    "gru: direct z carry dropped, 2 layers": (
        "gru",
        "d_h_next += d_h * z[t]",
        "d_h_next += 0 * z[t]",
        2,
        2,
        T - 1,
        "recurrent",
        ["r", "z", "n"],
    ),
    "rnn: the carry dropped": (
        "rnn",
        "d_h = d_hidden[t] + d_h_next",
        "d_h = d_hidden[t]",
        1,
        1,
        T - 1,
        "recurrent",
        ["a"],
    ),
    "mgu: direct carry dropped": (MGU, "d_h * (1 - f) + d_gated", "d_gated", 1, 1, T - 1, "recurrent", ["f", "n"]),
    "lstm: h's carry not added": (
        "lstm",
        "np.add(d_hidden[t], d_h_next, out=d_h)",
        "np.copyto(d_h, d_hidden[t])",
        1,
        1,
        T - 1,
        "recurrent",
        ["i", "f", "g", "o"],
    ),
    "gru: the carry not added, 2 layers": (
        "gru",
        "np.add(d_hidden[t], d_h_next, out=d_h)",
        "np.copyto(d_h, d_hidden[t])",
        2,
        2,
        T - 1,
        "recurrent",
        ["r", "z", "n"],
    ),
}
OUTPUT = {"d_x_proj": T, "d_h": T - 1, "d_carry (h)": T - 1}  # a step's own derivative: wrong from T, carried on
# name -> (the first wrong per-step quantity, the first bad step of every quantity that is wrong)
QUANTITIES = {
    "mgu: f's sigmoid' dropped": ("d_x_proj", OUTPUT),
    "lstm: o's sigmoid' half dropped": ("d_x_proj", {**OUTPUT, "d_carry (s)": T - 2}),  # s_{T-1} gets ds_T f_T, via h_T
    "gru: r's sigmoid' half dropped, 2 layers": ("d_x_proj", OUTPUT),
    "rnn: tanh' dropped": ("d_x_proj", OUTPUT),
    "rnn: W transposed in the carry": ("d_carry (h)", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 1}),
    "mgu: W_f transposed in the carry": ("d_carry (h)", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 1}),
    "lstm: cell-state carry dropped": (
        "d_carry (s)",
        {"d_x_proj": T - 1, "d_h": T - 2, "d_carry (h)": T - 2, "d_carry (s)": T - 1},  # h's carry right at T - 1
    ),
    "gru: direct z carry dropped, 2 layers": ("d_carry (h)", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 1}),
    "rnn: the carry dropped": ("d_h", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 2}),  # the carry is right
    "mgu: direct carry dropped": ("d_carry (h)", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 1}),
    "lstm: h's carry not added": ("d_h", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 2, "d_carry (s)": T - 2}),
    "gru: the carry not added, 2 layers": ("d_h", {"d_x_proj": T - 1, "d_h": T - 1, "d_carry (h)": T - 2}),
}
QUANTITY_WORDS = {  # what the diagnosis's last line says for each first wrong quantity
    "d_x_proj": f"dL/dh_{T} and the carried gradient agree with autograd at step {T}, dL/dx_proj_{T} does not",
    "d_h": f"the gradient carried back from step {T} into h_{T - 1} is right, but is not added into dL/dh_{T - 1}",
    "d_carry (h)": f"step {T}'s dL/dh and dL/dx_proj agree with autograd, but the gradient it carries back into "
    f"h_{T - 1} does not",
    "d_carry (s)": f"the gradient it carries back into s_{T - 1} does not",
}


@pytest.mark.exactness
@pytest.mark.parametrize("bug", list(CELL_BUGS))
def test_a_bug_in_the_recurrence_is_located(bug):
    cell, correct, slip, layers, layer, step, path, gates = CELL_BUGS[bug]
    diagnosis = diagnose(small_problem(broken_cell(cell, correct, slip), Sizes(layers=layers)))
    assert (diagnosis.verdict, diagnosis.layer, diagnosis.step, diagnosis.path) == ("backward", layer, step, path)
    assert diagnosis.gates == gates
    rows = len(ALL_GATES[cell]) + 1 + PARTS[cell]  # dL/dx_proj_t per gate, dL/dh_t, the carry of each state part
    assert diagnosis.heat is not None and diagnosis.heat.shape == (layers * rows, T)
    assert (diagnosis.heat[:, step:] < 1e-12).all()  # every later step (drawn to its right) is right to rounding
    suffix = "" if layer == 1 else str(layer)
    assert {"U" + suffix, "W" + suffix, "b" + suffix} <= set(diagnosis.blocks)  # the layer's gate rows are wrong
    assert "V" not in diagnosis.blocks and "c" not in diagnosis.blocks  # the output layer's gradients are right
    words = "\n".join(diagnosis.lines)
    assert f"layer {layer} of {layers}" in words and f"at step {step} of {T}" in words
    assert f"{path} path" in words
    quantity, first_bad = QUANTITIES[bug]
    assert (diagnosis.quantity, diagnosis.first_bad) == (quantity, first_bad)
    assert QUANTITY_WORDS[quantity] in diagnosis.lines[-1]


@pytest.mark.exactness
def test_a_dropped_cell_state_carry_is_named_as_such():
    cell, correct, slip, *_ = CELL_BUGS["lstm: cell-state carry dropped"]
    diagnosis = diagnose(small_problem(broken_cell(cell, correct, slip)))
    assert "Gate o still agrees at step 4" in "\n".join(diagnosis.lines)
    assert "The carry into h_4 agrees: it is the carry of s (the cell state) alone." in diagnosis.lines[-1]


@pytest.mark.exactness
def test_a_cell_without_trace_is_diagnosed_on_dx_proj_and_says_so(tmp_path):
    path = tmp_path / "softsign.py"
    path.write_text(SOFTSIGN_CELL.replace("d_h_next = d_x_proj[t] @ W", "d_h_next = d_x_proj[t] @ W.T"))
    diagnosis = diagnose(small_problem(str(path)))
    assert (diagnosis.verdict, diagnosis.step, diagnosis.path, diagnosis.quantity) == (
        "backward",
        T - 1,
        "recurrent",
        "d_x_proj",
    )
    assert not diagnosis.traced and diagnosis.first_bad == {"d_x_proj": T - 1}
    assert diagnosis.heat is not None and diagnosis.heat.shape == (1, T)  # dL/dx_proj_t only
    assert diagnosis.lines[-1] == (
        "This cell's recurrence_backward takes no trace, so dL/dh_t and the carried state's gradient are not "
        "compared per step: only dL/dx_proj_t (docs/cells.md#per-step-gradients-trace)."
    )


@pytest.mark.exactness
@pytest.mark.parametrize("cell", list(ALL_GATES))
def test_a_bias_gradient_summed_over_the_wrong_axis_is_in_the_summing(cell):
    # db summed over time only, and of stream 0: every per-step gradient is still right
    backward = broken_backward(
        'np.sum(d_x_proj_rows, axis=0, out=grads[names["b"]])', 'grads[names["b"]][...] = d_x_proj.sum(axis=0)[0]'
    )
    diagnosis = diagnose(small_problem(cell), backward)
    assert diagnosis.verdict == "summing" and diagnosis.step is None
    assert diagnosis.blocks == {"b": ALL_GATES[cell]}
    assert "the error is where b is summed" in diagnosis.lines[-1]


@pytest.mark.exactness
def test_a_wrong_dW_sum_in_a_cell_is_in_the_summing():
    slip = broken_cell("rnn", "@ cache.hidden[:-1].reshape(rows, size)", "@ cache.hidden[1:].reshape(rows, size)")
    diagnosis = diagnose(small_problem(slip))
    assert diagnosis.verdict == "summing" and list(diagnosis.blocks) == ["W"]


@pytest.mark.exactness
@pytest.mark.parametrize("cell", list(ALL_GATES))
def test_a_loss_scaled_by_T_is_a_correct_gradient_of_another_loss(cell):
    # the sum over time instead of the mean: every gradient T times autograd's
    summed_over_time = broken_backward("d_logits /= rows", "d_logits /= cache.targets.shape[1]")  # by B, not T*B
    diagnosis = diagnose(small_problem(cell), summed_over_time)
    assert diagnosis.verdict == "loss"
    assert diagnosis.ratio == pytest.approx(T, rel=1e-9)  # a ratio of float64 gradients: exact to rounding
    assert f"k = {T} = T, the chunk length" in diagnosis.lines[-1]


@pytest.mark.exactness
@pytest.mark.parametrize("cell, layers", [(cell, layers) for cell in ALL_GATES for layers in (1, 2)])
def test_a_right_backward_is_diagnosed_right(cell, layers):
    diagnosis = diagnose(small_problem(cell, Sizes(layers=layers)))
    assert diagnosis.verdict == "agree" and diagnosis.blocks == {} and diagnosis.step is None
    assert diagnosis.complex_usable
    assert diagnosis.heat is not None and diagnosis.heat.max() < 1e-12  # rounding only, in float64
    assert diagnosis.traced and len(diagnosis.heat) == layers * (len(ALL_GATES[cell]) + 1 + PARTS[cell])


@pytest.mark.exactness
def test_a_forward_that_disagrees_is_said_first():
    slip = broken_cell(
        "rnn", "np.dot(hidden[t], W_T), out=", "0.5 * np.dot(hidden[t], W_T), out=", function="recurrence_forward"
    )
    diagnosis = diagnose(small_problem(slip))
    assert (diagnosis.verdict, diagnosis.layer, diagnosis.step) == ("forward", 1, 1)  # the carried-in h_0 is not 0
    assert "the backward is not the problem" in diagnosis.lines[-1]


SOFTSIGN_CELL = '''
"""h_t = a_t / (1 + |a_t|): right backward, but |.| is not analytic, so the complex step cannot check it."""
import numpy as np
import torch

GATES = 1
STATE_PARTS = 1


def recurrence_forward(x_proj, W, state0):
    steps, streams, size = x_proj.shape
    pre = np.empty(x_proj.shape, dtype=np.result_type(x_proj, W, state0))
    hidden = np.empty((steps + 1, streams, size), dtype=pre.dtype)
    hidden[0] = state0[0]
    for t in range(steps):
        pre[t] = x_proj[t] + hidden[t] @ W.T
        hidden[t + 1] = pre[t] / (1 + np.abs(pre[t]))
    return hidden[1:], hidden[-1][None], (pre, hidden, W)


def recurrence_backward(d_hidden, cache):
    pre, hidden, W = cache
    d_x_proj = np.empty_like(pre)
    d_h_next = np.zeros_like(d_hidden[0])
    for t in reversed(range(len(pre))):
        d_x_proj[t] = (d_hidden[t] + d_h_next) / (1 + np.abs(pre[t])) ** 2
        d_h_next = d_x_proj[t] @ W
    size = W.shape[1]
    return d_x_proj, d_x_proj.reshape(-1, size).T @ hidden[:-1].reshape(-1, size)


def step(x_proj, W, state):
    a = x_proj + state[0] @ W.T
    h = a / (1 + a.abs())
    return h, h.unsqueeze(0)
'''


@pytest.mark.exactness
def test_a_forward_that_is_not_analytic_falls_back_to_centred_differences(tmp_path):
    path = tmp_path / "softsign.py"
    path.write_text(SOFTSIGN_CELL)
    diagnosis = diagnose(small_problem(str(path)))
    assert diagnosis.verdict == "agree" and not diagnosis.complex_usable
    words = "\n".join(diagnosis.lines)
    assert "the forward is not analytic" in words and "falling back to centred differences" in words
    assert "manual vs centred differences" in words


def run_gradcheck(*args: str) -> subprocess.CompletedProcess:
    small = ["--hidden-size", "4", "--seq-length", "5", "--batch-size", "2", "--init-scale", "50"]
    return subprocess.run(
        [sys.executable, "-m", "compare.gradcheck", "--diagnose", *small, *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_the_diagnosis_draws_the_heat_map_and_exits_1_on_a_bug(tmp_path):
    data = tmp_path / "small.txt"
    data.write_text("abcdef fed cab bead face dab ")
    broken = tmp_path / "my_mgu.py"
    broken.write_text((ROOT / "compare" / "examples" / "mgu.py").read_text().replace("d_f * f * (1 - f)", "d_f * f"))
    heatmap = tmp_path / "diagnosis.png"
    done = run_gradcheck("--cell", str(broken), "--data", str(data), "--heatmap", str(heatmap))
    assert done.returncode == 1, done.stderr
    assert "dL/dx_proj_t first differs from autograd at step 5 of 5" in done.stdout and "in gate f:" in done.stdout
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    right = run_gradcheck("--cell", MGU, "--data", str(data), "--heatmap", str(heatmap))
    assert right.returncode == 0 and "the backward is right" in right.stdout


@pytest.mark.exactness
def test_a_forward_that_fails_in_complex128_falls_back_to_centred_differences(tmp_path):
    # a ReLU written with np.heaviside, which has no complex loop: the complex-step forward raises
    relu = (
        SOFTSIGN_CELL.replace("pre[t] / (1 + np.abs(pre[t]))", "pre[t] * np.heaviside(pre[t], 0)")
        .replace("/ (1 + np.abs(pre[t])) ** 2", "* np.heaviside(pre[t], 0)")
        .replace("a / (1 + a.abs())", "torch.relu(a)")
    )
    path = tmp_path / "relu.py"
    path.write_text(relu)
    diagnosis = diagnose(small_problem(str(path)))
    assert diagnosis.verdict == "agree" and not diagnosis.complex_usable
    assert "The complex128 forward fails (TypeError: ufunc 'heaviside' not supported" in diagnosis.lines[1]
    assert "manual vs centred differences" in diagnosis.lines[2]


@pytest.mark.exactness
def test_tiny_weights_do_not_make_an_analytic_forward_look_non_analytic():
    # gradcheck's own weights, N(0, 0.01^2): centred differences are then only ~1e-6 close, worse than
    # ORACLES_AGREE; the complex step still matches autograd to rounding, so it stays the oracle
    from compare.gradients.check import GradcheckSettings, build_problem
    from compare.gradients.oracles import ORACLES_AGREE, run_oracles, worst_error

    oracles = run_oracles(build_problem(GradcheckSettings(cell="lstm", hidden_size=5, seq_length=10)))
    assert worst_error(oracles.central, oracles.autograd) > ORACLES_AGREE  # the case this test is about
    assert oracles.complex is not None and worst_error(oracles.complex, oracles.autograd) < 1e-14
    assert oracles.complex_usable


@pytest.mark.parametrize(
    "args, says",
    [
        (["--sample", "3"], "--diagnose prints a diagnosis of every entry, not the table: leave out --sample"),
        (["--json", "x.json"], "--diagnose prints a diagnosis of every entry, not the table: leave out --json"),
        (["--heatmap", "/no/such/dir/x.png"], "--heatmap /no/such/dir/x.png: no such directory to write it in"),
    ],
)
def test_flags_that_do_not_go_with_diagnose_are_one_line_and_exit_2(args, says):
    done = run_gradcheck(*args)
    assert done.returncode == 2 and done.stderr == f"python -m compare.gradcheck: error: {says}\n"
