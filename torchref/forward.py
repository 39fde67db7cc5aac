"""Forward-mode autograd on the twin: the loss's directional derivative (``torch.func.jvp``) and the whole
gradient by forward mode (``torch.func.jacfwd``: one jvp per parameter entry, batched).

The function differentiated is ``CharRNN``'s own forward (the hand-rolled cells), called with the
parameters given as a dict (``torch.func.functional_call``), so forward mode sees exactly the graph
that reverse mode differentiates.

A chunk inside a stream: its carried-in state depends on the parameters through the chunks before it.
``influence0`` (d state0 / d theta, e.g. from the chunk before) makes that dependence part of the function:

    state0(theta) = state0 + influence0 . (theta - theta_0)

equal to state0 at theta_0 (the difference is exactly zero) with derivative influence0, so forward
mode carries it like RTRL does. Without influence0 the state is a constant: the truncated gradient.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch.func import functional_call, jacfwd, jvp

from torchref.model import CharRNN

Params = dict[str, torch.Tensor]


def loss_function(
    model: CharRNN,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    state0: torch.Tensor,
    influence0: Params | None = None,
    reduction: str = "mean",
) -> Callable[[Params], tuple[torch.Tensor, torch.Tensor]]:
    """theta -> (loss, state_T): the chunk's loss as a function of the parameters (a dict by name).

    inputs, targets: (B, T) long; state0: (L, P, B, H); influence0: {name: (L, P, B, H, *shape)} for
    any parameters the carried state depends on, or None (a constant state).
    """
    at = {name: param.detach() for name, param in model.named_parameters()}  # theta_0

    def loss_and_state(params: Params) -> tuple[torch.Tensor, torch.Tensor]:
        state = state0
        for name, M in (influence0 or {}).items():  # state0(theta) = state0 + M . (theta - theta_0)
            step = params[name] - at[name]
            state = state + torch.tensordot(M, step, dims=step.dim())
        logits, state_last = functional_call(model, params, (inputs, state))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), reduction=reduction)
        return loss, state_last

    return loss_and_state


def directional_derivative(
    function: Callable[[Params], tuple[torch.Tensor, torch.Tensor]], params: Params, direction: Params
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, dL/dtheta . v) by one forward-mode pass (``torch.func.jvp``); direction v: a tensor per parameter."""
    outputs, tangents = jvp(function, (params,), (direction,))[:2]  # ((loss, state_T), their tangents along v)
    return outputs[0], tangents[0]


def forward_gradient(
    function: Callable[[Params], tuple[torch.Tensor, torch.Tensor]], params: Params
) -> tuple[Params, Params]:
    """dL/dtheta and d state_T / d theta, every entry by forward mode (``torch.func.jacfwd``).

    Returns (grads {name: shape}, influence {name: (L, P, B, H, *shape)}): the second is the next chunk's influence0.
    """
    d_loss, d_state = jacfwd(function)(params)
    return d_loss, d_state


def params_of(model: CharRNN) -> Params:
    """The model's parameters as a plain dict of detached tensors, the point forward mode differentiates at."""
    return {name: param.detach() for name, param in model.named_parameters()}
