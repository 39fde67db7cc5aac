"""The newest run under a log directory: what compare.sample and compare.demo use without --checkpoint.

"Newest" is the run directory (``<logdir>/<run>``) holding the checkpoint written last:
the largest modification time among its ``<impl>/latest.npz`` and ``<impl>/best.npz``. A
run that is still training is newest while it saves; a run name or a directory's own
time says nothing of when training wrote. Only file times are read: no checkpoint is opened
here, and loading the one chosen imports no module it names (compare.model.cells.checkpoint_cell).
"""

from __future__ import annotations

import sys
from pathlib import Path

from compare.cli.errors import UsageError
from compare.data.inputs import not_a_directory
from compare.model.checkpoint import BEST, IMPL_DIRS, LATEST

TRAIN_COMMAND = "python -m compare.train"
NEWEST_RULE = "the newest run under --logdir: the one whose latest.npz or best.npz was written last"


def last_written(run_dir: Path) -> int | None:
    """Modification time (ns) of the newest checkpoint in ``run_dir``'s implementation directories; None if none."""
    times = [
        (run_dir / impl / name).stat().st_mtime_ns
        for impl in IMPL_DIRS
        for name in (LATEST, BEST)
        if (run_dir / impl / name).is_file()
    ]
    return max(times, default=None)


def newest_run(logdir: str | Path) -> Path:
    """The run directory under ``logdir`` whose checkpoint was written last; UsageError when there is none."""
    logdir = Path(logdir)
    problem = not_a_directory(logdir)
    if problem:
        raise UsageError(
            f"--logdir {logdir}: {problem}; pass the directory {TRAIN_COMMAND} wrote its runs into, or --checkpoint"
        )
    try:
        written = checkpoint_times(logdir)
    except OSError as error:  # a directory we may not list
        raise UsageError(
            f"--logdir {logdir}: cannot list its runs ({error.strerror or error}); pass a --logdir you can read, "
            "or --checkpoint"
        ) from None
    if not written:
        raise UsageError(
            f"no run with a checkpoint under {logdir}/; train one first with {TRAIN_COMMAND}, "
            "or pass --checkpoint (or --logdir)"
        )
    return max(written, key=lambda run_dir: written[run_dir])


def checkpoint_times(logdir: Path) -> dict[Path, int]:
    """Each run directory under ``logdir`` that holds a checkpoint -> when it was last written (ns)."""
    written = {}
    if logdir.is_dir():
        for run_dir in sorted(logdir.iterdir()):  # sorted: equal times resolve the same way every time
            when = last_written(run_dir) if run_dir.is_dir() else None
            if when is not None:
                written[run_dir] = when
    return written


def checkpoint_or_newest(checkpoint: str | None, logdir: str) -> str:
    """``checkpoint`` as given, or the newest run under ``logdir`` (said on stderr, so that stdout stays the output)."""
    if checkpoint is not None:
        return checkpoint
    run_dir = newest_run(logdir)
    print(f"using {run_dir} (the newest run under {logdir.rstrip('/')}/)", file=sys.stderr)
    return str(run_dir)
