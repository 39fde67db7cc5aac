"""compare.benchmarks.baseline: the frozen f287690 vanilla step trains bit for bit as ManualEngine does.

At f287690 this proves the copy is today's code path; once ``manual`` is made faster, the same
test says whether its arithmetic is still exactly what it was (issue 17: "the gradients must
stay exactly what they are").
"""

from __future__ import annotations

import numpy as np
import pytest

from compare.benchmarks.baseline import BaselineEngine
from compare.model.engines import ManualEngine
from compare.model.init import init_params

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

VOCAB, HIDDEN, BATCH, STEPS, SEQ = 11, 16, 3, 5, 7


def batches(seed: int) -> list:
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, VOCAB, size=(STEPS, BATCH, SEQ + 1))
    return [(chunk[:, :-1], chunk[:, 1:]) for chunk in tokens]


@pytest.mark.parametrize("clip", [5.0, 0.002])  # 0.002: the clip changes entries in every step
def test_the_baseline_trains_bit_for_bit_as_manual_engine(clip):
    params = init_params(VOCAB, HIDDEN, 0, "rnn")
    manual, baseline = ManualEngine(params, 0.1, clip, "float32"), BaselineEngine(params, 0.1, clip)
    manual.reset_hidden(BATCH)
    baseline.reset_hidden(BATCH)
    clipped = 0
    for inputs, targets in batches(seed=3):
        expected, found = manual.train_step(inputs, targets), baseline.train_step(inputs, targets)
        # bit for bit (tolerance 0): the same float32 operations in the same order
        assert (found.loss, found.grad_norm, found.clipped) == (expected.loss, expected.grad_norm, expected.clipped)
        clipped += found.clipped
        np.testing.assert_array_equal(baseline.hidden, manual.hidden)
    assert (clipped > 0) == (clip < 1)  # the small clip really exercised the clipping branch
    for name, value in manual.params.items():
        assert baseline.params[name].dtype == value.dtype == np.float32
        np.testing.assert_array_equal(baseline.params[name], value, err_msg=name)
        np.testing.assert_array_equal(baseline.accumulators[name], manual.optimizer.accumulators[name], err_msg=name)
