"""Which process this is under torchrun, and what a data-parallel run's settings must satisfy.

Read from torchrun's environment variables alone, so the CLI can ask before torch is imported.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Protocol

DEFAULT_TIMEOUT_S = 300.0


class HasDevice(Protocol):
    """A compare.training.config.TrainConfig, as ``backend_for`` sees it."""

    device: str


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    return "RANK" in environ and "WORLD_SIZE" in environ


def is_main_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Rank 0 of a torchrun launch, or a process torchrun did not start: the one that prints."""
    return int(environ.get("RANK", "0")) == 0


def cli_prog(prog: str, environ: Mapping[str, str] = os.environ) -> str:
    """'<prog> [rank 1/2]' when several ranks run, so that each error line says whose it is."""
    world_size = int(environ.get("WORLD_SIZE", "1"))
    return f"{prog} [rank {environ.get('RANK', '0')}/{world_size}]" if world_size > 1 else prog


def batch_split_problem(batch_size: int, world_size: int) -> str | None:
    if batch_size % world_size == 0:
        return None
    lower, higher = batch_size - batch_size % world_size, batch_size + world_size - batch_size % world_size
    return (
        f"--batch-size {batch_size} cannot be split evenly over {world_size} processes; "
        f"use a multiple of {world_size} (e.g. {lower or higher} or {higher})"
    )


def backend_for(config: HasDevice) -> str:
    """gloo on the CPU; with --device cuda, NCCL for the GPU tensors and gloo for the CPU ones (manual)."""
    return "cpu:gloo,cuda:nccl" if config.device == "cuda" else "gloo"
