"""How much arithmetic a training character costs, and how fast this machine multiplies matrices.

The count is of multiply-adds in matrix products, forward and backward, per character,
for one layer of H hidden units with G gate blocks (G = 1 for the vanilla RNN, 3 for the
GRU, 4 for the LSTM) and V characters in the vocabulary:

    forward    W h_{t-1}        W (G*H, H)      G*H*H   (all gates in one product)
               V h_t                            V*H     (U x_t is a column lookup: none)
    backward   dV += do_t h_t^T                 V*H
               dh_t = V^T do_t + ...            V*H
               dW += da_t h_{t-1}^T             G*H*H   (da_t: the G gate blocks' pre-activations)
               dh_{t-1} = W^T da_t + ...        G*H*H   (dU += da_t x_t^T adds a column: none)
    total      3 G H^2 + 3 V H multiply-adds = 2 (3 G H^2 + 3 V H) floating-point operations

For the vanilla RNN (G = 1) that is 3 H^2 + 3 V H. The GRU's candidate reads r_t * (W_n h_{t-1})
or W_n (r_t * h_{t-1}): either way its block is one H*H product each way, inside the G*H*H.
Element-wise work (tanh, sigmoid, softmax, AdaGrad) is O(G H + V) per character and is not
counted, and neither is any multiply-add an implementation spends beyond these (a product
with a one-hot matrix, or PyTorch's fused modules' input matrix weight_ih (G*H, H), which an
embedding feeds: 3 G H^2 more a character): the rate is that of the work the model needs.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PEAK_MATRIX_SIZE = 2048  # n of the n x n float32 product that measures the peak
PEAK_REPEATS = 3  # timed products per library and measurement; the benchmark measures it several times
CLEAN_LOAD_PCT = 10.0  # above this share of the CPUs taken by other processes, a run is not clean


def macs_per_char(hidden_size: int, vocab_size: int, gates: int = 1) -> int:
    """Multiply-adds of forward and backward for one character: 3 G H^2 + 3 V H (see the module doc)."""
    return 3 * gates * hidden_size * hidden_size + 3 * vocab_size * hidden_size


def flops_per_char(hidden_size: int, vocab_size: int, gates: int = 1) -> int:
    """Floating-point operations per character: a multiply-add is two."""
    return 2 * macs_per_char(hidden_size, vocab_size, gates)


@dataclass
class MatmulPeak:
    """GFLOP/s of one large float32 matrix product on ``threads`` threads, the best of a few, in each library."""

    numpy_gflops: float
    torch_gflops: float
    threads: int = 1
    when: str = ""  # where in the benchmark it was measured, e.g. "before seed"

    @property
    def gflops(self) -> float:
        """The machine's peak: the faster library, so that no implementation is flattered."""
        return max(self.numpy_gflops, self.torch_gflops)


