"""The one weight initializer both implementations start from, for every cell and layer.

Parameters (H hidden size, V vocabulary size, G gate blocks: 1 rnn, 3 gru, 4 lstm):

    U  (G*H, V)   layer 1 input weights, read by column lookup (x_t is one-hot)
    W  (G*H, H)   layer 1 recurrent weights
    b  (G*H,)     layer 1 bias
    U2, W2, b2    layer 2: U2 is (G*H, H), it reads layer 1's hidden state; and so on
    V  (V, H)     output weights, read the top layer
    c  (V,)       output bias

Gate blocks are stacked in PyTorch's order: lstm i, f, g, o; gru r, z, n.

The sizes are bounded (SIZE_LIMITS) and the memory a model of given sizes needs is estimated
(estimated_memory) before any array of it exists, for the flags and for a checkpoint's header alike.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

import manual
from compare.model.cells import CellPair, manual_cell
from manual import layer_param_names

INIT_STD = 0.01  # the original write-up's sigma (min-char-rnn's 0.01 * randn)
FORGET_BIAS = 1.0  # char-rnn starts the LSTM forget gate open, so memories last from the start
# The gate block whose bias starts at FORGET_BIAS, by the cell's NumPy module: the lstm's f (blocks i, f, g, o)
FORGET_GATE_BLOCK = {manual.CELLS["lstm"]: 1}
SIZES_DOC = "docs/training.md#sizes"
# The largest value of each size that a flag or a checkpoint may give (SIZES_DOC says why each).
SIZE_LIMITS = {
    "hidden_size": 65_536,  # an rnn's W alone, H x H, is 32 GiB of float64 here: past any machine this runs on
    "num_layers": 1_024,  # a few Python objects per layer whatever H is; char-rnn stacks 2 or 3
    "seq_length": 1_000_000,  # T steps whose caches wait for the backward: a larger T is a typo, not a truncation
    "batch_size": 1_000_000,  # streams of at least T + 1 characters each: more than any text here holds
}


def param_shapes(
    vocab_size: int, hidden_size: int, cell: str | CellPair = "rnn", num_layers: int = 1
) -> dict[str, tuple[int, ...]]:
    """{name: shape} of every parameter, in the order the initializer draws them."""
    gate_rows = manual_cell(cell).GATES * hidden_size
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(num_layers):
        names = layer_param_names(layer)
        shapes[names["U"]] = (gate_rows, vocab_size if layer == 0 else hidden_size)
        shapes[names["W"]] = (gate_rows, hidden_size)
    shapes["V"] = (vocab_size, hidden_size)
    for layer in range(num_layers):
        shapes[layer_param_names(layer)["b"]] = (gate_rows,)
    shapes["c"] = (vocab_size,)
    return shapes


def init_params(
    vocab_size: int, hidden_size: int, seed: int, cell: str | CellPair = "rnn", num_layers: int = 1
) -> dict[str, np.ndarray]:
    """float64 parameters: every U, W and V from N(0, 0.01^2), biases zero (LSTM forget gates 1).

    Drawn in the fixed order of ``param_shapes`` (U, W, [U2, W2, ...], V) from
    ``np.random.default_rng(seed)``, so the same arguments give the same weights on every
    run and for every implementation; the one-layer vanilla RNN draws U, W, V as before.
    """
    recurrence = manual_cell(cell)
    rng = np.random.default_rng(seed)
    params: dict[str, np.ndarray] = {}
    for name, shape in param_shapes(vocab_size, hidden_size, cell, num_layers).items():
        is_bias = len(shape) == 1
        params[name] = np.zeros(shape) if is_bias else rng.normal(0.0, INIT_STD, size=shape)
    forget = FORGET_GATE_BLOCK.get(recurrence)
    if forget is not None:
        for layer in range(num_layers):
            rows = slice(forget * hidden_size, (forget + 1) * hidden_size)  # the rows of f
            params[layer_param_names(layer)["b"]][rows] = FORGET_BIAS
    return params


def size_problem(sizes: Mapping[str, int]) -> str | None:
    """'--hidden-size must be at most 65,536 ..., got ...' for the first of ``sizes`` above its SIZE_LIMITS."""
    for name, value in sizes.items():
        limit = SIZE_LIMITS[name]
        if value > limit:
            return f"--{name.replace('_', '-')} must be at most {limit:,} (see {SIZES_DOC}), got {value:,}"
    return None


def estimated_memory(
    vocab_size: int,
    hidden_size: int,
    cell: str | CellPair = "rnn",
    num_layers: int = 1,
    batch_size: int = 1,
    seq_length: int = 0,
    dtype_bytes: int = 8,
    engines: int = 1,
    segment_length: int = 0,
    optimizer_arrays: int = 1,
) -> int:
    """Bytes that ``engines`` models of these sizes hold, at the least: a lower estimate, known before any array is.

    Per engine: the P parameters, their gradients and the optimizer's ``optimizer_arrays`` arrays of P
    numbers (1 for AdaGrad's sums: compare.model.state.OPTIMIZER_ARRAYS), the carried
    state (L x parts x B x H), and, for a training step of T = ``seq_length`` characters (0: no
    step, as when a checkpoint is loaded to sample), what the forward keeps for the backward: per
    layer and time step the gate pre-activations, the state and the output, (G + parts + 1) B H,
    and the logits and probabilities, 2 B V. NumPy's, torch's and Python's temporaries come on top.

    Checkpointed BPTT (``segment_length`` k >= 1; 0: off) keeps that per-step cache for one segment
    of min(k, T) steps only, and the carried state at the start of each of the ceil(T / k) segments.
    """
    module = manual_cell(cell)
    gates, parts = int(module.GATES), int(module.STATE_PARTS)
    parameters = sum(math.prod(shape) for shape in param_shapes(vocab_size, hidden_size, cell, num_layers).values())
    state = num_layers * parts * batch_size * hidden_size
    cached_steps, saved_states = seq_length, 0
    if segment_length > 0 and seq_length > 0:
        cached_steps, saved_states = min(segment_length, seq_length), math.ceil(seq_length / segment_length)
    step = cached_steps * batch_size * (num_layers * (gates + parts + 1) * hidden_size + 2 * vocab_size)
    return engines * dtype_bytes * ((2 + optimizer_arrays) * parameters + state + saved_states * state + step)


def available_memory() -> int | None:
    """Bytes this machine can give without swapping: MemAvailable of /proc/meminfo, else the free physical
    pages (os.sysconf); None where neither is known."""
    try:
        with open("/proc/meminfo", encoding="ascii") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # in kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system, or it does not say
        return None


def memory_problem(needed: int, what: str, fix: str) -> str | None:
    """'<what> needs at least 6.4 GB of memory, more than the 3.1 GB available...; <fix>', or None when it fits."""
    available = available_memory()
    if available is None or needed <= available:
        return None
    return (
        f"{what} needs at least {amount(needed)} of memory (an estimate), more than the "
        f"{amount(available)} this machine has available; {fix}"
    )


def memory_estimate(needed: int, how: str = "") -> str:
    """'at least 12 MB (an estimate, <how>; 3.1 GB available)': what a command prints before it starts."""
    available = available_memory()
    what = f"at least {amount(needed)} (an estimate{', ' + how if how else ''}"
    return what + (f"; {amount(available)} available)" if available is not None else ")")


def amount(count: int) -> str:
    """A byte count in words: '6.4 GB', '120 MB', '85 kB'."""
    if count >= 1e9:
        return f"{count / 1e9:,.1f} GB"
    return f"{count / 1e6:,.0f} MB" if count >= 1e6 else f"{count / 1e3:,.0f} kB"


# ----- forward mode (docs/forward.md): RTRL's influence, jacfwd's tangents -----------------------------------

# The most bytes forward mode may hold, by hand (RTRL's influence) or by jacfwd (its tangents): past it a
# step takes minutes, not seconds, on this project's machines (docs/forward.md#cost)
FORWARD_MODE_BYTES = 1 << 30


@dataclass
class ForwardModeCost:
    """What one step of forward mode costs at given sizes (float64)."""

    influence_bytes: int  # RTRL: B * P*H * (U, W, b entries) * 8
    flops_per_step: int  # RTRL: 2 * B * (P*H)^2 * (U, W, b entries): the J_t M_{t-1} product
    jacfwd_bytes: int  # jacfwd: one tangent per parameter entry of each step's activations, (G*H + V) B per step

    def problem(self, what: str) -> str | None:
        """'<what> needs ...' in one line when either forward mode is past FORWARD_MODE_BYTES, else None."""
        if max(self.influence_bytes, self.jacfwd_bytes) <= FORWARD_MODE_BYTES:
            return None
        return (
            f"{what} is impractical at these sizes: RTRL's influence is {amount(self.influence_bytes)} and "
            f"{self.flops_per_step:.1e} flops per step, forward-mode autograd about {amount(self.jacfwd_bytes)}, "
            f"more than the {amount(FORWARD_MODE_BYTES)} allowed; lower --hidden-size, --batch-size or --seq-length"
        )


def forward_mode_cost(
    vocab_size: int, hidden_size: int, cell: str, batch_size: int, seq_length: int
) -> ForwardModeCost:
    """The cost of forward mode for a one-layer model of these sizes (see ForwardModeCost)."""
    module = manual_cell(cell)
    gates, parts = int(module.GATES), int(module.STATE_PARTS)
    shapes = param_shapes(vocab_size, hidden_size, cell)
    recurrent = sum(math.prod(shapes[name]) for name in ("U", "W", "b"))
    everything = sum(math.prod(shape) for shape in shapes.values())
    state_rows = parts * hidden_size
    activations = seq_length * batch_size * (gates * hidden_size + vocab_size)
    return ForwardModeCost(
        influence_bytes=8 * batch_size * state_rows * recurrent,
        flops_per_step=2 * batch_size * state_rows**2 * recurrent,
        jacfwd_bytes=8 * everything * activations,
    )
