"""Data-parallel training (compare.training.parallel): exact against one process, clear when a rank is lost.

The multi-process tests run real processes on this machine with gloo over 127.0.0.1: under
torchrun (``python -m torch.distributed.run --standalone``, a free port, no network), or,
where a rank is killed, as two plain processes given the variables torchrun would set, so that
what stops the survivor is its own process group's error and not torchrun cleaning up.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from tiny_runs import train_argv

from compare.model.checkpoint import load_checkpoint
from compare.train import main
from compare.training.config import parse_args
from compare.training.loop import train
from compare.training.parallel import DataParallel, StopRequest, StopVote, batch_split_problem, short_reason

TESTS = Path(__file__).resolve().parent
TOLERANCE = 1e-12  # float64, the batch's gradient summed in halves: rounding only (docs/tolerances.md)
STEPS = 10


def run_argv(directory: Path, run_name: str, **flags) -> list:
    """A float64 --impl both run of B = 4 streams on the tiny corpus: 2 rows per rank with 2 ranks."""
    settings = {"impl": "both", "batch_size": 4, "max_steps": STEPS, "checkpoint_every": 5}
    settings.update(flags)
    return train_argv(directory, run_name, **settings)


def torchrun(directory: Path, argv: list, processes: int = 2) -> dict:
    """Train under torchrun; returns rank 0's losses, {impl: [loss of every step]}.

    Also checks that every rank ended with the same weights: the same validation loss and the
    same sample, computed by each rank from its own copy.
    """
    losses = directory / f"losses-{time.monotonic_ns()}.json"
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
        str(TESTS / "dist_train.py"),
        str(losses),
        *map(str, argv),
    ]
    result = subprocess.run(command, cwd=directory, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-3000:]
    ended_with = [json.loads(Path(f"{losses}.rank{rank}").read_text()) for rank in range(processes)]
    assert all(document == ended_with[0] for document in ended_with), "the ranks' weights differ"
    return json.loads(losses.read_text())


def final_state(directory: Path, run_name: str, impl: str):
    return load_checkpoint(directory / "runs" / run_name / impl / "latest.npz").engine


def assert_close_states(first, second, atol: float) -> None:
    for kind in ("params", "accumulators"):
        for name in getattr(first, kind):
            np.testing.assert_allclose(
                getattr(first, kind)[name], getattr(second, kind)[name], rtol=0, atol=atol, err_msg=f"{kind}/{name}"
            )
    np.testing.assert_allclose(first.hidden, second.hidden, rtol=0, atol=atol, err_msg="hidden")


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory):
    """10 steps of both implementations with 2 processes; its directory and losses."""
    directory = tmp_path_factory.mktemp("two")
    return directory, torchrun(directory, run_argv(directory, "two"))


@pytest.mark.exactness
@pytest.mark.slow
def test_two_processes_train_like_one_process_with_the_full_batch(tmp_path, two_process_run):
    directory, parallel_losses = two_process_run
    single = train(parse_args(run_argv(tmp_path, "one")))
    for impl in ("manual", "torch"):
        np.testing.assert_allclose(parallel_losses[impl], single["impls"][impl]["losses"], rtol=0, atol=TOLERANCE)
        one, two = final_state(tmp_path, "one", impl), final_state(directory, "two", impl)
        assert two.updates == STEPS and two.hidden.shape[2] == 4  # the checkpoint holds every rank's rows
        assert_close_states(one, two, TOLERANCE)


@pytest.mark.exactness
@pytest.mark.slow
def test_a_two_process_run_resumes_under_two_processes_or_one(tmp_path, two_process_run):
    directory, uninterrupted = two_process_run
    torchrun(tmp_path, run_argv(tmp_path, "split", max_steps=5))
    # The checkpoint holds all B rows of the hidden state, so one process can continue it too.
    alone = train(
        parse_args(
            [
                "--resume",
                str(tmp_path / "runs" / "split" / "manual" / "latest.npz"),
                "--run-name",
                "alone",
                "--impl",
                "manual",
                "--max-steps",
                str(STEPS),
            ]
        )
    )
    np.testing.assert_allclose(alone["impls"]["manual"]["losses"], uninterrupted["manual"][5:], rtol=0, atol=TOLERANCE)
    resumed = torchrun(tmp_path, ["--resume", tmp_path / "runs" / "split", "--max-steps", STEPS])
    for impl in ("manual", "torch"):
        assert resumed[impl] == uninterrupted[impl][5:]  # exactly: the very same arithmetic
        assert_close_states(final_state(directory, "two", impl), final_state(tmp_path, "split", impl), atol=0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_ranks(directory: Path, argv: list, world_size: int = 2) -> list:
    """The ranks of a run as plain processes, with the variables torchrun would give them."""
    port, processes = free_port(), []
    for rank in range(world_size):
        env = {
            **os.environ,
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "OMP_NUM_THREADS": "1",
        }
        with open(directory / f"stderr-{rank}.txt", "w") as stderr:
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "compare.train", *map(str, argv)],
                    cwd=directory,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=stderr,
                )
            )
    return processes


def wait_for(path: Path, processes: list, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and all(p.poll() is None for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), "no checkpoint appeared"


@pytest.mark.slow
@pytest.mark.parametrize(
    "fault, victim, survivor", [(signal.SIGKILL, 0, 1), (signal.SIGSTOP, 1, 0)], ids=["rank-0-killed", "rank-1-frozen"]
)
def test_a_lost_rank_stops_the_other_with_one_line_and_the_checkpoint_survives(tmp_path, fault, victim, survivor):
    timeout = 5  # seconds: how long a frozen rank is waited for
    argv = run_argv(
        tmp_path,
        "run",
        impl="manual",
        max_steps=10**6,
        checkpoint_every=10,
        eval_every=10**6,
        sample_every=10**6,
        dist_timeout=timeout,
    )
    processes = start_ranks(tmp_path, argv)
    latest = tmp_path / "runs" / "run" / "manual" / "latest.npz"
    try:
        wait_for(latest, processes)
        os.kill(processes[victim].pid, fault)  # mid-run: a checkpoint exists, training goes on
        lost_at = time.monotonic()
        exit_code = processes[survivor].wait(timeout=timeout + 60)
        waited = time.monotonic() - lost_at
    finally:
        for process in processes:
            process.kill()
            process.wait()
    message = (tmp_path / f"stderr-{survivor}.txt").read_text()
    assert exit_code == 1, message
    assert message.count("\n") == 1 and message.startswith(f"python -m compare.train [rank {survivor}/2]: error:")
    assert "lost contact" in message and f"{latest} (step" in message and "--resume" in message, message
    assert waited < timeout + 30, waited  # not a hang: at once when killed, after --dist-timeout when frozen
    assert load_checkpoint(latest).step % 10 == 0


def test_a_batch_that_does_not_split_evenly_is_refused_before_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(run_argv(tmp_path, "odd", batch_size=3)) == 2
    stderr = capsys.readouterr().err
    assert stderr.count("\n") == 1 and "--batch-size 3 cannot be split evenly over 2 processes" in stderr, stderr
    assert not (tmp_path / "runs").exists()


def test_each_rank_takes_an_equal_contiguous_share_of_the_streams():
    shares = [DataParallel(rank=rank, world_size=4).rows(8) for rank in range(4)]
    assert [(share.start, share.stop) for share in shares] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    assert batch_split_problem(8, 4) is None
    assert "use a multiple of 4 (e.g. 8 or 12)" in batch_split_problem(10, 4)


def test_a_signal_is_acted_on_only_once_every_rank_has_voted():
    stop = StopRequest()
    vote = StopVote(stop)
    assert vote.ballot() == 0
    vote.count(0.0)
    assert not stop.requested
    vote.handle(signal.SIGINT, None)
    assert not stop.requested and vote.ballot() == signal.SIGINT  # held until the next all-reduce
    vote.count(float(signal.SIGINT))
    assert stop.signal_number == signal.SIGINT
    with pytest.raises(KeyboardInterrupt):
        vote.handle(signal.SIGINT, None)  # a second signal stops at once
    another = StopRequest()
    StopVote(another).count(float(signal.SIGTERM))  # this rank got nothing; another rank did
    assert another.signal_number == signal.SIGTERM


def test_gloo_errors_are_shortened_to_their_reason():
    error = RuntimeError(
        "[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error "
        "[127.0.0.1]:36516: Connection reset by peer. This is typically caused by a remote worker "
        "hanging or bugs in the application. GLHF!"
    )
    assert short_reason(error) == "Read error [127.0.0.1]:36516: Connection reset by peer"


def test_pack_lays_every_gradient_then_the_scalars_end_to_end_and_unpack_puts_them_back():
    import torch

    from compare.training.parallel import pack, unpack_into

    grads = [torch.arange(6.0, dtype=torch.float64).reshape(2, 3), torch.tensor([7.0], dtype=torch.float64)]
    flat = pack(grads, [np.float64(0.5), 2.0])
    assert flat.dtype == torch.float64 and flat.tolist() == [0, 1, 2, 3, 4, 5, 7, 0.5, 2]
    unpack_into(flat * 2, grads)
    assert grads[0].tolist() == [[0, 2, 4], [6, 8, 10]] and grads[1].tolist() == [14]
