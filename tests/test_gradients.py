"""Is the hand-written backward pass right? Three independent oracles, float64 throughout:
centred finite differences, torch.autograd on the torch twin, and PyTorch's own
nn.RNN / nn.LSTM / nn.GRU; for every cell, with 1 and 2 layers, B = 1 and B = 4.
Why each tolerance is what it is: docs/tolerances.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from planted import broken_backward
from problems import random_problem
from twins import as_tensors, manual_loss_and_grads, torch_loss_and_grads, torch_model

import manual

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability


def relative_error(analytic, numeric, eps=1e-16):
    """The original write-up's measure: |ga - gn| / max(eps, |ga| + |gn|), element-wise."""
    return np.abs(analytic - numeric) / np.maximum(eps, np.abs(analytic) + np.abs(numeric))


def central_difference(problem, name, step):
    """dL/d(params[name]) by the fourth-order centred difference, one entry at a time:

        f'(x) = [8 (f(x + h) - f(x - h)) - (f(x + 2h) - f(x - 2h))] / 12h + O(h^4)

    The pairs are subtracted first so that an entry the loss does not depend on (a column
    of U for a character not in the batch) gives exactly 0, as its analytic gradient does.
    """
    params = {key: value.copy() for key, value in problem["params"].items()}
    grad = np.zeros_like(params[name])
    for index in np.ndindex(params[name].shape):
        original = params[name][index]
        loss_at = {}
        for multiple in (-2, -1, 1, 2):
            params[name][index] = original + multiple * step
            loss_at[multiple], _ = manual.forward(
                params, problem["inputs"], problem["targets"], problem["state0"], problem["cell"]
            )
        params[name][index] = original
        grad[index] = (8 * (loss_at[1] - loss_at[-1]) - (loss_at[2] - loss_at[-2])) / (12 * step)
    return grad


def test_manual_gradients_match_central_differences(problem):
    _, grads = manual_loss_and_grads(problem)
    assert set(grads) == set(problem["params"])
    for name in problem["params"]:
        numeric = central_difference(problem, name, step=3e-4)  # fourth order: truncation and rounding ~1e-12
        assert np.all(np.isfinite(numeric))
        worst = relative_error(grads[name], numeric).max()
        assert worst < 1e-5, f"d{name}: max relative error {worst:.3e}"  # the write-up's measure and order
        worst_abs = np.abs(grads[name] - numeric).max()
        assert worst_abs < 1e-9, f"d{name}: max absolute error {worst_abs:.3e}"  # 50x the measured 1.8e-11


def test_manual_gradients_equal_autograd(problem):
    manual_loss, manual_grads = manual_loss_and_grads(problem)
    torch_loss, torch_grads = torch_loss_and_grads(problem)
    assert manual_loss == pytest.approx(torch_loss, rel=1e-12, abs=0)  # float64, two summation orders
    # float64 rounding (~1e-16 relative), room for the T = 6 step recurrence to accumulate it:
    torch.testing.assert_close(as_tensors(manual_grads), torch_grads, rtol=1e-10, atol=1e-12)


def test_torch_model_passes_autograd_gradcheck(problem):
    model = torch_model(problem)
    names = list(problem["params"])
    inputs, targets, state0 = (torch.from_numpy(problem[key]) for key in ("inputs", "targets", "state0"))

    def loss_of(*tensors):
        logits, _ = torch.func.functional_call(model, dict(zip(names, tensors, strict=True)), (inputs, state0))
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))

    leaves = tuple(torch.from_numpy(problem["params"][name]).clone().requires_grad_() for name in names)
    # The full Jacobian for the one-layer rnn (cheap); fast mode (a random projection v^T J u) for the rest.
    slow_mode = problem["cell"] == "rnn" and len(state0) == 1
    assert torch.autograd.gradcheck(
        loss_of,
        leaves,
        eps=1e-6,
        atol=1e-5,
        rtol=1e-3,  # gradcheck's float64 defaults
        fast_mode=not slow_mode,
    )


PYTORCH_MODULES = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}


def pytorch_module_oracle(problem):
    """PyTorch's own nn.RNN / nn.LSTM / nn.GRU with our weights mapped onto its own.

    Layer l: weight_ih_l{l} = U (U2, ...), weight_hh_l{l} = W, bias_ih_l{l} = b,
    bias_hh_l{l} = 0. The gate blocks are already in PyTorch's order (lstm i, f, g, o;
    gru r, z, n), and our GRU is PyTorch's variant (the reset gate scales W_n h), so the
    mapping is one to one. nn.* takes dense inputs, so x_t is fed as a real one-hot vector.
    Returns (top hidden states (B, T, H), final state (L, P, B, H), grads by our names).
    """
    params = as_tensors(problem["params"])
    vocab_size, hidden_size = params["V"].shape
    num_layers = sum(1 for name in params if name.startswith("W"))
    module = PYTORCH_MODULES[problem["cell"]](
        vocab_size, hidden_size, num_layers=num_layers, batch_first=True, dtype=torch.float64
    )
    ours = {}  # our parameter name -> the module's tensor that plays its part
    with torch.no_grad():
        for layer in range(num_layers):
            names = manual.layer_param_names(layer)
            for our_name, theirs in (
                ("U", f"weight_ih_l{layer}"),
                ("W", f"weight_hh_l{layer}"),
                ("b", f"bias_ih_l{layer}"),
            ):
                getattr(module, theirs).copy_(params[names[our_name]])
                ours[names[our_name]] = getattr(module, theirs)
            getattr(module, f"bias_hh_l{layer}").zero_()
    ours["V"] = params["V"].clone().requires_grad_()
    ours["c"] = params["c"].clone().requires_grad_()

    state0 = torch.from_numpy(problem["state0"])  # (L, P, B, H)
    initial = (state0[:, 0].contiguous(), state0[:, 1].contiguous()) if problem["cell"] == "lstm" else state0[:, 0]
    one_hot = F.one_hot(torch.from_numpy(problem["inputs"]), vocab_size).double()  # (B, T, V)
    hidden, final = module(one_hot, initial)
    final = torch.stack(final, dim=1) if problem["cell"] == "lstm" else final.unsqueeze(1)  # -> (L, P, B, H)
    logits = hidden @ ours["V"].T + ours["c"]
    loss = F.cross_entropy(logits.reshape(-1, vocab_size), torch.from_numpy(problem["targets"]).reshape(-1))
    loss.backward()
    return hidden.detach(), final.detach(), {name: tensor.grad for name, tensor in ours.items()}


