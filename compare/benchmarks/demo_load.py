"""The demo server under clients that hammer POST /api/generate: how long its short requests take.

    python -m compare.bench --demo --checkpoint runs/quickstart             # 200 clients that retry a 503 at once
    python -m compare.bench --demo --checkpoint runs/quickstart --polite    # ...that wait as Retry-After asks

It starts the command's own server (``python -m compare.demo --port 0``, a subprocess) on
loopback. In a second subprocess, ``--clients`` asyncio clients POST ``--length``-character
generate requests back to back for ``--seconds`` seconds, each on a fresh connection, and send
the next one as soon as a 503 arrives (``--polite``: after its Retry-After). Meanwhile this process
times ``--short`` requests that generate nothing (``GET /`` and ``GET /api/info`` in turn), spread
evenly over the same seconds, each on a fresh connection as a browser's first visit would be.
It prints their p50, p99 and slowest time, every status both kinds of client got, the server's
memory, and the load average; then it stops the server with Ctrl-C (SIGINT). Everything stops by
itself: the clients at their deadline, every request after ``REQUEST_TIMEOUT`` seconds at most.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import numpy as np

from compare.cli.errors import UsageError, run_cli
from compare.cli.parser import CommandParser
from compare.model.checkpoint import NEWEST_RULE, checkpoint_or_newest

PROG = "python -m compare.bench --demo"
REQUEST_TIMEOUT = 30.0  # seconds any one request may take before it counts as failed (status 0)
WARM_UP = 1.0  # seconds the clients hammer before the first short request is timed
SHORT_PATHS = ("/", "/api/info")


@dataclass
class LoadSettings:
    checkpoint: str
    clients: int = 200
    seconds: float = 10.0
    short: int = 200
    length: int = 2000
    polite: bool = False


@dataclass
class LoadFigures:
    """What one load run measured; latencies in seconds, memory in MiB."""

    short_p50_s: float
    short_p99_s: float
    short_max_s: float
    short_statuses: dict[int, int]  # status -> count; 0: no answer (refused, reset, timed out)
    short_seconds: list[float]  # every short request's time, in the order they were sent
    generate_statuses: dict[int, int]
    rss_start_mib: float
    rss_peak_mib: float
    server_exit_code: int | None
    server_stderr: str
    server_pid: int
    load_average: tuple[float, float]  # 1-minute load average before and after


def build_parser() -> CommandParser:
    parser = CommandParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--checkpoint", default=None, help=f"the checkpoint or run directory to serve (default: {NEWEST_RULE})"
    )
    parser.add_argument("--logdir", default="runs", help="where to look for the newest run without --checkpoint")
    parser.add_argument("--clients", type=int, default=LoadSettings.clients, help="clients that POST generate")
    parser.add_argument("--seconds", type=float, default=LoadSettings.seconds, help="how long they keep at it")
    parser.add_argument("--short", type=int, default=LoadSettings.short, help="short requests timed in that time")
    parser.add_argument(
        "--length", type=int, default=LoadSettings.length, help="characters each generate request asks for"
    )
    parser.add_argument(
        "--polite", action="store_true", help="the clients wait as a 503's Retry-After asks, instead of at once"
    )
    parser.add_argument("--json", metavar="PATH", default=None, help="also write the figures to PATH as JSON")
    return parser


def http_request(method: str, path: str, body: bytes = b"") -> bytes:
    """One HTTP/1.1 request that asks the server to close the connection after answering."""
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode("ascii") + body


def status_of(answer: bytes) -> int:
    """The status code of a raw HTTP answer; 0 if there is none."""
    parts = answer.split(b" ", 2)
    return int(parts[1]) if len(parts) > 1 and answer.startswith(b"HTTP/1.1 ") and parts[1].isdigit() else 0


def retry_after(answer: bytes) -> float:
    for line in answer.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"retry-after" and value.strip().isdigit():
            return float(value)
    return 0.0


async def post_once(address: tuple[str, int], request: bytes) -> bytes:
    """The raw answer to one request on a fresh connection; b"" if the connection failed."""
    try:
        return await asyncio.wait_for(exchange(address, request), REQUEST_TIMEOUT)
    except (OSError, asyncio.TimeoutError):
        return b""


async def exchange(address: tuple[str, int], request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(request)
        return await reader.read()  # to the end: the server closes after its answer
    finally:
        writer.close()


async def hammer(address: tuple[str, int], settings: LoadSettings, deadline: float) -> Counter[int]:
    """``settings.clients`` clients POSTing generate requests until ``deadline`` (time.monotonic)."""
    request = http_request("POST", "/api/generate", json.dumps({"length": settings.length}).encode())
    statuses: Counter[int] = Counter()

    async def client() -> None:
        while time.monotonic() < deadline:
            answer = await post_once(address, request)
            statuses[status_of(answer)] += 1
            if settings.polite and status_of(answer) == 503:
                await asyncio.sleep(retry_after(answer))
            elif not answer:  # refused or reset: a moment before the next, so as not to spin
                await asyncio.sleep(0.01)

    await asyncio.gather(*(client() for _ in range(settings.clients)))
    return statuses


def hammer_process(address: tuple[str, int], settings: LoadSettings, results: Connection) -> None:
    """The clients' process (its own event loop and GIL, so that they do not slow the timed requests here).

    It says "started", hammers for WARM_UP + ``settings.seconds`` seconds, then sends the statuses it got.
    """
    deadline = time.monotonic() + WARM_UP + settings.seconds
    results.send("started")
    results.send(dict(asyncio.run(hammer(address, settings, deadline))))


def short_request(address: tuple[str, int], path: str) -> tuple[int, float]:
    """(status, seconds) of one GET on a fresh connection, from connect to the server's close."""
    start = time.perf_counter()
    answer = b""
    try:
        with socket.create_connection(address, timeout=REQUEST_TIMEOUT) as connection:
            connection.sendall(http_request("GET", path))
            while chunk := connection.recv(65536):
                answer += chunk
    except OSError:
        answer = b""
    return status_of(answer), time.perf_counter() - start


