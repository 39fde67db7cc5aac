"""Second order by autograd through the hand-rolled twin: H v by double backward, G v by a jvp and a vjp.

    H v = d/dtheta (dL/dtheta . v)            autograd.grad of the gradient, kept differentiable
                                              (create_graph=True), dotted with v
    G v = J^T H_L J v,  J = do/dtheta         J v: forward mode (torch.func.jvp) of the logits;
                                              H_L J v: forward mode of the loss's gradient in the logits;
                                              J^T: reverse mode (torch.func.vjp) of the logits

Through ``torchref.CharRNN``, whose cells are written out step by step: PyTorch's fused RNN kernels
do not offer double backward on every backend, this twin does (plain tensor operations). Imports
nothing from ``manual`` or ``compare``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from torchref.model import CharRNN


def hessian_vector_product(
    model: CharRNN,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state0: torch.Tensor,
    vector: dict[str, torch.Tensor],
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """H v of the model's loss at its parameters, by double backward.

    inputs, targets: (B, T) long; state0: (L, P, B, H); vector: v, keyed like the parameters.
    Returns H v keyed like the parameters (detached).
    """
    params = dict(model.named_parameters())
    loss, _ = model.loss(inputs, targets, state0, reduction)
    grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)  # dL/dtheta, differentiable
    grad_dot_v = sum((grad * vector[name]).sum() for name, grad in zip(params, grads, strict=True))
    assert isinstance(grad_dot_v, torch.Tensor)  # a sum over at least one parameter
    products = torch.autograd.grad(grad_dot_v, list(params.values()))  # d(g . v)/dtheta = H v
    return {name: product.detach() for name, product in zip(params, products, strict=True)}


def gauss_newton_vector_product(
    model: CharRNN,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state0: torch.Tensor,
    vector: dict[str, torch.Tensor],
    reduction: str = "mean",
) -> dict[str, torch.Tensor]:
    """G v = J^T H_L J v of the model's loss at its parameters, every factor from autograd.

    Arguments as ``hessian_vector_product``. Returns G v keyed like the parameters (detached).
    """
    names = [name for name, _ in model.named_parameters()]
    primals = tuple(param.detach() for param in model.parameters())
    tangents = tuple(vector[name] for name in names)
    logits_of = logits_function(model, names, inputs, state0)

    def loss_of_logits(logits: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.reshape(-1), reduction=reduction)

    # (without has_aux, jvp and vjp return pairs: [:2] says so to the type checker)
    logits, j_v = torch.func.jvp(logits_of, primals, tangents)[:2]  # o and J v
    h_j_v = torch.func.jvp(torch.func.grad(loss_of_logits), (logits,), (j_v,))[1]  # H_L J v
    pull_back = torch.func.vjp(logits_of, *primals)[1]
    products = pull_back(h_j_v)  # J^T H_L J v
    return {name: product.detach() for name, product in zip(names, products, strict=True)}


def logits_function(
    model: CharRNN, names: list[str], inputs: torch.Tensor, state0: torch.Tensor
) -> Callable[..., torch.Tensor]:
    """The model's logits (B*T, V) as a function of its parameters, given positionally in ``names``' order."""

    def logits_of(*params: torch.Tensor) -> torch.Tensor:
        logits, _ = torch.func.functional_call(model, dict(zip(names, params, strict=True)), (inputs, state0))
        return logits.reshape(-1, logits.shape[-1])

    return logits_of