def test_both_implementations_equal_pytorch_modules(problem):
    oracle_hidden, oracle_final, oracle_grads = pytorch_module_oracle(problem)
    _, cache = manual.forward(
        problem["params"], problem["inputs"], problem["targets"], problem["state0"], problem["cell"]
    )
    manual_hidden = torch.from_numpy(cache.top.transpose(1, 0, 2))  # (T, B, H) -> (B, T, H)
    # Forward values: float64 rounding of a T = 6 step recurrence, nothing more.
    torch.testing.assert_close(manual_hidden, oracle_hidden, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(torch.from_numpy(cache.state_last), oracle_final, rtol=1e-12, atol=1e-14)

    _, manual_grads = manual_loss_and_grads(problem)
    _, torch_grads = torch_loss_and_grads(problem)
    # bias_hh's gradient equals bias_ih's except in the GRU's n block, so b is compared once via bias_ih.
    # Gradients: the same bound as manual against autograd (float64 rounding over T = 6 steps).
    torch.testing.assert_close(as_tensors(manual_grads), oracle_grads, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(torch_grads, oracle_grads, rtol=1e-10, atol=1e-12)


def test_gradient_check_has_teeth(problem, monkeypatch):
    """A backward pass with a realistic slip must fail the same comparison, and point at its gradient.

    The slip: dU's one-hot built from the targets y_t instead of the inputs x_t (one word of
    manual.model.backward changed). Only U of the first layer reads that one-hot.
    """
    wrong_backward = broken_backward("cache.inputs.reshape(-1)", "cache.targets.reshape(-1)")
    monkeypatch.setattr(manual, "backward", wrong_backward)
    _, grads = manual_loss_and_grads(problem)
    _, torch_grads = torch_loss_and_grads(problem)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(as_tensors(grads), torch_grads, rtol=1e-10, atol=1e-12)  # the bound used above
    for name in grads:
        if name != "U":  # every other gradient is still right: the comparison names U
            torch.testing.assert_close(torch.from_numpy(grads[name]), torch_grads[name], rtol=1e-10, atol=1e-12)


def large_logits_problem():
    """A random float64 problem whose output bias puts the logits between about 100 and 1000.

    c = 1000 - 150 k for the k-th character: exp(1000) overflows float64, and the least likely
    characters (900 nats below the top) have a softmax probability that underflows to 0, so
    neither exp(o) / sum exp(o) nor log(softmax(o)) can give the loss; o - max(o) can.
    """
    problem = random_problem(vocab_size=7, hidden_size=5, batch_size=3, seq_length=6, seed=2)
    problem["params"]["c"] = 1000.0 - 150.0 * np.arange(7)
    problem["targets"][:, :3] = 6  # the least likely character, and the rest random
    return problem


def reference_loss(problem) -> float:
    """The mean cross-entropy from the equations, written out as a loop over time (one-layer rnn).

    log p_t[y] = o_t[y] - log sum_j exp(o_t[j]); every logit here is 1000 + d with d <= a few,
    so the sum is taken of exp(d), which cannot overflow: the reference shifts by a constant it
    knows, not by the row max the code under test computes.
    """
    params, inputs, targets = problem["params"], problem["inputs"], problem["targets"]
    h = problem["state0"][0, 0]  # (B, H)
    losses = []
    for t in range(inputs.shape[1]):
        h = np.tanh(params["b"] + h @ params["W"].T + params["U"][:, inputs[:, t]].T)  # h_t = tanh(b + W h + U x_t)
        shifted = params["c"] + h @ params["V"].T - 1000.0  # o_t - 1000
        log_sum = np.log(np.exp(shifted).sum(axis=1))
        losses.extend(log_sum - shifted[np.arange(len(h)), targets[:, t]])
    return float(np.mean(losses))


def test_logits_of_order_1000_give_a_finite_exact_loss_in_both_implementations():
    problem = large_logits_problem()
    expected = reference_loss(problem)
    assert 200 < expected < 1000  # the least likely character costs about 900 nats
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # not even a warning (underflow to 0 is right)
        manual_loss, manual_grads = manual_loss_and_grads(problem)
    torch_loss, torch_grads = torch_loss_and_grads(problem)
    # float64 rounding of logits near 1000 (ulp 1.1e-13), nothing more
    assert manual_loss == pytest.approx(expected, rel=1e-13, abs=0), "manual"
    assert torch_loss == pytest.approx(expected, rel=1e-13, abs=0), "torch"
    for name, grad in manual_grads.items():
        assert np.all(np.isfinite(grad)), name
    torch.testing.assert_close(as_tensors(manual_grads), torch_grads, rtol=1e-10, atol=1e-12)
