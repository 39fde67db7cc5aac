"""AdaGrad with eps inside the square root (min-char-rnn's rule), as a small ``torch.optim.Adagrad``.

    G_t     = G_{t-1} + g_t^2                              (element-wise, per parameter)
    theta_t = theta_{t-1} + (-lr * g_t) / sqrt(G_t + eps)  min-char-rnn: ``np.sqrt(mem + 1e-8)``

``torch.optim.Adagrad`` adds eps outside the root, sqrt(G_t) + eps, and has no option for
inside. Its ``initial_accumulator_value`` gives the same rule in exact arithmetic (start G at
eps, set eps 0: sqrt(eps + sum g^2)), but not in floating point: eps is then added first and
every g^2 after it, where min-char-rnn adds eps last; and the accumulator would hold G + eps, so
a checkpoint's accumulators would mean something else for each implementation. So this class
keeps torch's optimizer and its state (``sum``, ``step``: what checkpoints read and write) and
replaces only the line that divides: torch's own ``addcmul_`` for G_t and ``addcdiv_`` for
theta_t, as in its single-tensor loop (``torch.optim.adagrad._single_tensor_adagrad``), with
``sqrt(G_t + eps)`` between them. lr_decay, weight_decay, maximize and sparse gradients are
not offered: the training step uses none of them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import overload

import torch


class AdagradEpsInside(torch.optim.Adagrad):
    """params: the parameters to update; lr: step size; eps: added to G inside the root (min-char-rnn: 1e-8)."""

    def __init__(self, params: Iterable[torch.nn.Parameter], lr: float = 0.1, eps: float = 1e-8) -> None:
        super().__init__(params, lr=lr, eps=eps)  # lr_decay 0, weight_decay 0, G_0 = 0: the state torch keeps

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad, state = param.grad, self.state[param]
                state["step"] += 1
                state["sum"].addcmul_(grad, grad, value=1)  # G_t = G_{t-1} + g_t^2, torch's own line
                std = state["sum"].add(group["eps"]).sqrt_()  # sqrt(G_t + eps)
                param.addcdiv_(grad, std, value=-group["lr"])  # theta_t = theta_{t-1} + (-lr * g_t) / std
        return loss
