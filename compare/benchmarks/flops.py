"""How much arithmetic a training character costs, and how fast this machine multiplies matrices.

The count is of multiply-adds in matrix products, forward and backward, per character,
for the one-layer vanilla RNN (H hidden units, V characters in the vocabulary):

    forward    W h_{t-1}                       H*H
               V h_t                           V*H     (U x_t is a column lookup: none)
    backward   dV += do_t h_t^T                V*H
               dh_t = V^T do_t + ...           V*H
               dW += da_t h_{t-1}^T            H*H
               dh_{t-1} = W^T da_t             H*H     (dU += da_t x_t^T adds a column: none)
    total      3 H^2 + 3 V H multiply-adds = 2 (3 H^2 + 3 V H) floating-point operations

Element-wise work (tanh, softmax, AdaGrad) is O(H + V) per character and is not counted,
and neither is any multiply-add an implementation spends beyond these (for instance a
product with a one-hot matrix): the rate is that of the work the model needs.
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass

import numpy as np

PEAK_MATRIX_SIZE = 2048  # n of the n x n float32 product that measures the peak
PEAK_REPEATS = 5


def macs_per_char(hidden_size: int, vocab_size: int) -> int:
    """Multiply-adds of forward and backward for one character: 3 H^2 + 3 V H (see the module doc)."""
    return 3 * hidden_size * hidden_size + 3 * vocab_size * hidden_size


def flops_per_char(hidden_size: int, vocab_size: int) -> int:
    """Floating-point operations per character: a multiply-add is two."""
    return 2 * macs_per_char(hidden_size, vocab_size)


@dataclass
class MatmulPeak:
    """GFLOP/s of one large float32 matrix product, the best of a few, in each library."""

    numpy_gflops: float
    torch_gflops: float

    @property
    def gflops(self) -> float:
        """The machine's peak: the faster library, so that no implementation is flattered."""
        return max(self.numpy_gflops, self.torch_gflops)


def best_seconds(multiply, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, after one untimed call that warms caches and threads."""
    multiply()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        multiply()
        times.append(time.perf_counter() - start)
    return min(times)


def measure_matmul_peak(size: int = PEAK_MATRIX_SIZE, repeats: int = PEAK_REPEATS) -> MatmulPeak:
    """Time an n x n by n x n float32 product (2 n^3 operations) in NumPy and in torch."""
    import torch

    rng = np.random.default_rng(0)
    left = rng.standard_normal((size, size), dtype=np.float32)
    right = rng.standard_normal((size, size), dtype=np.float32)
    left_tensor, right_tensor = torch.from_numpy(left), torch.from_numpy(right)
    operations = 2 * size**3
    numpy_seconds = best_seconds(lambda: left @ right, repeats)
    torch_seconds = best_seconds(lambda: left_tensor @ right_tensor, repeats)
    return MatmulPeak(operations / numpy_seconds / 1e9, operations / torch_seconds / 1e9)


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


def system_busy_seconds() -> float | None:
    """CPU seconds every process on the machine has used since boot (Linux /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as stat:
            fields = [int(value) for value in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle and iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # user .. steal, without guest (counted in user)


@dataclass
class LoadMonitor:
    """How much CPU other processes took while this one was measuring: a shared machine's noise.

    Timing is only trustworthy when the rest of the machine is idle; this measures that,
    between ``start()`` and ``other_load_pct()``, as the CPU time the whole machine used
    minus this process's own (children included), over the cores' wall-clock capacity.
    """

    cores: int
    started_wall: float = 0.0
    started_busy: float | None = None
    started_own: float = 0.0

    def start(self) -> LoadMonitor:
        self.started_wall, self.started_busy, self.started_own = time.perf_counter(), system_busy_seconds(), own_cpu()
        return self

    def other_load_pct(self) -> float | None:
        """Percent of the machine's CPU capacity used by other processes since start(), or None."""
        busy = system_busy_seconds()
        if busy is None or self.started_busy is None:
            return None
        capacity = (time.perf_counter() - self.started_wall) * (os.cpu_count() or self.cores)
        others = (busy - self.started_busy) - (own_cpu() - self.started_own)
        return max(0.0, 100.0 * others / capacity)


def own_cpu() -> float:
    """CPU seconds used by this process and its finished children."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
