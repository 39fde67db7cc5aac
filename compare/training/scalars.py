"""What the training loop writes to TensorBoard at each phase, and the progress bar's line.

Each implementation's scalars (loss, norm, speed), its HParams row; with --impl both the
implementation error on identical inputs (agree/*) and the trajectories' drift (chaos/*),
both in log10 (see compare.training.agreement).
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import TYPE_CHECKING

import numpy as np

from compare.training.agreement import log10_or_floor
from compare.training.logger import BOTH_DIR, Logger, NullLogger
from compare.training.summary import chars_per_sec

if TYPE_CHECKING:
    from compare.model.engines import StepStats
    from compare.training.agreement import Agreement, AgreementProbe
    from compare.training.run import Run


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
