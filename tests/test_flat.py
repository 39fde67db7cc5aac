"""manual.flat: the whole-buffer clip and update compute what the per-array ones do, and never miss an entry
that a caller replaced instead of writing in place (then the buffer no longer holds it)."""

from __future__ import annotations

import numpy as np
import pytest

import manual
from compare.model.engines import ManualEngine

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

SHAPES = {"U": (4, 6), "W": (4, 4), "V": (6, 4), "b": (4,), "c": (6,)}


def random_arrays(seed: int, scale: float = 1.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: rng.normal(0.0, scale, shape) for name, shape in SHAPES.items()}


def test_the_flat_update_is_the_per_array_update_bit_for_bit():
    params, grads = random_arrays(0), random_arrays(1)
    flat_params = manual.flat.FlatArrays.copy_of(params, np.float64)
    flat_grads = manual.flat.FlatArrays.copy_of(grads, np.float64)
    flat_grads["W"] = flat_grads["W"] * 3  # replaced, not written in place: only a per-array pass sees it
    grads["W"] = grads["W"] * 3
    flat_optimizer = manual.Adagrad(flat_params, lr=0.1)
    plain_optimizer = manual.Adagrad(params, lr=0.1)
    for _ in range(3):
        flat_optimizer.step(flat_grads)
        plain_optimizer.step(grads)
    for name in SHAPES:  # exact: the same operations on the same entries
        np.testing.assert_array_equal(flat_params[name], params[name], err_msg=name)
        np.testing.assert_array_equal(flat_optimizer.accumulators[name], plain_optimizer.accumulators[name])


def test_the_clip_sees_a_replaced_gradient(monkeypatch):
    engine = ManualEngine(random_arrays(2, scale=0.1), lr=0.1, clip=1.0, dtype="float64")
    engine.reset_hidden(2)
    correct_backward = manual.backward

    def backward_that_replaces_W(cache, out=None):
        grads = correct_backward(cache, out)
        grads["W"] = np.full_like(grads["W"], 50.0)  # every entry of W out of range, outside the buffer
        return grads

    monkeypatch.setattr(manual, "backward", backward_that_replaces_W)
    tokens = np.arange(10).reshape(2, 5) % 6
    stats = engine.train_step(tokens, tokens)
    assert stats.clipped >= 16  # all of W's 4 x 4 entries
