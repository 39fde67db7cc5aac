"""Data-parallel training between separate network hosts: exact, a lost host survived, an elastic restart.

Each host is a Linux network namespace with its own address on a private bridge (compare.benchmarks.netns),
so the ranks talk over a veth link, never 127.0.0.1, and torchrun runs as on real machines:
one launch per host, a c10d rendezvous on the first host's address, no ``--standalone``. One
rank per host, float64, B = 4 streams of the tiny corpus. Skipped only where namespaces cannot
be created (not root); CI runs as root, so there they always run.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from test_distributed import TOLERANCE, assert_close_states, final_state, run_argv

from compare.benchmarks.netns import INTERFACE, Host, cannot_create_namespaces, children, network_hosts
from compare.model.checkpoint import load_checkpoint
from compare.training.config import parse_args
from compare.training.loop import train

TESTS = Path(__file__).resolve().parent
PORT = 29500  # the rendezvous port on the first host: free, since each test's namespaces are new
STEPS = 200  # long enough that a worker killed after the first checkpoint is killed mid-run


def host_argv(directory: Path, run_name: str, **flags) -> list:
    """tests/test_distributed.py's run (float64, --impl both, B = 4) for STEPS steps, checkpoints every 5."""
    settings = {"max_steps": STEPS, "epochs": 100, "checkpoint_every": 5, **flags}  # 21 steps an epoch
    return run_argv(directory, run_name, **settings)


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not os.environ.get("CI") and cannot_create_namespaces() is not None,
        reason=f"network namespaces: {cannot_create_namespaces()}",
    ),  # under CI a missing namespace is a failure, not a skip
]


@dataclass
class Launch:
    """One torchrun per host, each started in its host's namespace."""

    agents: list[subprocess.Popen]
    log_dir: Path  # torchrun's: <log_dir>/<host>/<run id>/attempt_<n>/<local rank>/stderr.log

    def wait(self, seconds: float = 200) -> list[int]:
        return [agent.wait(timeout=seconds) for agent in self.agents]

    def worker_stderr(self, host: int, attempt: int = 0) -> str:
        return "".join(path.read_text() for path in self.log_dir.glob(f"h{host}/*/attempt_{attempt}/0/stderr.log"))

    def worker_stdout(self, host: int, attempt: int) -> str:
        """The last stdout of that attempt's worker (a restart that torchrun does not count reuses the file)."""
        return "".join(path.read_text() for path in self.log_dir.glob(f"h{host}/*/attempt_{attempt}/0/stdout.log"))


def launch(hosts: list[Host], directory: Path, argv: list, max_restarts: int = 0) -> Launch:
    """``torchrun --nnodes len(hosts)`` on every host, rendezvous on hosts[0], training ``argv``."""
    log_dir = directory / "torchrun-logs"
    agents = []
    for index, host in enumerate(hosts):
        env = {
            **os.environ,
            "GLOO_SOCKET_IFNAME": INTERFACE,  # the link between the hosts; no other interface is up
            "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",  # restarted workers otherwise hang (pytorch #135712)
            "OMP_NUM_THREADS": "1",
        }
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={len(hosts)}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint={hosts[0].address}:{PORT}",
            "--rdzv-id=hosts-test",
            f"--rdzv-conf=is_host={int(index == 0)}",  # the first host serves the rendezvous store
            f"--local-addr={host.address}",
            f"--max-restarts={max_restarts}",
            "--monitor-interval=0.1",
            f"--log-dir={log_dir / f'h{index}'}",
            "--redirects=3",  # each worker's stdout and stderr into the files Launch reads
            "-m",
            "compare.train",
            *map(str, argv),
        ]
        with open(directory / f"torchrun-{index}.txt", "w") as output:
            agents.append(host.popen(command, cwd=directory, env=env, stdout=output, stderr=subprocess.STDOUT))
    return Launch(agents, log_dir)


def agents_output(directory: Path, count: int) -> str:
    return "\n".join((directory / f"torchrun-{index}.txt").read_text()[-2000:] for index in range(count))


