"""Shared fixtures: the grid of small float64 problems (built in tests/problems.py), torch on one thread, and
every test away from the user's files."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from problems import MODEL_GRID, random_problem

ROOT = Path(__file__).resolve().parents[1]


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


@pytest.fixture(autouse=True, scope="session")
def in_a_directory_of_the_sessions_own(tmp_path_factory):
    """Module-scoped fixtures run in an empty directory too, never in the one pytest was started in."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("cwd"))
        yield


@pytest.fixture(autouse=True)
def in_a_directory_of_its_own(tmp_path, monkeypatch):
    """Each test, and each subprocess it starts, begins in its own empty directory (its tmp_path): the runs/
    of the directory pytest was started in (the commands' default --logdir) is never the newest run a test
    finds, nor is a run another test left."""
    monkeypatch.chdir(tmp_path)


SESSION_STATE = pytest.StashKey[tuple[pytest.MonkeyPatch, Path]]()


def pytest_configure(config):
    """Before any test module is imported: matplotlib and hypothesis keep their settings and caches in a
    directory of this session's own, not in ~/.config/matplotlib nor in a .hypothesis/ left in the directory
    pytest was started in; subprocesses import this checkout's code, whatever directory they run in."""
    own = Path(tempfile.mkdtemp(prefix="bptt-compare-tests-"))
    patch = pytest.MonkeyPatch()
    patch.setenv("MPLCONFIGDIR", str(own / "matplotlib"))
    patch.setenv("HYPOTHESIS_STORAGE_DIRECTORY", str(own / "hypothesis"))
    patch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    config.stash[SESSION_STATE] = patch, own


def pytest_unconfigure(config):
    patch, own = config.stash[SESSION_STATE]
    patch.undo()
    shutil.rmtree(own, ignore_errors=True)
