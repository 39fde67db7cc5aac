"""AdaGrad written out by hand, in the operation order of ``torch.optim.Adagrad`` on the CPU.

With lr_decay = 0, weight_decay = 0 and initial_accumulator_value = 0:

    G_t     = G_{t-1} + g_t^2                              (element-wise, per parameter)
    theta_t = theta_{t-1} + (-lr * g_t) / (sqrt(G_t) + eps)    eps_placement='outside' (PyTorch's)
    theta_t = theta_{t-1} + (-lr * g_t) / sqrt(G_t + eps)      eps_placement='inside' (min-char-rnn's,
                                                               ``np.sqrt(mem + 1e-8)``)

The torch twin of 'inside' is ``torchref.AdagradEpsInside``: the same three lines, in torch.

How close to torch this is, in float64 (measured on torch 2.13.0+cpu, AVX512; the evidence is
in docs/tolerances.md), for both of torch's CPU paths (its default loop and foreach=True):

- theta: the last line of ``step`` is torch's ``param.addcdiv_(g, std, value=-lr)`` operation
  for operation: -lr * g rounded, then the quotient, then the sum. Given the same denominator
  the result is bit-identical.
- G_t: torch's ``addcmul_`` rounds G + g * g once (a fused multiply-add in its AVX2/AVX512
  kernels). NumPy has no fused multiply-add, so g * g is rounded first, and G_t can be one ulp
  off torch's (in up to a tenth of the entries, where g^2 is not small beside G).
- sqrt: NumPy's is IEEE's, correctly rounded. torch's float64 sqrt on this build is MKL's
  ``vdSqrt``, which returns the other neighbour of the exact root in about 1.3% of entries (at
  most 0.53 ulp from it). NumPy cannot reproduce that: sqrt(G_t) can be one ulp off as well.

So from the same state the parameters are bit-identical wherever the two denominators agree,
and elsewhere differ as torch's own division would on a denominator an ulp or two away. Over many
steps the accumulators drift apart by at most one ulp a step. ``tests/test_optimizer.py``
asserts each of these bounds.

When the parameters and the gradients are ``manual.flat.FlatArrays`` laid out alike, one step is
seven whole-buffer passes (into two scratch buffers) instead of seven passes per parameter: the
same operations entry by entry, so the same numbers, in a fifth of the calls.
"""

from __future__ import annotations

import numpy as np

from manual.flat import FlatArrays

EPS_PLACEMENTS = ("outside", "inside")  # of the square root


class Adagrad:
    """Updates a dict of NumPy parameters in place.

    params: the dict to update; lr: step size; eps: PyTorch's default 1e-10; eps_placement:
    'outside' (sqrt(G) + eps, PyTorch's) or 'inside' (sqrt(G + eps), min-char-rnn's).
    ``accumulators`` holds G for each parameter name (same shapes as params), without eps
    in either placement.
    """

    def __init__(
        self, params: dict[str, np.ndarray], lr: float = 0.1, eps: float = 1e-10, eps_placement: str = "outside"
    ) -> None:
        if eps_placement not in EPS_PLACEMENTS:
            raise ValueError(f"unknown eps placement {eps_placement!r}; choose from {EPS_PLACEMENTS}")
        self.params = params
        self.lr = lr
        self.eps = eps
        self.eps_inside = eps_placement == "inside"
        self.accumulators: dict[str, np.ndarray]
        if isinstance(params, FlatArrays):
            self.accumulators = params.zeros_like()
            self.scratch = (np.empty_like(params.buffer), np.empty_like(params.buffer))  # std and the step
        else:
            self.accumulators = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (a dict keyed like params)."""
        if isinstance(self.params, FlatArrays) and self.params.same_layout(grads):
            assert isinstance(grads, FlatArrays)  # same_layout said so
            self.step_buffers(grads.buffer)
            return
        for name, grad in grads.items():
            accumulator = self.accumulators[name]
            accumulator += grad * grad  # G_t = G_{t-1} + g_t^2 (two roundings; torch's FMA rounds once)
            if self.eps_inside:
                std = np.sqrt(accumulator + self.eps)  # sqrt(G_t + eps)
            else:
                std = np.sqrt(accumulator) + self.eps  # sqrt(G_t) + eps
            self.params[name] += (-self.lr * grad) / std  # theta_t = theta_{t-1} + (-lr * g_t) / std, as addcdiv_

    def step_buffers(self, grad: np.ndarray) -> None:
        """``step`` over whole flat buffers: grad (N,), laid out as the parameters' and accumulators' buffers."""
        assert isinstance(self.params, FlatArrays) and isinstance(self.accumulators, FlatArrays)
        accumulator, std, update = self.accumulators.buffer, *self.scratch
        np.multiply(grad, grad, out=update)
        accumulator += update  # G_t = G_{t-1} + g_t^2
        if self.eps_inside:
            np.add(accumulator, self.eps, out=std)
            np.sqrt(std, out=std)  # sqrt(G_t + eps)
        else:
            np.sqrt(accumulator, out=std)
            std += self.eps  # sqrt(G_t) + eps
        np.multiply(grad, -self.lr, out=update)
        update /= std
        self.params.buffer += update  # theta_t = theta_{t-1} + (-lr * g_t) / std