def wait_for(path: Path, launched: Launch, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and all(a.poll() is None for a in launched.agents) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert path.exists(), "no checkpoint appeared"


def first_logged_step(impl_dir: Path) -> int:
    """The first step whose training loss the last attempt logged (in the newest event file that holds losses)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for path in sorted(impl_dir.glob("events.out.tfevents.*"), key=lambda path: -path.stat().st_mtime_ns):
        accumulator = EventAccumulator(str(path), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "loss/train" in accumulator.Tags()["scalars"]:  # not the file of the final hparams
            return accumulator.Scalars("loss/train")[0].step
    raise AssertionError(f"no training loss logged in {impl_dir}")


@pytest.fixture(scope="module")
def two_host_run(tmp_path_factory):
    """STEPS steps of both implementations on 2 hosts, uninterrupted; its directory."""
    directory = tmp_path_factory.mktemp("hosts")
    with network_hosts(2) as hosts:
        launched = launch(hosts, directory, host_argv(directory, "two"))
        assert launched.wait() == [0, 0], agents_output(directory, 2)
    return directory


def test_two_hosts_train_like_one_process_with_the_full_batch(tmp_path, two_host_run):
    train(parse_args(host_argv(tmp_path, "one")))
    for impl in ("manual", "torch"):
        one, two = final_state(tmp_path, "one", impl), final_state(two_host_run, "two", impl)
        assert two.updates == STEPS and two.hidden.shape[2] == 4  # rank 0 gathered host 1's rows
        assert_close_states(one, two, TOLERANCE)  # 1e-12, float64: the batch's gradient summed in halves


@pytest.mark.parametrize("fault", ["killed", "unplugged"])
def test_a_lost_host_stops_the_other_with_one_line_and_the_checkpoint_loads(tmp_path, fault):
    timeout = 5  # --dist-timeout: how long an unplugged host is waited for
    argv = host_argv(
        tmp_path,
        "run",
        impl="manual",
        max_steps=10**6,
        epochs=10**6,
        checkpoint_every=10,
        eval_every=10**6,
        sample_every=10**6,
    )
    latest = tmp_path / "runs" / "run" / "manual" / "latest.npz"
    with network_hosts(2) as hosts:
        launched = launch(hosts, tmp_path, [*argv, "--dist-timeout", timeout])
        wait_for(latest, launched)
        if fault == "killed":
            hosts[1].kill_everything()  # torchrun and its worker: the machine is gone, its kernel resets the links
        else:
            subprocess.run(["ip", "-n", hosts[1].namespace, "link", "set", INTERFACE, "down"], check=True)
        lost_at = time.monotonic()
        exit_code = launched.agents[0].wait(timeout=timeout + 60)
        waited = time.monotonic() - lost_at
    message = launched.worker_stderr(host=0)
    assert exit_code != 0, agents_output(tmp_path, 2)
    assert message.count("\n") == 1 and message.startswith("python -m compare.train [rank 0/2]: error:"), message
    assert "rank 0 of 2 lost contact with rank 1" in message and f"{latest} (step" in message, message
    assert waited < timeout + 30, waited  # within --dist-timeout (and torchrun's teardown), never a hang
    assert load_checkpoint(latest).step % 10 == 0


def test_a_killed_worker_is_restarted_and_resumes_to_the_uninterrupted_result(tmp_path, two_host_run):
    argv = host_argv(tmp_path, "elastic")
    with network_hosts(2) as hosts:
        launched = launch(hosts, tmp_path, argv, max_restarts=1)
        wait_for(tmp_path / "runs" / "elastic" / "torch" / "latest.npz", launched)
        (worker,) = children(launched.agents[1].pid)
        os.kill(worker, 9)  # host 1's rank dies mid-run; torchrun restarts the workers of both hosts
        assert launched.wait() == [0, 0], agents_output(tmp_path, 2)
    # torchrun counts restarts per host: host 0's is 0 or 1, depending on whether its worker saw the loss first
    resumed = launched.worker_stdout(host=0, attempt=0) + launched.worker_stdout(host=0, attempt=1)
    assert f"): resuming from {tmp_path / 'runs' / 'elastic'}" in resumed, resumed
    for impl in ("manual", "torch"):
        first = first_logged_step(tmp_path / "runs" / "elastic" / impl)
        assert first > 1 and (first - 1) % 5 == 0, first  # the last attempt began after a checkpoint, not at step 1
        restarted, uninterrupted = final_state(tmp_path, "elastic", impl), final_state(two_host_run, "two", impl)
        assert restarted.updates == STEPS
        assert_close_states(uninterrupted, restarted, TOLERANCE)  # 1e-12 float64, as asked; measured: identical
        np.testing.assert_array_equal(uninterrupted.params["W"], restarted.params["W"])  # a resume repeats bit for bit
