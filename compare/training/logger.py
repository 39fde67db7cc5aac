"""TensorBoard output of ``compare.train``: one event directory per implementation, and one for both.

runs/<run>/manual and runs/<run>/torch hold each implementation's curves under the same tags,
so that TensorBoard draws them in one chart; with --impl both, runs/<run>/both holds what
needs the two together: the implementation error (agree/*) and the trajectories' drift (chaos/*).
A custom-scalars layout puts the comparison on one page, in reading order.

TensorBoard's SummaryWriter writes from a background thread. When a write fails there (a
full disk, a lost file system), the thread dies with a traceback on stderr and the error
comes back on the next add_* call or at close, as a bare OSError. Here every call is
guarded: the thread's traceback is not printed (its error is reported from the next
call), and the error becomes one TrainingFailed line (exit 1) that names the checkpoint
each implementation can continue from. Checkpoints are written apart from the events,
atomically, so they are whole whatever happened to an event file.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from compare.cli.errors import TrainingFailed
from compare.model.checkpoint import IMPL_DIRS, LATEST, CheckpointError, checkpoint_step

if TYPE_CHECKING:
    from compare.training.config import TrainConfig

_quiet_hook_installed = False
BOTH_DIR = "both"  # --impl both: the event directory of agree/* and chaos/*
# What tells one run from another in TensorBoard's HParams table; the rest (paths, encodings,
# timeouts, logging cadences) does not change what is trained.
HPARAMS = (
    "cell",
    "num_layers",
    "hidden_size",
    "seq_length",
    "batch_size",
    "lr",
    "clip",
    "loss_reduction",
    "adagrad_eps_placement",
    "dtype",
    "seed",
)
COMPARISON_CHARTS = {  # chart title -> the tags it overlays, from every run directory that has them
    "training loss, smooth (nats/char): manual and torch": ["loss/smooth"],
    "validation loss (nats/char)": ["loss/val"],
    "implementation error on identical inputs (log10 relative)": ["agree/loss", "agree/grad_rel_max"],
    "chaos: the free-running trajectories apart (log10)": ["chaos/max_abs_param", "chaos/loss"],
}


def quiet_writer_threads() -> None:
    """Leave out the traceback of a TensorBoard writer thread that dies of an OSError.

    Its error is raised again in the main thread by the writer's next call (Logger reports
    it there, in one line); any other thread, or any other error, is printed as before.
    """
    global _quiet_hook_installed
    if _quiet_hook_installed:
        return
    previous = threading.excepthook

    def hook(args: Any) -> None:
        writer_thread = type(args.thread).__module__.startswith("tensorboard.")
        if writer_thread and isinstance(args.exc_value, OSError):
            return
        previous(args)

    threading.excepthook = hook
    _quiet_hook_installed = True


def describe_kept(run_dir: Path, names: Iterable[str]) -> tuple[str, bool]:
    """What each implementation's latest.npz in ``run_dir`` holds, and whether any is there to resume from."""
    parts, any_kept = [], False
    for name in names:
        if name not in IMPL_DIRS:  # "both" holds events only
            continue
        path = run_dir / name / LATEST
        if not path.exists():
            parts.append(f"no checkpoint had been saved in {path.parent} yet")
            continue
        try:
            parts.append(f"the last good checkpoint, {path} (step {checkpoint_step(path)}), is intact")
            any_kept = True
        except CheckpointError as error:
            parts.append(f"the checkpoint {path} cannot be read ({error})")
    return "; ".join(parts), any_kept


class Logger:
    """One SummaryWriter per implementation (same tags), plus one for the drift with --impl both."""

    def __init__(self, run_dir: Path, names: Iterable[str], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.run_dir = run_dir
        self.names = list(names)
        self.failed = False
        self.writers: dict[str, SummaryWriter] = {}
        quiet_writer_threads()
        # purge_step: TensorBoard hides this run's older events from that step on, so a
        # resumed run does not show the steps after its checkpoint twice.
        for name in self.names:
            with self.reporting(name):
                self.writers[name] = SummaryWriter(log_dir=str(run_dir / name), purge_step=purge_step)

    @contextmanager
    def reporting(self, name: str) -> Iterator[None]:
        """Turn an OSError of the event writers into TrainingFailed, naming the checkpoints kept."""
        try:
            yield
        except OSError as error:
            self.failed = True
            self.close_quietly()
            kept, resumable = describe_kept(self.run_dir, self.names)
            then = f"continue with --resume {self.run_dir}" if resumable else "start again"
            raise TrainingFailed(
                f"could not write TensorBoard events to {self.run_dir / name} ({error.strerror or error}); "
                f"{kept}: free some space, then {then}"
            ) from error

    def scalar(self, name: str, tag: str, value: float, step: int) -> None:
        if not self.failed:
            with self.reporting(name):
                self.writers[name].add_scalar(tag, value, step)

    def text(self, name: str, tag: str, value: str, step: int) -> None:
        if not self.failed:
            # TensorBoard renders text as Markdown: indent it so whitespace and newlines survive.
            with self.reporting(name):
                self.writers[name].add_text(tag, "    " + value.replace("\n", "\n    "), step)

    def layout(self, name: str, both: bool) -> None:
        """The custom-scalars page: losses of every implementation together, then (--impl both) agree, chaos."""
        charts = dict(list(COMPARISON_CHARTS.items())[: 4 if both else 2])
        layout = {"comparison": {title: ["Multiline", tags] for title, tags in charts.items()}}
        if not self.failed:
            with self.reporting(name):
                self.writers[name].add_custom_scalars(layout)

    def hparams(self, name: str, config: TrainConfig, metric_tags: list[str], columns: bool) -> None:
        """This implementation's row in the HParams table; the metrics are the last points of ``metric_tags``.

        ``columns``: also write the table's columns (the experiment), in HPARAMS order with impl first. Only
        one run may: TensorBoard ignores them, and sorts the columns by name, when several runs write them.
        """
        if self.failed:
            return
        from torch.utils.tensorboard.summary import hparams

        settings = asdict(config)
        values = {"impl": name, **{key: settings[key] for key in HPARAMS if settings.get(key) is not None}}
        # Metric values come from the curves already logged under these tags: nothing new, no one-point charts.
        experiment, session_start, session_end = hparams(values, dict.fromkeys(metric_tags, 0.0))
        with self.reporting(name):
            file_writer = self.writers[name].file_writer
            assert file_writer is not None  # open until close()
            for summary in (experiment, session_start, session_end) if columns else (session_start, session_end):
                file_writer.add_summary(summary)

    def close(self) -> None:
        """Flush and close every writer. While another error propagates (this is called from a
        ``finally``), a failure here is left unsaid: the error that stopped training stands."""
        if self.failed or sys.exc_info()[1] is not None:
            self.close_quietly()
            return
        for name, writer in self.writers.items():
            with self.reporting(name):
                writer.close()

    def close_quietly(self) -> None:
        for writer in self.writers.values():
            try:
                writer.close()
            except OSError:
                pass


class NullLogger:
    """What ranks other than 0 of a data-parallel run log: nothing (rank 0 writes the events)."""

    def scalar(self, name: str, tag: str, value: float, step: int) -> None:
        pass

    def text(self, name: str, tag: str, value: str, step: int) -> None:
        pass

    def layout(self, name: str, both: bool) -> None:
        pass

    def hparams(self, name: str, config: TrainConfig, metric_tags: list[str], columns: bool) -> None:
        pass

    def close(self) -> None:
        pass
