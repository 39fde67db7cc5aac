"""Flush denormal floats to zero in every thread that computes: this one, and NumPy's BLAS threads.

``torch.set_flush_denormal`` sets the floating-point mode of the calling thread only (the FTZ and
DAZ bits of x86's MXCSR), and a new thread inherits the mode of the thread that creates it.
torch's OpenMP pool starts at its first parallel region, after the benchmark has set the mode, and
so flushes too. OpenBLAS starts its worker threads when NumPy is imported, before any flag is read:
they stayed in IEEE mode, and the share of each product they computed met denormals at full cost.
Measured (H512 B128 T25 LSTM, float32, 2 threads): manual's step grew from 140 to 230 ms as training
made denormal gradients, while on 1 thread, where BLAS runs in this thread, it stayed at 188 ms. So
the BLAS thread pool is shut down and started again from this thread, once its mode is set:
OpenBLAS exports the two functions its fork handler uses for that.
"""

from __future__ import annotations

import ctypes


def set_flush_denormal(flush: bool) -> None:
    """Flush denormals to zero (True) or keep IEEE arithmetic (False), in this thread and NumPy's BLAS threads."""
    import torch

    torch.set_flush_denormal(flush)
    restart_openblas_threads()


def restart_openblas_threads() -> int:
    """Start every loaded OpenBLAS's worker threads again from this thread, so they take its floating-point
    mode. Returns how many libraries were restarted (none where NumPy uses another BLAS)."""
    from threadpoolctl import threadpool_info

    restarted = 0
    for library in threadpool_info():
        if library["internal_api"] != "openblas":
            continue
        openblas = ctypes.CDLL(library["filepath"])  # the library already loaded: the same handle
        if hasattr(openblas, "blas_thread_shutdown_") and hasattr(openblas, "blas_thread_init"):
            openblas.blas_thread_shutdown_()  # joins the idle workers; no BLAS call is running here
            openblas.blas_thread_init()  # new workers, created by this thread: its mode
            restarted += 1
    return restarted
