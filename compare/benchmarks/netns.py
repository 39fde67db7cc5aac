"""Separate network hosts on this machine: Linux network namespaces joined by veth pairs to a bridge.

What tests/test_hosts.py trains between, and what ``python -m compare.bench --distributed --hosts 1,2``
measures on (compare.benchmarks.hosts).

    with network_hosts(2) as hosts:          # hosts[0].address == "10.77.0.1", each with its own veth0
        hosts[0].popen(["python", "-c", "..."])

Each host is a namespace with its own loopback and one interface, ``veth0``, whose other end
is plugged into a bridge that lives in a namespace of its own (the "switch"): the hosts see
each other on 10.77.0.0/24 and nothing else, and the machine's own namespace gains nothing
but, for a moment, the veth ends before they are moved. Names carry a random tag, so a crashed
run's leftovers never collide with the next one; everything is removed on leaving the block,
also when the test inside failed. Needs root (CAP_NET_ADMIN) and iproute2's ``ip``.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NETNS_ETC = Path("/etc/netns")  # `ip netns exec NS` bind-mounts /etc/netns/NS/hosts over /etc/hosts
SUBNET = "10.77.0"  # /24, seen only inside these namespaces
INTERFACE = "veth0"  # the name of every host's one interface, in its own namespace


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def cannot_create_namespaces() -> str | None:
    """Why network namespaces cannot be made here (a skip reason), or None."""
    if shutil.which("ip") is None:
        return "iproute2's `ip` is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "creating network namespaces needs root"
    probe = f"bpprobe{uuid.uuid4().hex[:6]}"
    try:
        ip("netns", "add", probe)
    except subprocess.CalledProcessError as error:
        return f"`ip netns add` fails here: {error.stderr.strip()}"
    ip("netns", "delete", probe)
    return None


@dataclass
class Host:
    """One network host: a namespace, its address on the private link, and the processes started in it."""

    namespace: str
    address: str
    processes: list[subprocess.Popen] = field(default_factory=list)

    def popen(self, command: list[str], **kwargs: Any) -> subprocess.Popen:
        """``command`` started inside this host's namespace (``ip netns exec`` execs into it: same pid)."""
        process = subprocess.Popen(["ip", "netns", "exec", self.namespace, *command], **kwargs)
        self.processes.append(process)
        return process

    def pids(self) -> list[int]:
        """Every process inside this host's namespace."""
        listed = subprocess.run(["ip", "netns", "pids", self.namespace], capture_output=True, text=True, timeout=30)
        return [int(word) for word in listed.stdout.split()]

    def kill_everything(self) -> None:
        """The host is gone: SIGKILL every process in it at once, as a power cut would."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(word) for word in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def write_hosts_files(hosts: list[Host]) -> None:
    """Every host's name resolves, and so does every address back to a name (c10d asks), in every namespace."""
    # c10d's store listens on IPv6 too, and looks its clients up by their IPv4-mapped address: list both forms.
    table = "127.0.0.1 localhost\n::1 localhost\n" + "".join(
        f"{host.address} {host.namespace}\n::ffff:{host.address} {host.namespace}\n" for host in hosts
    )
    for host in hosts:
        (NETNS_ETC / host.namespace).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / host.namespace / "hosts").write_text(table)


@contextmanager
def network_hosts(count: int) -> Iterator[list[Host]]:
    """``count`` hosts, 10.77.0.1 ... 10.77.0.<count>, on one private bridge; all removed on exit."""
    tag = f"bp{uuid.uuid4().hex[:6]}"  # interface names hold at most 15 characters
    switch = f"{tag}-sw"
    hosts = [Host(f"{tag}-h{index}", f"{SUBNET}.{index + 1}") for index in range(count)]
    made: list[str] = []
    try:
        ip("netns", "add", switch)
        made.append(switch)
        ip("-n", switch, "link", "add", "br0", "type", "bridge")
        ip("-n", switch, "link", "set", "br0", "up")
        for index, host in enumerate(hosts):
            ip("netns", "add", host.namespace)
            made.append(host.namespace)
            outer, inner = f"{tag}s{index}", f"{tag}h{index}"
            ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            ip("link", "set", outer, "netns", switch)
            ip("link", "set", inner, "netns", host.namespace)
            ip("-n", switch, "link", "set", outer, "master", "br0", "up")
            ip("-n", host.namespace, "link", "set", inner, "name", INTERFACE)
            ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", INTERFACE)
            ip("-n", host.namespace, "link", "set", INTERFACE, "up")
            ip("-n", host.namespace, "link", "set", "lo", "up")
        write_hosts_files(hosts)
        yield hosts
    finally:
        for host in hosts:
            for process in host.processes:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            host.kill_everything()  # what a started process left running in the namespace
        for host in hosts:
            shutil.rmtree(NETNS_ETC / host.namespace, ignore_errors=True)
        for namespace in reversed(made):  # deleting a namespace deletes its interfaces, and their veth peers
            subprocess.run(["ip", "netns", "delete", namespace], capture_output=True, timeout=30)
