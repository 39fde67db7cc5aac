"""What a run reports: TensorBoard's events, written by the loop at each phase; the progress bar's line; and
what a finished run prints.

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

Each implementation's scalars (loss, norm, speed), its HParams row; with --impl both the
implementation error on identical inputs (agree/*) and the trajectories' drift (chaos/*),
both in log10 (see compare.training.agreement). A finished run reports its final losses, speed and
a sample per implementation; with --impl both the largest implementation error measured and its verdict."""

from __future__ import annotations

import json
import math
import shlex
import sys
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compare.cli.errors import TrainingFailed
from compare.model.cells import BUILTIN_CELLS
from compare.model.checkpoint import BEST, IMPL_DIRS, LATEST, CheckpointError, checkpoint_step
from compare.model.sampling import sample_text
from compare.training.agreement import log10_or_floor

if TYPE_CHECKING:
    from compare.model.engines import StepStats
    from compare.training.agreement import Agreement, AgreementProbe
    from compare.training.config import TrainConfig
    from compare.training.run import Run


SAMPLE_LENGTH = 500  # characters of the sample a finished run prints
SAMPLE_TEMPERATURE = 0.8
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
    "optimizer",
    "clip_norm",
    "lr_schedule",
    "dtype",
    "seed",
)
COMPARISON_CHARTS = {  # chart title -> the tags it overlays, from every run directory that has them
    "training loss, smooth (nats/char): manual and torch": ["loss/smooth"],
    "validation loss (nats/char)": ["loss/val"],
    "implementation error on identical inputs (log10 relative)": ["agree/loss", "agree/grad_rel_max"],
    "chaos: the free-running trajectories apart (log10)": ["chaos/max_abs_param", "chaos/loss"],
}


