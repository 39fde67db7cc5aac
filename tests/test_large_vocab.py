"""Large vocabularies: the layer-1 input gradient dU is a scatter-add into U's columns, never a product with a
one-hot matrix, so memory stays near the parameters' size however large V is (a Chinese novel: V ~ 10^4-10^5).

Each training-step check runs one engine in a fresh interpreter and reads that process's resident-memory peak
(VmHWM) around one step: tracemalloc would miss torch's allocator, and a fresh process keeps what other tests
allocated out of the reading.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import manual
import manual.model

MiB = 2**20


def dense_reference(d_x_proj_rows: np.ndarray, tokens: np.ndarray, vocab_size: int) -> np.ndarray:
    """dU = dx_proj^T X with the one-hot rows X (T*B, V): the product the scatter replaces (small V only)."""
    return d_x_proj_rows.T @ np.eye(vocab_size, dtype=d_x_proj_rows.dtype)[tokens]


def assert_matches_dense(d_U: np.ndarray, d_x_proj_rows: np.ndarray, tokens: np.ndarray, vocab_size: int) -> None:
    """Both sides add the same k_x nonzero terms into column x (the product adds exact zeros besides), only
    perhaps in another order; each sum of k terms is within (k - 1) * eps * sum|terms| of the exact one
    (eps = 2u bounds gamma_{k-1} here), so the two differ by at most 2 (k_x - 1) eps sum|terms|. A token seen
    once (k_x = 1) and an unseen column must match exactly."""
    counts = np.bincount(tokens, minlength=vocab_size)  # (V,) k_x
    abs_sums = np.abs(d_x_proj_rows).T @ np.eye(vocab_size)[tokens]  # (G*H, V) sum of |terms| per entry
    bound = 2 * np.maximum(counts - 1, 0) * np.finfo(np.float64).eps * abs_sums
    reference = dense_reference(d_x_proj_rows, tokens, vocab_size)
    assert d_U.shape == reference.shape and d_U.dtype == reference.dtype
    assert d_U.flags.c_contiguous
    excess = np.abs(d_U - reference) - bound
    assert excess.max() <= 0, f"dU off the one-hot reference by {excess.max():.3g} beyond the rounding bound"


@pytest.mark.exactness
@pytest.mark.parametrize(
    "tokens",
    [
        [0, 1, 2, 3, 4, 5, 6, 7, 8],  # every token once
        [3, 3, 3, 3, 3, 3, 3, 3, 3],  # one token nine times: the scatter must add, not overwrite
        [2, 5, 2, 0, 5, 5, 10, 2, 0],  # repeats mixed with singletons, first and last column included
    ],
    ids=["distinct", "one-repeated", "mixed"],
)
def test_scatter_matches_one_hot_product(tokens: list[int]) -> None:
    vocab_size, gate_rows = 11, 6
    rng = np.random.default_rng(len(set(tokens)))
    d_x_proj_rows = rng.standard_normal((len(tokens), gate_rows))
    ids = np.array(tokens)
    d_U = manual.model.input_lookup_grad(d_x_proj_rows, ids, vocab_size)
    assert_matches_dense(d_U, d_x_proj_rows, ids, vocab_size)


@pytest.mark.exactness
def test_scatter_is_dtype_generic() -> None:
    """float32 stays float32 and complex128 (the complex-step check's dtype) keeps its imaginary part."""
    rng = np.random.default_rng(0)
    ids = np.array([1, 4, 1, 1])
    rows = rng.standard_normal((4, 3)) + 1j * rng.standard_normal((4, 3))
    d_U = manual.model.input_lookup_grad(rows, ids, 6)
    assert d_U.dtype == np.complex128
    np.testing.assert_allclose(d_U, dense_reference(rows, ids, 6), rtol=1e-15, atol=1e-15)
    assert manual.model.input_lookup_grad(rows.real.astype(np.float32), ids, 6).dtype == np.float32


@pytest.mark.exactness
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_backward_scatters_the_right_tokens(cell: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Through manual.backward, batch of 3 streams x 5 steps with repeats across and within streams: dU is
    the one-hot product of the very dx_proj rows backward computed, with their tokens in row order t * B + s."""
    vocab_size, hidden_size = 7, 4
    rng = np.random.default_rng(1)
    params = {name: rng.normal(0.0, 0.3, shape) for name, shape in _shapes(cell, vocab_size, hidden_size).items()}
    inputs = np.array([[1, 1, 1, 2, 6], [0, 1, 4, 4, 1], [6, 2, 1, 0, 0]])  # (B, T)
    targets = rng.integers(0, vocab_size, inputs.shape)
    seen: list[tuple[np.ndarray, np.ndarray]] = []
    scatter = manual.model.input_lookup_grad

    def spy(d_x_proj_rows: np.ndarray, tokens: np.ndarray, size: int) -> np.ndarray:
        seen.append((d_x_proj_rows.copy(), tokens.copy()))
        return scatter(d_x_proj_rows, tokens, size)

    monkeypatch.setattr(manual.model, "input_lookup_grad", spy)
    state0 = manual.zero_state(cell, 1, 3, hidden_size)
    _, cache = manual.forward(params, inputs, targets, state0, cell)
    grads = manual.backward(cache)
    ((d_x_proj_rows, tokens),) = seen
    np.testing.assert_array_equal(tokens, inputs.T.reshape(-1))  # time-major rows
    assert_matches_dense(grads["U"], d_x_proj_rows, tokens, vocab_size)


def _shapes(cell: str, vocab_size: int, hidden_size: int) -> dict[str, tuple[int, ...]]:
    rows = manual.CELLS[cell].GATES * hidden_size
    return {
        "U": (rows, vocab_size),
        "W": (rows, hidden_size),
        "b": (rows,),
        "V": (vocab_size, hidden_size),
        "c": (vocab_size,),
    }


# One step at V = 100,000, H = 128, B = 2, T = 8 (float32). U and V are 12.8 M floats each: 102 MB with b, c, W.
# The engine keeps them and AdaGrad's accumulators (2x); a step adds the gradients (1x) and AdaGrad's
# temporaries (a parameter at a time). The bound leaves room for 6x, plus 100 MB for the rest.
LARGE = {"vocab_size": 100_000, "hidden_size": 128, "batch_size": 2, "seq_length": 8}


@pytest.mark.slow  # a subprocess that imports torch and builds 100 MB of parameters: 7-10 s each on two busy cores
@pytest.mark.parametrize("impl", ["manual", "torch"])
def test_large_vocab_step_memory(impl: str) -> None:
    result = subprocess.run([sys.executable, __file__, impl], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    param_bytes = report["param_bytes"]
    assert 95 * MiB < param_bytes < 100 * MiB  # the model is the size this test is about
    assert np.isfinite(report["loss"]) and report["loss"] > 0
    bound = 6 * param_bytes + 100 * MiB
    assert report["peak_bytes"] < bound, (
        f"{impl}: one step peaked {report['peak_bytes'] / MiB:.0f} MiB over the interpreter and its imports; "
        f"bound {bound / MiB:.0f} MiB (6x the parameters' {param_bytes / MiB:.0f} MiB + 100 MiB)"
    )


def _rss_bytes(field: str) -> int:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, from /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024  # kB
    raise LookupError(field)


def _one_large_step(impl: str) -> dict[str, float]:
    """In a fresh interpreter: build the engine, take one step, return the peak resident memory above the
    process as it stood after its imports (VmHWM, reset first where the kernel allows it, else it counts from
    the start: the imports and any build temporaries, never less)."""
    import gc
    import time

    import torch  # noqa: F401  (imported before the baseline: its libraries are not the step's)

    from compare.model.engines import make_engine
    from compare.model.init import param_shapes

    baseline = _rss_bytes("VmRSS")
    rng = np.random.default_rng(0)
    shapes = param_shapes(LARGE["vocab_size"], LARGE["hidden_size"])
    params = {name: rng.normal(0.0, 0.01, shape).astype(np.float32) for name, shape in shapes.items()}
    param_bytes = sum(value.nbytes for value in params.values())
    engine = make_engine(impl, params, lr=0.1, clip=5.0, dtype="float32")
    del params
    gc.collect()
    tokens = rng.integers(0, LARGE["vocab_size"], (LARGE["batch_size"], LARGE["seq_length"] + 1))
    engine.reset_hidden(LARGE["batch_size"])
    resting = _rss_bytes("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    except OSError:
        pass  # the peak then counts from the start: a stricter reading
    start = time.perf_counter()
    stats = engine.train_step(tokens[:, :-1], tokens[:, 1:])
    seconds = time.perf_counter() - start
    peak = _rss_bytes("VmHWM")
    return {
        "param_bytes": param_bytes,
        "resting_bytes": resting - baseline,
        "peak_bytes": peak - baseline,
        "step_seconds": seconds,
        "loss": stats.loss,
    }


if __name__ == "__main__":
    print(json.dumps(_one_large_step(sys.argv[1])))
