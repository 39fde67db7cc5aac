"""Where a hand-written backward pass goes wrong: its per-step quantities beside autograd's.

For every layer l and step t, both sides give

    dL/dx_proj_t   (T, B, G*H)   the gradient of the pre-activations b + U x_t, one block per gate
    h_t            (T, B, H)     the forward's hidden states, to see whether the forward already differs
    dL/dh_t        (T, B, H)     all of it: from the output (or the layer above) + from step t + 1
    carry_t        (T, P, B, H)  the gradient of the carried state_t that step t + 1 sent back (0 at t = T)

The last two only where the cell's recurrence_backward takes the optional ``trace``
(docs/cells.md#per-step-gradients-trace); on the torch side they are h_t.grad and state_t.grad of
the tensors the twin's step returns (h_t is used by the output and by state_t, state_t by step t + 1).

The manual side runs ``manual.forward`` and then each layer's ``recurrence_backward`` with
dL/dh_t as ``manual.backward`` feeds it (from the output layer for the top layer, through
U_{l+1} below it); the torch side runs the twin's ``step`` over the same chunk with
``retain_grad`` on every x_proj_t, so autograd fills in the same quantities. The
error of a block is |manual - torch| / max(tiny, |manual| + |torch|) over its (B, H) entries
(Frobenius norms), so a block whose gradient is zero on both sides has error zero.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType

import numpy as np
import torch
import torch.nn.functional as F

import manual
from compare.gradients.oracles import Problem
from compare.model.cells import cell_pair, traces

TINY = 1e-300  # the floor of a block error's denominator: only blocks that are exactly zero on both sides reach it
BUILTIN_GATE_NAMES = {"rnn": ("a",), "lstm": ("i", "f", "g", "o"), "gru": ("r", "z", "n")}
BUILTIN_STATE_NAMES = {"rnn": ("h",), "lstm": ("h", "s"), "gru": ("h",)}


def gate_names(cell: ModuleType) -> tuple[str, ...]:
    """The cell's GATE_NAMES (an optional part of the interface), else '1', '2', ... (said as 'gate 1')."""
    for name, module in manual.CELLS.items():
        if module is cell:
            return BUILTIN_GATE_NAMES[name]
    names = getattr(cell, "GATE_NAMES", None)
    return tuple(names) if names is not None else tuple(str(k + 1) for k in range(cell.GATES))


def part_names(cell: ModuleType) -> tuple[str, ...]:
    """The cell's STATE_NAMES (optional), else h for state[0] (the interface's convention), state[k] after it."""
    for name, module in manual.CELLS.items():
        if module is cell:
            return BUILTIN_STATE_NAMES[name]
    names = getattr(cell, "STATE_NAMES", None)
    return tuple(names) if names is not None else ("h", *(f"state[{k}]" for k in range(1, cell.STATE_PARTS)))


@dataclass
class StepQuantities:
    """One side's per-step quantities, time-major, one entry per layer (bottom first)."""

    loss: float
    hidden: list[np.ndarray]  # (T, B, H) h_t of each layer
    d_x_proj: list[np.ndarray]  # (T, B, G*H) dL/dx_proj_t of each layer
    d_h: list[np.ndarray] | None = None  # (T, B, H) dL/dh_t of each layer; None: the cell does not trace
    d_carry: list[np.ndarray] | None = None  # (T, P, B, H) the carried state's gradient, as step t receives it


def manual_steps(problem: Problem) -> StepQuantities:
    """The hand-written side: manual.forward, then each layer's recurrence_backward, top layer first."""
    cell = cell_pair(problem.cell).manual
    loss, cache = manual.forward(problem.params, problem.inputs, problem.targets, problem.state0, cell)
    steps, streams, size = cache.top.shape
    rows = steps * streams
    d_logits = cache.probs.copy()  # dL/do_t = (p_t - onehot(y_t)) / N, as manual.backward has it
    d_logits[np.arange(rows), cache.targets.reshape(-1)] -= 1
    d_logits /= rows
    d_hidden = (d_logits @ problem.params["V"]).reshape(steps, streams, size)  # dL/dh_t of the top layer
    hidden = [layer.below for layer in cache.layers[1:]] + [cache.top]
    d_x_proj: list[np.ndarray] = []
    traced: list[dict[str, np.ndarray]] = []
    for layer in reversed(range(len(cache.layers))):
        recurrence = cache.layers[layer].recurrence
        if traces(cell):
            traced.insert(0, {})
            d_x, _ = cell.recurrence_backward(d_hidden, recurrence, trace=traced[0])
        else:
            d_x, _ = cell.recurrence_backward(d_hidden, recurrence)
        d_x_proj.insert(0, d_x)
        if layer > 0:  # x_proj_t of this layer = b_l + U_l h_t^{l-1}: dL/dh_t of the layer below
            d_hidden = d_x @ problem.params[manual.layer_param_names(layer)["U"]]
    quantities = StepQuantities(float(loss), [np.asarray(h) for h in hidden], d_x_proj)
    if traced:
        quantities.d_h = [np.asarray(trace["d_h"]) for trace in traced]
        quantities.d_carry = [np.asarray(trace["d_carry"]) for trace in traced]
    return quantities


