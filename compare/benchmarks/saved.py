"""bench --saved: what each backward keeps, by hand and by autograd, for one training step of each cell.

By hand: the arrays manual.forward's cache holds (walked field by field; views counted once, by the array
they view; the parameters left out, since both sides keep those anyway). By autograd: every tensor the
torch twin's forward saves for its backward, seen by ``torch.autograd.graph.saved_tensors_hooks``, counted
once per storage (data_ptr), parameters left out, grouped by the shape and by the operation (grad_fn) that
saved it.
"""

from __future__ import annotations

import argparse
from collections import Counter
from dataclasses import fields, is_dataclass
from typing import Any

import numpy as np
import torch

import manual
import torchref
from compare.model.init import init_params

CELL_NAMES = ("rnn", "lstm", "gru")


def hand_cache_bytes(cache: manual.Cache) -> Counter[str]:
    """Bytes by what they are: field name -> bytes, each underlying array once, parameters left out."""
    parameters = {id(value) for value in cache.params.values()}
    seen: set[int] = set(parameters)
    kept: Counter[str] = Counter()

    def add(label: str, value: Any) -> None:
        if isinstance(value, np.ndarray):
            owner = value if value.base is None else value.base
            if id(owner) not in seen and id(value) not in parameters:
                seen.add(id(owner))
                kept[label] += owner.nbytes
        elif is_dataclass(value) and not isinstance(value, type):
            for field in fields(value):
                add(field.name, getattr(value, field.name))
        elif isinstance(value, list):
            for item in value:
                add(label, item)

    for field in fields(cache):
        if field.name != "params":
            add(field.name, getattr(cache, field.name))
    return kept


def autograd_saved_bytes(
    model: torchref.CharRNN, inputs: torch.Tensor, targets: torch.Tensor, state0: torch.Tensor
) -> tuple[Counter[str], Counter[str]]:
    """(bytes by grad_fn, bytes by shape) of what autograd saves, each storage once, parameters left out."""
    parameter_storages = {param.untyped_storage().data_ptr() for param in model.parameters()}
    storages: dict[int, tuple[str, int]] = {}  # data_ptr -> (shape, bytes)

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        pointer = tensor.untyped_storage().data_ptr()
        if pointer not in parameter_storages:
            storages.setdefault(pointer, (str(tuple(tensor.shape)), tensor.untyped_storage().nbytes()))
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = model.loss(inputs, targets, state0)
    by_shape: Counter[str] = Counter()
    for shape, size in storages.values():
        by_shape[shape] += size
    by_operation: Counter[str] = Counter()
    counted: set[int] = set()
    nodes, visited = [loss.grad_fn], set()
    while nodes:  # the graph, to name the operation that saved each storage
        node = nodes.pop()
        if node is None or id(node) in visited:
            continue
        visited.add(id(node))
        for attribute in dir(node):
            if attribute.startswith("_saved_"):
                value = getattr(node, attribute)
                if isinstance(value, torch.Tensor):
                    pointer = value.untyped_storage().data_ptr()
                    if pointer in storages and pointer not in counted:
                        counted.add(pointer)
                        by_operation[type(node).__name__] += storages[pointer][1]
        nodes.extend(next_node for next_node, _ in node.next_functions)
    return by_operation, by_shape


def measure(cell: str, layers: int, hidden: int, steps: int, vocab: int = 65) -> dict[str, Any]:
    params = init_params(vocab, hidden, 0, cell=cell, num_layers=layers)
    rng = np.random.default_rng(1)
    inputs, targets = rng.integers(0, vocab, size=(2, 1, steps))
    state0 = manual.zero_state(cell, layers, 1, hidden)
    _, cache = manual.forward(params, inputs, targets, state0, cell)
    hand = hand_cache_bytes(cache)
    model = torchref.CharRNN(params, cell=cell)
    as_tensor = torch.from_numpy
    by_operation, by_shape = autograd_saved_bytes(model, as_tensor(inputs), as_tensor(targets), as_tensor(state0))
    return {"hand": hand, "autograd_by_operation": by_operation, "autograd_by_shape": by_shape}


def kib(size: int) -> str:
    return f"{size / 1024:,.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m compare.bench --saved", description=__doc__)
    parser.add_argument("--hidden", default="100", help="comma-separated hidden sizes (default 100)")
    parser.add_argument("--steps", default="25,100", help="comma-separated sequence lengths T (default 25,100)")
    args = parser.parse_args(argv)
    try:
        sizes = [int(size) for size in args.hidden.split(",")]
        lengths = [int(length) for length in args.steps.split(",")]
    except ValueError:
        parser.error(f"--hidden and --steps take comma-separated integers, got {args.hidden!r} and {args.steps!r}")
    if min(sizes + lengths) < 1:
        parser.error("--hidden and --steps must be at least 1")
    print(
        "| cell | layers | H | T | hand cache KiB | autograd saved KiB | hand / autograd | hand, by what | "
        "autograd, top operations |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for cell in CELL_NAMES:
        for layers in (1, 2):
            for hidden in sizes:
                for steps in lengths:
                    result = measure(cell, layers, hidden, steps)
                    hand, saved = sum(result["hand"].values()), sum(result["autograd_by_shape"].values())
                    what = ", ".join(f"{name} {kib(size)}" for name, size in result["hand"].most_common())
                    top = ", ".join(
                        f"{name} {kib(size)}" for name, size in result["autograd_by_operation"].most_common(4)
                    )
                    print(
                        f"| {cell} | {layers} | {hidden} | {steps} | {kib(hand)} | {kib(saved)} | "
                        f"{hand / saved:.2f} | {what} | {top} |"
                    )
    return 0
