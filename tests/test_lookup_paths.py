"""The layer-1 lookup and its gradient each take one of two routes by size (manual.model): the lookup gathers
U's columns for few characters and rows of b + U^T for many; dU's scatter is one np.add.at for short rows and
a loop of row additions into dU^T for long ones. Every route must give, bit for bit, the numbers of the
definition written as a plain loop over the characters in row order.
"""

from __future__ import annotations

import numpy as np
import pytest

import manual.model

pytestmark = pytest.mark.exactness  # docs/tolerances.md: run under every BLAS kernel and CPU capability

VOCAB = 7
GATE_ROW_COUNTS = {"short-rows": 5, "long-rows": manual.model.ROW_SCATTER_MIN}
# rows (T*B) below the vocabulary take the column route, at or above it the row route
ROW_COUNTS = {"few-characters": 3, "as-many-as-V": VOCAB, "many-characters": 40}


def plain_lookup(U: np.ndarray, b: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """x_proj_r = U[:, x_r] + b, one character at a time."""
    return np.stack([U[:, token] + b for token in tokens])


def plain_scatter(d_x_proj_rows: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """dU[:, x_r] += dx_proj_r for r = 0, 1, ...: the sum in row order."""
    d_U = np.zeros((d_x_proj_rows.shape[1], VOCAB), dtype=d_x_proj_rows.dtype)
    for row, token in zip(d_x_proj_rows, tokens, strict=True):
        d_U[:, token] += row
    return d_U


def awkward_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """Magnitudes from 1e-6 to 1e3 and some negative zeros: sums whose rounding depends on their order."""
    values = rng.standard_normal(shape) * 10.0 ** rng.integers(-6, 4, shape)
    values[rng.random(shape) < 0.1] = -0.0
    return values.astype(dtype)


@pytest.mark.parametrize("rows", ROW_COUNTS.values(), ids=ROW_COUNTS.keys())
@pytest.mark.parametrize("gate_rows", GATE_ROW_COUNTS.values(), ids=GATE_ROW_COUNTS.keys())
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_every_route_equals_the_plain_loop_bit_for_bit(rows: int, gate_rows: int, dtype: type) -> None:
    rng = np.random.default_rng(rows)
    tokens = rng.integers(0, VOCAB, rows)
    tokens[: min(rows, 3)] = 2  # a repeated token, whose column sums several rows
    U = awkward_values(rng, (gate_rows, VOCAB), dtype)
    b = awkward_values(rng, (gate_rows,), dtype)
    d_x_proj_rows = awkward_values(rng, (rows, gate_rows), dtype)

    x_proj = manual.model.input_lookup(U, b, tokens.reshape(rows, 1))  # (T, B) = (rows, 1)
    assert x_proj.flags.c_contiguous and x_proj.shape == (rows, 1, gate_rows)
    # bit for bit: the same one rounding of U[g, x] + b[g] on either route
    assert x_proj.reshape(rows, gate_rows).tobytes() == plain_lookup(U, b, tokens).tobytes()

    d_U = manual.model.input_lookup_grad(d_x_proj_rows, tokens, VOCAB)
    assert d_U.flags.c_contiguous and d_U.dtype == dtype
    # bit for bit: the same additions in the same row order on either route
    assert d_U.tobytes() == plain_scatter(d_x_proj_rows, tokens).tobytes()