def rss_mib(pid: int) -> float:
    """The resident memory of process ``pid``, in MiB (Linux; 0 elsewhere)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def start_server(checkpoint: str, stderr_file: IO[str]) -> tuple[subprocess.Popen, tuple[str, int]]:
    """``python -m compare.demo`` on a free loopback port, and its address once it serves."""
    # stderr to a file, not a pipe: a pipe nobody reads fills up, and the server's next log line blocks
    process = subprocess.Popen(
        [sys.executable, "-m", "compare.demo", "--checkpoint", checkpoint, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "serving <run> (...) at http://127.0.0.1:<port>/", or "" if it failed
    if not line:
        process.wait(timeout=REQUEST_TIMEOUT)
        stderr_file.seek(0)
        raise UsageError(f"the demo server did not start: {stderr_file.read().strip() or 'no message'}")
    url = urlsplit(line.split(" at ")[-1].strip())
    assert url.hostname is not None and url.port is not None, line
    return process, (url.hostname, url.port)


def stop_server(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGINT)  # Ctrl-C: the running requests finish, then it exits
    try:
        process.communicate(timeout=REQUEST_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()


def measure(settings: LoadSettings) -> LoadFigures:
    """One load run, from the server's start to its stop (see the module's docstring)."""
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryFile(mode="w+") as stderr_file:
        process, address = start_server(settings.checkpoint, stderr_file)
        rss: list[float] = []
        try:
            if short_request(address, "/api/info")[0] != 200 or status_of_generate(address) != 200:
                raise RuntimeError("the demo server does not answer")  # the first sample also imports a little
            rss.append(rss_mib(process.pid))
            stop = threading.Event()
            watcher = threading.Thread(target=watch_memory, args=(process.pid, rss, stop))
            watcher.start()
            try:
                timed, generate_statuses = timed_under_load(address, settings)
            finally:
                stop.set()
                watcher.join()
        finally:
            stop_server(process)
        stderr_file.seek(0)
        stderr = stderr_file.read()
    latencies = np.array([seconds for _, seconds in timed])
    return LoadFigures(
        short_p50_s=float(np.percentile(latencies, 50)),
        short_p99_s=float(np.percentile(latencies, 99)),
        short_max_s=float(latencies.max()),
        short_statuses=dict(sorted(Counter(status for status, _ in timed).items())),
        short_seconds=latencies.tolist(),
        generate_statuses=dict(sorted(generate_statuses.items())),
        rss_start_mib=rss[0],
        rss_peak_mib=max(rss),
        server_exit_code=process.returncode,
        server_stderr=stderr,
        server_pid=process.pid,
        load_average=(load_before, os.getloadavg()[0]),
    )


def timed_under_load(address: tuple[str, int], settings: LoadSettings) -> tuple[list[tuple[int, float]], dict]:
    """The short requests' (status, seconds), and the generate requests' statuses, of one load run."""
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no copy of this one's threads and locks
    results, sender = spawn.Pipe(duplex=False)
    clients = spawn.Process(target=hammer_process, args=(address, settings, sender))
    clients.start()
    try:
        if not results.poll(REQUEST_TIMEOUT):
            raise RuntimeError("the clients' process did not start")
        results.recv()  # "started"
        timed = time_short_requests(address, settings, time.monotonic() + WARM_UP)
        generate_statuses = results.recv() if results.poll(REQUEST_TIMEOUT + WARM_UP + settings.seconds) else {}
    finally:
        clients.join(timeout=REQUEST_TIMEOUT)
        if clients.is_alive():
            clients.terminate()
            clients.join()
    return timed, generate_statuses


def status_of_generate(address: tuple[str, int]) -> int:
    return status_of(asyncio.run(post_once(address, http_request("POST", "/api/generate", b'{"length": 10}'))))


def time_short_requests(address: tuple[str, int], settings: LoadSettings, start: float) -> list[tuple[int, float]]:
    """(status, seconds) of ``settings.short`` short requests, spread evenly over the load's seconds.

    Each request gives up after REQUEST_TIMEOUT seconds, and none starts that long after the load's end.
    """
    timed = []
    give_up = start + settings.seconds + REQUEST_TIMEOUT
    for i in range(settings.short):
        time.sleep(max(0.0, start + i * settings.seconds / settings.short - time.monotonic()))
        if time.monotonic() > give_up:
            break
        timed.append(short_request(address, SHORT_PATHS[i % len(SHORT_PATHS)]))
    return timed


def watch_memory(pid: int, rss: list[float], stop: threading.Event) -> None:
    while not stop.wait(0.25):
        rss.append(rss_mib(pid))


def summary(settings: LoadSettings, figures: LoadFigures) -> str:
    retry = "after Retry-After" if settings.polite else "at once"
    return (
        f"{settings.clients} clients POST {settings.length}-character generate requests for {settings.seconds:g} s, "
        f"retrying a 503 {retry}; {settings.short} short requests ({' and '.join(SHORT_PATHS)}) meanwhile\n"
        f"short requests: p50 {figures.short_p50_s:.3f} s, p99 {figures.short_p99_s:.3f} s, "
        f"slowest {figures.short_max_s:.3f} s; statuses {figures.short_statuses}\n"
        f"generate requests: statuses {figures.generate_statuses}\n"
        f"server memory: {figures.rss_start_mib:.0f} MiB at the start, {figures.rss_peak_mib:.0f} MiB at most; "
        f"load average {figures.load_average[0]:.2f} -> {figures.load_average[1]:.2f} on {os.cpu_count()} CPUs"
    )


def parse_args(argv: list[str]) -> tuple[LoadSettings, str | None]:
    parser = build_parser()
    args = parser.parse_args(argv)
    for flag, value in (("--clients", args.clients), ("--short", args.short), ("--length", args.length)):
        if value < 1:
            parser.error(f"{flag} must be at least 1, got {value}")
    if not 0 < args.seconds < float("inf"):
        parser.error(f"--seconds must be a positive number, got {args.seconds}")
    if args.json is not None and not Path(args.json).resolve().parent.is_dir():
        parser.error(f"--json {args.json}: the directory {Path(args.json).resolve().parent} does not exist")
    checkpoint = checkpoint_or_newest(args.checkpoint, args.logdir)
    settings = LoadSettings(checkpoint, args.clients, args.seconds, args.short, args.length, args.polite)
    return settings, args.json


def load_command(argv: list[str]) -> int:
    settings, json_path = parse_args(argv)
    figures = measure(settings)
    print(summary(settings, figures))
    if json_path:
        document = {"settings": asdict(settings), "figures": asdict(figures)}
        Path(json_path).write_text(json.dumps(document, indent=1) + "\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr and exit code 2."""
    return run_cli(PROG, load_command, argv)


if __name__ == "__main__":
    sys.exit(main())
