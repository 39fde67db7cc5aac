"""AdaGrad written out by hand, in the operation order of ``torch.optim.Adagrad`` on the CPU.

With lr_decay = 0, weight_decay = 0 and initial_accumulator_value = 0:

    G_t     = G_{t-1} + g_t^2                              (element-wise, per parameter)
    theta_t = theta_{t-1} + (-lr * g_t) / (sqrt(G_t) + eps)

eps sits outside the square root, as in PyTorch (min-char-rnn put 1e-8 inside).

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
"""

from __future__ import annotations

import numpy as np


class Adagrad:
    """Updates a dict of NumPy parameters in place.

    params: the dict to update; lr: step size; eps: PyTorch's default 1e-10.
    ``accumulators`` holds G for each parameter name (same shapes as params).
    """

    def __init__(self, params: dict[str, np.ndarray], lr: float = 0.1, eps: float = 1e-10) -> None:
        self.params = params
        self.lr = lr
        self.eps = eps
        self.accumulators = {name: np.zeros_like(value) for name, value in params.items()}

    def step(self, grads: dict[str, np.ndarray]) -> None:
        """Apply one update with ``grads`` (a dict keyed like params)."""
        for name, grad in grads.items():
            accumulator = self.accumulators[name]
            accumulator += grad * grad  # G_t = G_{t-1} + g_t^2 (two roundings; torch's FMA rounds once)
            std = np.sqrt(accumulator) + self.eps  # sqrt(G_t) + eps
            self.params[name] += (-self.lr * grad) / std  # theta_t = theta_{t-1} + (-lr * g_t) / std, as addcdiv_