def max_param_diff(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def open_logger(run: Run, start_step: int) -> Logger | NullLogger:
    """TensorBoard writers and config.json per implementation (rank 0 only; the others log nothing)."""
    if not run.is_main:
        return NullLogger()
    impls = [engine.name for engine in run.engines]
    logger = Logger(
        run.run_dir,
        impls + ([BOTH_DIR] if run.config.impl == "both" else []),
        purge_step=start_step + 1 if run.config.resume else None,
    )  # hide events of steps being redone
    logger.layout(impls[0], run.config.impl == "both")
    for name in impls:
        settings = {"config": asdict(run.config), "vocab": run.vocab.chars}
        if name == "torch" and run.torch_threads is not None:  # the count --threads left to the rule
            settings["torch_threads"] = asdict(run.torch_threads)
        (run.run_dir / name / "config.json").write_text(json.dumps(settings, indent=1))
    return logger


def log_hparams(logger: Logger | NullLogger, run: Run) -> None:
    """Each implementation's settings for TensorBoard's HParams table; its metrics are the logged loss curves."""
    metrics = ["loss/smooth"] + (["loss/val"] if run.val_batches is not None else [])
    for index, engine in enumerate(run.engines):
        logger.hparams(engine.name, run.config, metrics, columns=index == 0)


def log_step(logger: Logger | NullLogger, run: Run, last: dict[str, StepStats], step: int) -> None:
    """The scalars of one step: each implementation's loss, norm and speed."""
    config = run.config
    for name, stats in last.items():
        progress = run.progress[name]
        logger.scalar(name, "loss/train", stats.loss, step)
        logger.scalar(name, "loss/smooth", progress.smooth_loss, step)
        logger.scalar(name, "grad/global_norm", stats.grad_norm, step)
        logger.scalar(
            name,
            "speed/chars_per_sec",
            chars_per_sec(step, config.batch_size, config.seq_length, progress.seconds),
            step,
        )


def log_chaos(logger: Logger | NullLogger, run: Run, last: dict[str, StepStats], step: int) -> None:
    """--impl both: how far apart the two free-running trajectories are after this step, in log10.

    Not an implementation error (see compare.training.agreement): the dynamics amplify rounding.
    """
    manual, torch_engine = run.engines
    loss_apart = abs(last["manual"].loss - last["torch"].loss)
    params_apart = max_param_diff(manual.numpy_params(), torch_engine.numpy_params())
    dtype = run.config.dtype
    logger.scalar(BOTH_DIR, "chaos/loss", log10_or_floor(loss_apart, dtype), step)
    logger.scalar(BOTH_DIR, "chaos/max_abs_param", log10_or_floor(params_apart, dtype), step)


def log_agreement(logger: Logger | NullLogger, probe: AgreementProbe, batch: tuple, step: int) -> Agreement:
    """--impl both: manual against autograd on the manual engine's weights, state and this batch, in log10;
    returns the measurement."""
    agreement = probe.measure(*batch)
    dtype = probe.dtype
    logger.scalar(BOTH_DIR, "agree/loss", log10_or_floor(agreement.loss, dtype), step)
    logger.scalar(BOTH_DIR, "agree/grad_rel_max", log10_or_floor(agreement.grad_rel_max, dtype), step)
    for name, value in agreement.grads.items():
        logger.scalar(BOTH_DIR, f"agree/grad_rel/{name}", log10_or_floor(value, dtype), step)
    return agreement


def agreement_probe(run: Run) -> AgreementProbe | None:
    """The autograd twin that measures the implementation error (--impl both, rank 0, --agree-every > 0)."""
    if run.config.impl != "both" or not run.is_main or run.config.agree_every == 0:
        return None
    from compare.training.agreement import AgreementProbe

    return AgreementProbe(run.engines[0])


def progress_postfix(run: Run, step: int, start_step: int, wall_seconds: float) -> str:
    """'loss manual 2.101, torch 2.101 | 2,412 chars/s': each smooth loss by name, speed of the whole loop."""
    config = run.config
    losses = ", ".join(f"{name} {progress.smooth_loss:.3f}" for name, progress in run.progress.items())
    speed = chars_per_sec(step - start_step, config.batch_size, config.seq_length, wall_seconds)
    return f"loss {losses} | {speed:,.0f} chars/s"


def chars_per_sec(steps: int, batch_size: int, seq_length: int, seconds: float) -> float:
    """Characters trained per second of this implementation's own step time."""
    return steps * batch_size * seq_length / max(seconds, 1e-12)


def summarize(run: Run, step: int) -> dict[str, Any]:
    """Final figures per implementation (a Run at ``step``), and a sample at temperature 0.8."""
    impls: dict[str, dict[str, Any]] = {}
    # agreement: the largest implementation error of --impl both (None: not measured), judged
    summary = {
        "run_dir": str(run.run_dir),
        "steps": step,
        "cell": run.config.cell,
        "impls": impls,
        "agreement": run.agreement,
    }
    for engine in run.engines:
        progress = run.progress[engine.name]
        val_loss = math.nan if progress.val_loss is None else progress.val_loss
        impls[engine.name] = {
            "train_loss": progress.smooth_loss,
            "val_loss": val_loss,
            "val_bits_per_char": val_loss / math.log(2),
            "chars_per_sec": chars_per_sec(step, run.config.batch_size, run.config.seq_length, progress.seconds),
            "losses": run.losses[engine.name],
            "sample": sample_text(engine, run.vocab, SAMPLE_LENGTH, SAMPLE_TEMPERATURE, seed=run.config.seed),
        }
    return summary


def next_commands(summary: dict[str, Any]) -> list[str]:
    """What to run on a finished run: TensorBoard on it, then compare.sample and compare.demo on its checkpoint.

    The checkpoint is the first implementation's best.npz, or latest.npz when the run had no
    validation (--val-frac 0 writes no best.npz). A cell of your own is named with --cell: loading
    imports it only then.
    """
    impl, result = next(iter(summary["impls"].items()))
    checkpoint = Path(summary["run_dir"]) / impl / (LATEST if math.isnan(result["val_loss"]) else BEST)
    cell = summary.get("cell", "rnn")
    flags = f"--checkpoint {shlex.quote(str(checkpoint))}"
    if cell not in BUILTIN_CELLS:
        flags += f" --cell {shlex.quote(cell)}"
    return [
        f"tensorboard --logdir {shlex.quote(summary['run_dir'])}",
        f"python -m compare.sample {flags}",
        f"python -m compare.demo {flags}",
    ]


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