def torch_steps(problem: Problem) -> StepQuantities:
    """The autograd side: the twin's step over the chunk, keeping the gradients of every x_proj_t, h_t, state_t."""
    step = cell_pair(problem.cell).torch.step
    params = {name: torch.from_numpy(value).requires_grad_() for name, value in problem.params.items()}
    inputs, targets = torch.from_numpy(problem.inputs).long(), torch.from_numpy(problem.targets).long()
    below: torch.Tensor | None = None
    kept_x: list[list[torch.Tensor]] = []
    kept_h: list[list[torch.Tensor]] = []
    kept_state: list[list[torch.Tensor]] = []
    for layer in range(len(problem.state0)):
        names = manual.layer_param_names(layer)
        U, W, b = (params[names[key]] for key in ("U", "W", "b"))
        x_proj = F.embedding(inputs, U.T) + b if below is None else below @ U.T + b  # (B, T, G*H)
        state = torch.from_numpy(problem.state0[layer])
        xs, hs, states = [], [], []
        for x_proj_t in x_proj.unbind(dim=1):
            x_proj_t.retain_grad()
            h, state = step(x_proj_t, W, state)
            h.retain_grad()  # dL/dh_t, all of it: the output's (through the stack below) and state_t's
            state.retain_grad()  # what step t + 1 sends back into state_t; None at t = T, where nothing uses it
            xs.append(x_proj_t)
            hs.append(h)
            states.append(state)
        kept_x.append(xs)
        kept_h.append(hs)
        kept_state.append(states)
        below = torch.stack(hs, dim=1)  # (B, T, H)
    assert below is not None  # the problem has L >= 1 layers
    logits = below @ params["V"].T + params["c"]
    loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    loss.backward()

    def time_major(tensors: list[torch.Tensor], grads: bool) -> np.ndarray:
        values = [t.grad if grads else t for t in tensors]
        assert all(v is not None for v in values)  # every x_proj_t and h_t reaches the loss
        return torch.stack([v.detach() for v in values if v is not None]).numpy()

    def carried(states: list[torch.Tensor]) -> np.ndarray:
        return torch.stack([torch.zeros_like(s) if s.grad is None else s.grad.detach() for s in states]).numpy()

    return StepQuantities(
        float(loss.detach()),
        [time_major(hs, False) for hs in kept_h],
        [time_major(xs, True) for xs in kept_x],
        [time_major(hs, True) for hs in kept_h],
        [carried(states) for states in kept_state],
    )


def block_errors(mine: np.ndarray, theirs: np.ndarray, gates: int) -> np.ndarray:
    """(T, G): the relative error of each step's gate block. mine, theirs: (T, B, G*H)."""
    steps, streams, rows = mine.shape
    shape = (steps, streams, gates, rows // gates)
    a, b = mine.reshape(shape), theirs.reshape(shape)
    difference = np.sqrt((np.abs(a - b) ** 2).sum(axis=(1, 3)))
    size = np.sqrt((np.abs(a) ** 2).sum(axis=(1, 3))) + np.sqrt((np.abs(b) ** 2).sum(axis=(1, 3)))
    return difference / np.maximum(size, TINY)


def carry_errors(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """(T, P): the relative error of each step's carried part. mine, theirs: (T, P, B, H)."""
    steps, parts, streams, size = mine.shape
    mine_blocks = np.moveaxis(mine, 1, 2).reshape(steps, streams, parts * size)  # (T, B, P*H): one block per part
    theirs_blocks = np.moveaxis(theirs, 1, 2).reshape(steps, streams, parts * size)
    return block_errors(mine_blocks, theirs_blocks, parts)


def hidden_errors(mine: np.ndarray, theirs: np.ndarray) -> np.ndarray:
    """(T,): the relative error of each step's hidden state. mine, theirs: (T, B, H)."""
    return block_errors(mine, theirs, 1)[:, 0]
