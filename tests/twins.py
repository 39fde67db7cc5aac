"""Run one problem through both implementations and hand back comparable NumPy/torch values."""

from __future__ import annotations

import numpy as np
import torch

import manual
import torchref


def manual_loss_and_grads(problem):
    """(loss float, grads dict of float64 arrays) from the hand-written backward pass."""
    loss, cache = manual.forward(
        problem["params"], problem["inputs"], problem["targets"], problem["state0"], problem["cell"]
    )
    return float(loss), manual.backward(cache)


def torch_model(problem) -> torchref.CharRNN:
    return torchref.CharRNN(problem["params"], cell=problem["cell"], dtype=torch.float64)


def torch_loss_and_grads(problem):
    """(loss float, grads dict of float64 tensors) from autograd on the torch twin."""
    model = torch_model(problem)
    loss, _ = model.loss(
        torch.from_numpy(problem["inputs"]), torch.from_numpy(problem["targets"]), torch.from_numpy(problem["state0"])
    )
    loss.backward()
    return float(loss.detach()), {name: param.grad for name, param in model.named_parameters()}


def as_tensors(arrays: dict) -> dict:
    """NumPy dict -> torch dict, converted explicitly before any comparison."""
    return {name: torch.from_numpy(np.asarray(value)) for name, value in arrays.items()}
