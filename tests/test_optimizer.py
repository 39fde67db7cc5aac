"""The hand-written AdaGrad against torch.optim.Adagrad on one gradient sequence."""

from __future__ import annotations

import numpy as np
import torch
from problems import random_params
from twins import as_tensors

from manual import Adagrad


def test_manual_adagrad_equals_torch_adagrad():
    rng = np.random.default_rng(0)
    manual_params = random_params(vocab_size=7, hidden_size=5, seed=rng, weight_std=1.0)
    shapes = {name: value.shape for name, value in manual_params.items()}
    torch_params = {name: torch.nn.Parameter(torch.from_numpy(value.copy())) for name, value in manual_params.items()}
    manual_optimizer = Adagrad(manual_params, lr=0.1)
    torch_optimizer = torch.optim.Adagrad(torch_params.values(), lr=0.1)

    for step in range(30):
        # Gradients of very different sizes, some exactly zero, as unseen characters give.
        grads = {name: rng.normal(size=shape) * 10.0 ** rng.integers(-6, 2) for name, shape in shapes.items()}
        grads["U"][:, rng.integers(0, 7)] = 0.0
        manual_optimizer.step(grads)
        for name, param in torch_params.items():
            param.grad = torch.from_numpy(grads[name].copy())
        torch_optimizer.step()
        torch.testing.assert_close(
            as_tensors(manual_params),
            {k: v.detach() for k, v in torch_params.items()},
            rtol=1e-15,
            atol=1e-15,  # same formula, same operation order: a few ulps
            msg=lambda m, step=step: f"step {step}: {m}",
        )
    for name, param in torch_params.items():
        np.testing.assert_allclose(
            manual_optimizer.accumulators[name], torch_optimizer.state[param]["sum"].numpy(), rtol=1e-15, atol=0
        )  # a few ulps