def best_seconds(multiply: Callable[[], object], repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one untimed call that warms caches and threads."""
    multiply()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_matmul_peak(threads: int, size: int = PEAK_MATRIX_SIZE, repeats: int = PEAK_REPEATS) -> MatmulPeak:
    """Time an n x n by n x n float32 product (2 n^3 operations) in NumPy and in torch on ``threads`` threads."""
    import torch
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(0)
    left = rng.standard_normal((size, size), dtype=np.float32)
    right = rng.standard_normal((size, size), dtype=np.float32)
    left_tensor, right_tensor = torch.from_numpy(left), torch.from_numpy(right)
    operations = 2 * size**3
    threads_before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with threadpool_limits(limits=threads):  # restores the caller's BLAS limit on the way out
            numpy_seconds = best_seconds(lambda: left @ right, repeats)
            torch_seconds = best_seconds(lambda: left_tensor @ right_tensor, repeats)
    finally:
        torch.set_num_threads(threads_before)
    return MatmulPeak(operations / numpy_seconds / 1e9, operations / torch_seconds / 1e9, threads)


@dataclass
class PeakLog:
    """The matmul peak measured again and again during a benchmark, for each thread count; the best counts.

    Another process that takes a core while the peak is measured makes the peak too low and
    every "% of peak" too high; measuring it before, between and after the timed
    configurations and keeping the best gives the quietest moment of the run.
    """

    thread_counts: tuple
    size: int = PEAK_MATRIX_SIZE
    samples: list = field(default_factory=list)

    def measure(self, when: str, tick: Callable[[], None] = lambda: None) -> None:
        for threads in self.thread_counts:
            sample = measure_matmul_peak(threads, self.size)
            sample.when = when
            self.samples.append(sample)
            tick()

    def best(self, threads: int) -> MatmulPeak:
        """The best of every measurement on ``threads`` threads, each library's best on its own."""
        samples = [sample for sample in self.samples if sample.threads == threads]
        if not samples:
            raise ValueError(f"the peak was never measured on {threads} thread(s)")
        numpy_best = max(sample.numpy_gflops for sample in samples)
        torch_best = max(sample.torch_gflops for sample in samples)
        return MatmulPeak(numpy_best, torch_best, threads, f"best of {len(samples)}")

    def count(self, threads: int) -> int:
        return sum(sample.threads == threads for sample in self.samples)


def peak_thread_counts(threads: int) -> tuple:
    """1 thread, every core, and the benchmark's own thread count if it is neither."""
    return tuple(sorted({1, available_cores(), threads}))


def cpu_model() -> str:
    """The processor's name as the kernel reports it (platform's guess elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_cores() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def allowed_cpus() -> set | None:
    try:
        return set(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return None


@dataclass
class LoadMonitor:
    """The share of this process's CPUs that other processes used between ``start()`` and ``other_load_pct()``.

    Timing is only trustworthy when the rest of the machine is idle. From /proc (Linux): the
    busy clock ticks of the CPUs this process may run on (/proc/stat, one line per CPU), minus
    the ticks of this process and of its descendants, live (torch.compile's worker processes)
    or finished (/proc/PID/stat), over all the ticks of those CPUs, busy or idle. All in the
    kernel's clock ticks, so no wall clock is involved. ``proc`` and ``pid`` are for tests.
    """

    proc: Path = Path("/proc")
    pid: int = field(default_factory=os.getpid)
    cpus: set | None = field(default_factory=allowed_cpus)  # None: every CPU
    started: tuple | None = None  # (busy, total, own) ticks at start()

    def start(self) -> LoadMonitor:
        self.started = self.ticks()
        return self

    def ticks(self) -> tuple | None:
        """(busy, total) ticks of the CPUs and this process tree's ticks, or None without /proc."""
        try:
            busy, total = cpu_ticks((self.proc / "stat").read_text(encoding="ascii"), self.cpus)
            return busy, total, process_tree_ticks(self.proc, self.pid)
        except (OSError, ValueError):
            return None

    def other_load_pct(self) -> float | None:
        """Percent of the CPUs' capacity that other processes used since start(), or None where unreadable."""
        now = self.ticks()
        if now is None or self.started is None:
            return None
        busy, total, own = (later - earlier for later, earlier in zip(now, self.started, strict=True))
        if total <= 0:
            return None
        return min(100.0, max(0.0, 100.0 * (busy - own) / total))


def cpu_ticks(stat_text: str, cpus: set | None) -> tuple:
    """(busy, total) clock ticks of ``cpus`` (every CPU when None) from the text of /proc/stat."""
    busy = total = 0
    for line in stat_text.splitlines():
        name, *values = line.split() or [""]
        if not (name.startswith("cpu") and name[3:].isdigit()) or (cpus is not None and int(name[3:]) not in cpus):
            continue  # the "cpu" line sums every CPU, those this process may not use included
        user, nice, system, idle, iowait, irq, softirq, steal = (int(value) for value in values[:8])
        busy += user + nice + system + irq + softirq + steal  # guest time is already inside user
        total += user + nice + system + idle + iowait + irq + softirq + steal
    if total == 0:
        raise ValueError("no per-CPU lines for these CPUs in /proc/stat")
    return busy, total


def process_tree_ticks(proc: Path, root_pid: int) -> int:
    """Clock ticks used by ``root_pid`` and every descendant, each with its finished children (/proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    own_ticks: dict[int, int] = {}
    for stat_path in proc.glob("[0-9]*/stat"):
        try:
            text = stat_path.read_text(encoding="ascii", errors="replace")
        except OSError:  # the process ended while we looked
            continue
        fields = text[text.rindex(")") + 2 :].split()  # after "pid (comm) ": the name may hold spaces
        pid = int(stat_path.parent.name)
        children.setdefault(int(fields[1]), []).append(pid)  # fields[1] is the parent's pid
        own_ticks[pid] = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    if root_pid not in own_ticks:
        raise ValueError(f"no /proc/{root_pid}/stat")
    tree, frontier = {root_pid}, [root_pid]
    while frontier:
        for child in children.get(frontier.pop(), []):
            if child not in tree:
                tree.add(child)
                frontier.append(child)
    return sum(own_ticks[pid] for pid in tree)
