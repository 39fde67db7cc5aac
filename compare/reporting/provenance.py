"""Where a block's figures come from: the commit, the CPU, the threads, the load, the date.

The load is what makes a timing readable: on a shared machine other processes take CPU
time from the one being measured. ``LoadMeter`` measures their share over a section from
/proc/stat (all CPU time spent on the machine) minus the CPU time of this process and
every child it waited for (the commands it ran, their own children included); where there
is no /proc/stat it falls back on the load average alone.
"""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from compare.reporting.text import duration

PROC_STAT = Path("/proc/stat")
TINY_WARNING = " Toy sizes (--tiny): these figures check the machinery and measure nothing."
CPUINFO = Path("/proc/cpuinfo")


def usable_cores() -> int:
    """Cores this process may run on (its affinity), which is what the libraries' thread pools use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS has no affinity
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU's marketing name, e.g. ``AMD EPYC``; the platform's word for it if /proc/cpuinfo has none."""
    try:
        for line in CPUINFO.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def commit(repo: Path) -> str:
    """``git rev-parse --short HEAD``, with ``+dirty`` if the tree has changes; ``unknown`` outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True)
        changes = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True)
    except OSError:  # no git at all
        return "unknown"
    if head.returncode != 0:
        return "unknown"
    return head.stdout.strip() + ("+dirty" if changes.stdout.strip() else "")


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs since boot, from the first line of /proc/stat; None without it."""
    try:
        fields = [int(value) for value in PROC_STAT.read_text(encoding="ascii").splitlines()[0].split()[1:9]]
    except (OSError, ValueError, IndexError):
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    # steal (time the hypervisor gave to other machines) is CPU this machine did not get: count it as busy
    return user + nice + system + irq + softirq + steal, sum(fields)


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has waited for."""
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return mine.ru_utime + mine.ru_stime + children.ru_utime + children.ru_stime


def load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


@dataclass
class LoadReading:
    """What LoadMeter measured over one section."""

    seconds: float
    others_share: float | None  # of all the CPUs' time, 0 to 1; None where /proc/stat is missing
    cpus: int
    load_before: float | None
    load_after: float | None

    def describe(self) -> str:
        loads = "n/a" if self.load_before is None else f"{self.load_before:.2f} -> {self.load_after:.2f}"
        if self.others_share is None:
            return f"load average {loads}"
        return f"other processes used {self.others_share:.0%} of the {self.cpus} CPUs (load average {loads})"


class LoadMeter:
    """``with LoadMeter() as meter: ...``, then ``meter.reading``: others' CPU share over the block."""

    def __enter__(self) -> LoadMeter:
        self.started, self.ticks, self.own = time.perf_counter(), machine_ticks(), own_cpu_seconds()
        self.load_before = load_average()
        return self

    def __exit__(self, *exc_info: object) -> None:
        seconds = time.perf_counter() - self.started
        ticks, own = machine_ticks(), own_cpu_seconds() - self.own
        share = None
        if ticks is not None and self.ticks is not None and ticks[1] > self.ticks[1]:
            per_second = os.sysconf("SC_CLK_TCK")
            busy = (ticks[0] - self.ticks[0]) / per_second
            total = (ticks[1] - self.ticks[1]) / per_second
            share = min(1.0, max(0.0, (busy - own) / total))
        self.reading = LoadReading(seconds, share, os.cpu_count() or 1, self.load_before, load_average())


@dataclass
class Machine:
    """The facts every provenance line repeats, gathered once per report."""

    commit: str
    cpu: str
    threads: int
    report_command: str
    tiny: bool = False

    @classmethod
    def here(cls, repo: Path, threads: int, report_command: str, tiny: bool = False) -> Machine:
        return cls(commit(repo), cpu_model(), threads, report_command, tiny)

    def line(self, commands: list, reading: LoadReading, threads: str | None = None) -> str:
        """The provenance line at the top of a block: who made it, where, under what load, with what."""
        date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        shown = "; ".join(f"`{command}`" for command in commands)
        label = "Command" if len(commands) == 1 else "Commands"
        return (
            f"*Generated by `{self.report_command}` on {date}: commit {self.commit}, {self.cpu}, "
            f"{threads or f'{self.threads} threads'}; {reading.describe()}; "
            f"the section took {duration(reading.seconds)}. "
            f"{label}: {shown}.{TINY_WARNING if self.tiny else ''}*"
        )
