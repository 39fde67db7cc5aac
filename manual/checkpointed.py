"""Checkpointed BPTT: keep the carried state every k steps, recompute each segment's cache in the backward pass.

The plain backward (``manual.model.backward``) needs everything forward computed at every step: for a chunk
of T steps its cache grows as T (hidden states, gates, probabilities). Here the forward pass keeps only

    state_{0}, state_{k}, state_{2k}, ...      (L, P, B, H) each: the carried state where each segment starts

and the backward pass walks the segments from last to first (Gruslys et al. 2016, "Memory-efficient
backpropagation through time", with one fixed segment length k): for segment [t0, t1)

    recompute:  the segment's forward from state_{t0}, its cache          (k steps of memory, not T)
    backward:   manual.model.backward over the segment, with the carry
                dL/dstate_{t1} from the segment after it; it returns dL/dstate_{t0} for the one before
    accumulate: each parameter's gradient, the sum over segments of the segment's sum over its steps

Memory: about T/k saved states and one segment's cache (best near k = sqrt(T)); time: one extra forward pass.

Exactness. Every recurrent step runs the same operations on the same (B, ...) rows as in the plain pass, so
the states, and the carries between segments, are those of the plain pass. The sums over time are not:
the plain pass makes each over all T*B rows at once (one matrix product for dV, dW, dU_l; one row sum for c,
b), here they are sums of per-segment sums, and the matrix products over rows (logits, x_proj of the layers
above the first, their gradients) run over a segment's rows, which BLAS may round differently from the whole.
So the gradients are bit for bit the plain ones for k >= T (one segment) and within rounding for smaller k
(docs/memory.md measures how far).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from manual import model


@dataclass
class CheckpointedCache:
    """What the checkpointed backward needs: the inputs, and the carried state at each segment's start."""

    cell: model.Cell
    inputs: np.ndarray  # (T, B) ids, time-major
    targets: np.ndarray  # (T, B) ids, time-major
    params: dict[str, np.ndarray]
    starts: list[np.ndarray]  # (L, P, B, H) state_{t0} for each segment [t0, t0 + k), in time order
    segment_length: int  # k
    reduction: str = "mean"


def segment_bounds(steps: int, segment_length: int) -> list[tuple[int, int]]:
    """[(0, k), (k, 2k), ..., (.., T)]: the last segment is shorter when k does not divide T."""
    return [(start, min(start + segment_length, steps)) for start in range(0, steps, segment_length)]


def segment_forward(
    params: dict[str, np.ndarray],
    inputs_tb: np.ndarray,
    targets_tb: np.ndarray,
    state0: np.ndarray,
    cell: model.Cell,
    reduction: str,
    mean_over: int,
) -> tuple[np.ndarray, model.Cache]:
    """manual.model.forward's work on one segment (time-major (k, B) ids in), the mean over ``mean_over``.
    Returns (log p_t[y_t] per character (k * B,), the segment's full cache)."""
    top, state_last, layers = model.run_layers(params, inputs_tb, state0, cell)
    steps, streams, hidden_size = top.shape
    logits = top.reshape(steps * streams, hidden_size) @ params["V"].T + params["c"]  # o_t = c + V h_t
    probs, log_likelihood = model.softmax_log_likelihood(logits, targets_tb.reshape(-1))
    cache = model.Cache(cell, inputs_tb, targets_tb, layers, top, probs, params, state_last, reduction, mean_over)
    return log_likelihood, cache


def forward(
    params: dict[str, np.ndarray],
    inputs: np.ndarray,
    targets: np.ndarray,
    state0: np.ndarray,
    cell: model.Cell = "rnn",
    reduction: str = "mean",
    segment_length: int = 100,
) -> tuple[np.number, np.ndarray, CheckpointedCache]:
    """manual.model.forward keeping only the state at every k-th step.

    inputs, targets: (B, T) ids; state0: (L, P, B, H); segment_length: k >= 1.
    Returns (loss, state_last (L, P, B, H), cache).
    """
    if reduction not in model.REDUCTIONS:
        raise ValueError(f"unknown loss reduction {reduction!r}; choose from {model.REDUCTIONS}")
    if segment_length < 1:
        raise ValueError(f"segment_length must be at least 1, got {segment_length}")
    inputs_tb = np.ascontiguousarray(inputs.T)  # (B, T) -> (T, B)
    targets_tb = np.ascontiguousarray(targets.T)
    steps, streams = inputs_tb.shape
    log_likelihood = np.empty(steps * streams, dtype=np.result_type(*params.values()))  # row t * B + s
    starts, state = [], state0
    for t0, t1 in segment_bounds(steps, segment_length):
        starts.append(state)
        rows, cache = segment_forward(
            params, inputs_tb[t0:t1], targets_tb[t0:t1], state, cell, reduction, steps * streams
        )
        log_likelihood[t0 * streams : t1 * streams] = rows
        state = cache.state_last  # the segment's cache is dropped here: only its last state goes on
    # the same reduction over the same (T*B,) per-character values as softmax_cross_entropy's
    loss = -log_likelihood.sum() if reduction == "sum" else -log_likelihood.mean()
    return loss, state, CheckpointedCache(cell, inputs_tb, targets_tb, params, starts, segment_length, reduction)


def backward(cache: CheckpointedCache) -> dict[str, np.ndarray]:
    """The gradients manual.model.backward computes, one recomputed segment at a time, last to first."""
    steps, streams = cache.inputs.shape
    grads: dict[str, np.ndarray] | None = None
    segment_grads: dict[str, np.ndarray] | None = None  # one segment's, reused
    carry = np.zeros_like(cache.starts[0])  # dL/dstate at the end of the segment being differentiated
    bounds = segment_bounds(steps, cache.segment_length)
    for (t0, t1), start in zip(reversed(bounds), reversed(cache.starts), strict=True):
        _, segment = segment_forward(
            cache.params,
            cache.inputs[t0:t1],
            cache.targets[t0:t1],
            start,
            cache.cell,
            cache.reduction,
            steps * streams,
        )
        segment_grads = model.backward(segment, out=segment_grads, carry=carry)  # carry: dL/dstate_t1 -> _t0
        if grads is None:
            grads = {name: value.copy() for name, value in segment_grads.items()}
        else:
            for name, value in segment_grads.items():
                grads[name] += value
    assert grads is not None  # T >= 1: at least one segment
    return grads
