"""Shared fixtures: the grid of small float64 problems (built in tests/problems.py), torch on one thread."""

from __future__ import annotations

import pytest
from problems import MODEL_GRID, random_problem


@pytest.fixture(params=MODEL_GRID, ids=[f"{cell}-L{layers}-B{batch}" for cell, layers, batch in MODEL_GRID])
def problem(request):
    cell, layers, batch = request.param
    return random_problem(batch_size=batch, seed=batch + 10 * layers, cell=cell, num_layers=layers)


@pytest.fixture(autouse=True, scope="session")
def torch_on_one_thread():
    """The tests' tensors hold a few hundred numbers: waking a thread pool for each small op
    only slows them down (measured 10x on a busy two-core machine). Subprocesses are unaffected."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
