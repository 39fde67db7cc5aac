"""The benchmarks' denormal mode reaches NumPy's BLAS worker threads, not only the thread that sets it.

A product A @ I with A all denormal: where every thread that computes flushes denormals (DAZ reads them
as zero), every entry of the result is 0; a thread in IEEE mode copies its share of A through.
"""

from __future__ import annotations

import numpy as np
import pytest
from threadpoolctl import threadpool_info, threadpool_limits

from compare.benchmarks.denormals import restart_openblas_threads, set_flush_denormal

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

SIZE = 512  # large enough that OpenBLAS splits the product between its threads
DENORMAL = np.float32(1e-40)  # below float32's smallest normal, 1.18e-38


def openblas_threads() -> int:
    return max((lib["num_threads"] for lib in threadpool_info() if lib["internal_api"] == "openblas"), default=0)


def product_of_denormals() -> np.ndarray:
    """A @ I, A (SIZE, SIZE) all DENORMAL, on two BLAS threads."""
    with threadpool_limits(limits=2):
        return np.full((SIZE, SIZE), DENORMAL) @ np.eye(SIZE, dtype=np.float32)


@pytest.mark.skipif(openblas_threads() < 2, reason="NumPy's BLAS is not OpenBLAS on 2 threads here")
def test_every_blas_thread_flushes_and_then_returns_to_ieee() -> None:
    try:
        set_flush_denormal(True)
        flushed = product_of_denormals()
    finally:
        set_flush_denormal(False)
    assert np.count_nonzero(flushed) == 0, f"{np.count_nonzero(flushed)} of {flushed.size} entries not flushed"
    # and IEEE mode again in every thread afterwards: the product copies A through
    np.testing.assert_array_equal(product_of_denormals(), np.full((SIZE, SIZE), DENORMAL))


@pytest.mark.skipif(openblas_threads() < 2, reason="NumPy's BLAS is not OpenBLAS on 2 threads here")
def test_restarted_threads_compute_what_one_thread_does() -> None:
    threads_before = openblas_threads()
    assert restart_openblas_threads() >= 1
    assert openblas_threads() == threads_before
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((2, SIZE, SIZE))
    with threadpool_limits(limits=1):
        one_thread = a @ b
    with threadpool_limits(limits=2):
        two_threads = a @ b
    # tolerance zero: OpenBLAS splits the output between its threads, never an inner sum
    np.testing.assert_array_equal(two_threads, one_thread)
