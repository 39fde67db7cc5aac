"""The in-place LSTM and GRU steps compute bit for bit what their plain form computes (tests/plain_cells.py).

Speed changes to the gated cells must leave every number exactly as it was (issue 17); a tolerance
here would let a reordered sum through, so the comparison is of the bytes: float32, float64 and
complex128 (the complex step runs the same code), batch 1 and batches whose gate rows are strided.
"""

from __future__ import annotations

import numpy as np
import pytest
from plain_cells import gru_backward, gru_forward, lstm_backward, lstm_forward

from manual import gru, lstm

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

PLAIN = {"lstm": (lstm, lstm_forward, lstm_backward), "gru": (gru, gru_forward, gru_backward)}


def random_chunk(cell, dtype, steps: int, streams: int, size: int, seed: int) -> tuple:
    """x_proj (T, B, G*H), W (G*H, H), state0 (P, B, H), d_hidden (T, B, H), large enough that every gate saturates
    somewhere and small enough that none is flat everywhere."""
    rng = np.random.default_rng(seed)

    def draw(*shape: int, scale: float) -> np.ndarray:
        values = rng.normal(0.0, scale, shape)
        if dtype == np.complex128:
            values = values + 1j * rng.normal(0.0, 1e-3 * scale, shape)
        return values.astype(dtype)

    gate_rows = cell.GATES * size
    return (
        draw(steps, streams, gate_rows, scale=2.0),
        draw(gate_rows, size, scale=0.7),
        draw(cell.STATE_PARTS, streams, size, scale=0.8),
        draw(steps, streams, size, scale=0.3),
    )


def assert_same_bytes(found: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert found.dtype == expected.dtype and found.shape == expected.shape, what
    assert found.tobytes() == expected.tobytes(), f"{what}: max |diff| {np.max(np.abs(found - expected)):.3g}"


@pytest.mark.parametrize("name", list(PLAIN))
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
@pytest.mark.parametrize("streams, size", [(1, 7), (3, 5), (4, 16)])
def test_the_in_place_cell_is_the_plain_cell_bit_for_bit(name, dtype, streams, size):
    cell, plain_forward, plain_backward = PLAIN[name]
    x_proj, W, state0, d_hidden = random_chunk(cell, dtype, steps=6, streams=streams, size=size, seed=streams * size)
    hidden, state_last, cache = cell.recurrence_forward(x_proj, W, state0)
    plain_hidden, plain_state_last, plain_cache = plain_forward(x_proj, W, state0)
    # forward pass went well
    assert_same_bytes(hidden, plain_hidden, "h_t")
    assert_same_bytes(state_last, plain_state_last, "state_T")
    assert_same_bytes(cache.gates, plain_cache.gates, "gates")
    # backward pass went well
    d_x_proj, d_W = cell.recurrence_backward(d_hidden, cache)
    plain_d_x_proj, plain_d_W = plain_backward(d_hidden, plain_cache)
    assert_same_bytes(d_x_proj, plain_d_x_proj, "dL/dx_proj_t")
    assert_same_bytes(d_W, plain_d_W, "dL/dW")
