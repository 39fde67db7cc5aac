"""Is the hand-written backward pass right? Three independent oracles, float64 throughout:
centred finite differences, torch.autograd on the torch twin, and PyTorch's own nn.RNN."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import manual
import torchref
from twins import as_tensors, manual_loss_and_grads, torch_loss_and_grads

PARAM_NAMES = ("U", "W", "V", "b", "c")


def relative_error(analytic, numeric, eps=1e-16):
    """The original write-up's measure: |ga - gn| / max(eps, |ga| + |gn|), element-wise."""
    return np.abs(analytic - numeric) / np.maximum(eps, np.abs(analytic) + np.abs(numeric))


def central_difference(problem, name, step):
    """dL/d(params[name]) by centred differences, one entry at a time."""
    params = {key: value.copy() for key, value in problem["params"].items()}
    grad = np.zeros_like(params[name])
    for index in np.ndindex(params[name].shape):
        original = params[name][index]
        losses = []
        for shift in (step, -step):
            params[name][index] = original + shift
            loss, _ = manual.forward(params, problem["inputs"], problem["targets"], problem["h0"])
            losses.append(loss)
        params[name][index] = original
        grad[index] = (losses[0] - losses[1]) / (2 * step)
    return grad


@pytest.mark.parametrize("name", PARAM_NAMES)
def test_manual_gradients_match_central_differences(problem, name):
    # Centred differences carry two errors: truncation ~ step^2 * f''' and rounding
    # ~ 1e-16 * |L| / step, both near 1e-11 in absolute terms at step 1e-5 (measured: the
    # worst entry is off by 4e-11). An entry whose gradient is itself ~1e-6 therefore
    # shows a relative error ~1e-5 with no bug at all, which is why the original write-up's
    # Table 1 reaches 1.87e-6. So: the original's relative error at the original's order
    # (1e-5), plus an absolute bound 25x above that error floor. A wrong term in backward
    # is off by the size of the gradient itself (~1e-2 here) and fails both.
    _, grads = manual_loss_and_grads(problem)
    numeric = central_difference(problem, name, step=1e-5)
    assert np.all(np.isfinite(numeric))
    worst = relative_error(grads[name], numeric).max()
    assert worst < 1e-5, f"d{name}: max relative error {worst:.3e}"
    worst_abs = np.abs(grads[name] - numeric).max()
    assert worst_abs < 1e-9, f"d{name}: max absolute error {worst_abs:.3e}"


def test_manual_gradients_equal_autograd(problem):
    # Same math, different summation order: float64 rounding differences stay near 1e-16
    # relative; rtol 1e-10 leaves room for the T-step recurrence to accumulate them.
    manual_loss, manual_grads = manual_loss_and_grads(problem)
    torch_loss, torch_grads = torch_loss_and_grads(problem)
    assert manual_loss == pytest.approx(torch_loss, rel=1e-12, abs=0)
    torch.testing.assert_close(as_tensors(manual_grads), torch_grads, rtol=1e-10, atol=1e-12)


def test_torch_model_passes_autograd_gradcheck(problem):
    model = torchref.CharRNN(problem["params"], dtype=torch.float64)
    inputs, targets, h0 = (torch.from_numpy(problem[key]) for key in ("inputs", "targets", "h0"))

    def loss_of(*tensors):
        logits, _ = torch.func.functional_call(model, dict(zip(PARAM_NAMES, tensors)), (inputs, h0))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    leaves = tuple(torch.from_numpy(problem["params"][name]).clone().requires_grad_() for name in PARAM_NAMES)
    # gradcheck's own defaults for float64 (eps 1e-6, atol 1e-5, rtol 1e-3), stated explicitly.
    assert torch.autograd.gradcheck(loss_of, leaves, eps=1e-6, atol=1e-5, rtol=1e-3)


def nn_rnn_oracle(problem):
    """PyTorch's own nn.RNN with weight_ih = U, weight_hh = W, bias_ih = b, bias_hh = 0.

    Returns hidden states (B, T, H) and the gradients of the same loss w.r.t. U, W, V, b, c.
    nn.RNN takes dense inputs, so x_t is fed as a real one-hot vector here.
    """
    params = as_tensors(problem["params"])
    vocab_size, hidden_size = params["V"].shape
    rnn = torch.nn.RNN(vocab_size, hidden_size, nonlinearity="tanh", batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        rnn.weight_ih_l0.copy_(params["U"])
        rnn.weight_hh_l0.copy_(params["W"])
        rnn.bias_ih_l0.copy_(params["b"])
        rnn.bias_hh_l0.zero_()
    V = params["V"].clone().requires_grad_()
    c = params["c"].clone().requires_grad_()
    one_hot = F.one_hot(torch.from_numpy(problem["inputs"]), vocab_size).double()  # (B, T, V)
    hidden, _ = rnn(one_hot, torch.from_numpy(problem["h0"]).unsqueeze(0))  # h0 (B, H) -> (1, B, H)
    logits = hidden @ V.T + c
    loss = F.cross_entropy(logits.reshape(-1, vocab_size), torch.from_numpy(problem["targets"]).reshape(-1))
    loss.backward()
    grads = {"U": rnn.weight_ih_l0.grad, "W": rnn.weight_hh_l0.grad, "V": V.grad, "b": rnn.bias_ih_l0.grad, "c": c.grad}
    return hidden.detach(), grads


def test_both_implementations_equal_torch_nn_rnn(problem):
    oracle_hidden, oracle_grads = nn_rnn_oracle(problem)
    _, cache = manual.forward(problem["params"], problem["inputs"], problem["targets"], problem["h0"])
    manual_hidden = torch.from_numpy(cache.hidden[1:].transpose(1, 0, 2))  # (T, B, H) -> (B, T, H)
    torch.testing.assert_close(manual_hidden, oracle_hidden, rtol=1e-12, atol=1e-14)

    _, manual_grads = manual_loss_and_grads(problem)
    _, torch_grads = torch_loss_and_grads(problem)
    # The bias_hh gradient equals bias_ih's, so b's gradient is compared once.
    torch.testing.assert_close(as_tensors(manual_grads), oracle_grads, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch_grads, oracle_grads, rtol=1e-10, atol=1e-12)


def test_gradient_check_has_teeth(problem):
    """A backward pass with one wrong factor must fail the same comparison."""
    _, grads = manual_loss_and_grads(problem)
    _, torch_grads = torch_loss_and_grads(problem)
    grads["W"] = grads["W"] * (1 + 1e-6)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(as_tensors(grads), torch_grads, rtol=1e-10, atol=1e-12)
