"""The training loop of ``python -m compare.train``: both implementations, step by step, on one batch.

One flat loop, one heading per phase: forward backward update; logging; validation and
the best checkpoint; samples; the latest checkpoint; termination conditions. Under
torchrun each process trains its share of every batch (see compare.training.distributed).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from compare.cli.errors import UsageError
from compare.data.corpus import StreamBatches
from compare.data.inputs import check_writable_directory, load_corpus
from compare.model.checkpoint import BEST, RunProgress
from compare.model.init import init_params
from compare.model.sampling import sample_text
from compare.training.config import TrainConfig
from compare.training.divergence import check_before_saving, diverged, divergence
from compare.training.joining import join_ranks, naming_kept_checkpoints
from compare.training.logger import Logger, NullLogger
from compare.training.run import Run, restore
from compare.training.rundir import opening, resume_source
from compare.training.stop import StopRequest
from compare.training.summary import chars_per_sec, summarize
from compare.training.validation import validate, validation_batches

if TYPE_CHECKING:
    from compare.model.engines import Engine, StepStats
    from compare.training.distributed import DataParallel


def set_threads(threads: int | None) -> None:
    """Use the same thread count in NumPy's BLAS and in torch."""
    if threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def default_run_name(config: TrainConfig) -> str:
    settings = f"{config.cell}{config.num_layers}-h{config.hidden_size}-t{config.seq_length}-b{config.batch_size}"
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{settings}-{config.dtype}"


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    total = config.epochs * steps_per_epoch
    return total if config.max_steps is None else min(total, config.max_steps)


def max_param_diff(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def timed_step(engine: Engine, inputs: np.ndarray, targets: np.ndarray, progress: RunProgress) -> StepStats:
    """One training step; its time and loss go into ``progress``. Returns the StepStats."""
    start = time.perf_counter()
    stats = engine.train_step(inputs, targets)
    progress.seconds += time.perf_counter() - start
    progress.smooth_loss = 0.999 * progress.smooth_loss + 0.001 * stats.loss
    return stats


def train(config: TrainConfig, stop: StopRequest | None = None) -> dict[str, Any]:
    """Run training as configured, or continue it with ``config.resume``.

    Stops early, after saving latest.npz, once ``stop`` is requested. Returns a summary
    dict (final losses, speed, run directory, every step's loss).
    """
    stop = stop or StopRequest()
    with join_ranks(config, stop) as parallel:
        new_run_from_copy = config.resume is not None and config.run_name is None  # see resumed_settings
        if config.run_name is None:
            config = replace(config, run_name=parallel.agree_on(default_run_name(config)))  # rank 0's time stamp
        run = build_run(config, parallel)
        start_step = restore(run) if config.resume else 0
        if parallel.agree_on(str(start_step)) != str(start_step):  # on several machines: each reads its own copy
            raise UsageError(
                f"rank {parallel.rank} starts at step {start_step} and rank 0 does not: every machine must see "
                "the same run directory (a shared file system, or the same checkpoint copied to the same path)"
            )
        total_steps = planned_steps(config, len(run.batches))
        if start_step >= total_steps:
            raise UsageError(f"the checkpoint is at step {start_step} of {total_steps}: raise --epochs or --max-steps")
        impls = [engine.name for engine in run.engines]
        for impl in impls:
            check_writable_directory(run.run_dir / impl, config.logdir)  # now, not after an hour of training
        resumed = (resume_source(config.resume), start_step) if config.resume else None
        with opening(run.run_dir, impls, resumed, run.is_main, parallel.agree_on):  # this run's, until it ends
            if new_run_from_copy and run.is_main:
                print(
                    f"{config.resume} is not inside a run directory: continuing from its step {start_step} "
                    f"in a new run directory, {run.run_dir}"
                )
            logger = open_logger(run, start_step)
            try:
                # NumPy's overflow warnings would only repeat, several lines long and without the step, what
                # the divergence check reports in one line: NaN or Inf reaches the loss within a step.
                with (
                    np.errstate(over="ignore", invalid="ignore", divide="ignore"),
                    naming_kept_checkpoints(run.run_dir, impls),
                ):
                    step = train_steps(run, logger, start_step, total_steps, stop)
                summary = summarize(run, step)
                if not stop.requested:
                    log_hparams(logger, run, summary)
            finally:
                logger.close()  # complete event files even when training diverges or is interrupted
    return summary


def build_run(config: TrainConfig, parallel: DataParallel) -> Run:
    """Read the corpus, seed everything, and make one engine per implementation from one init."""
    corpus = load_corpus(config)  # a bad --data fails here, in a second, before torch is even imported
    import torch

    from compare.model.engines import make_engine

    set_threads(config.threads)
    torch.manual_seed(config.seed)
    # Same seed and flags, same losses, bit for bit. On the CPU this changes no kernel the model
    # uses (measured: identical losses and weights with and without it, no speed difference beyond
    # noise); it is here so that a nondeterministic kernel, should one ever be used, is an error.
    torch.use_deterministic_algorithms(True)
    if config.device == "cuda":  # cuBLAS is deterministic only with this workspace, read at its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    impls = ["manual", "torch"] if config.impl == "both" else [config.impl]
    params = init_params(len(corpus.vocab), config.hidden_size, config.seed, config.cell, config.num_layers)
    initial_loss = math.log(len(corpus.vocab))
    engines = [
        parallel.wrap(
            make_engine(
                name,
                params,
                config.lr,
                config.clip,
                config.dtype,
                config.cell,
                device=parallel.torch_device(config.device),
            )
        )
        for name in impls
    ]
    has_validation = len(corpus.val_tokens) > 0  # --val-frac 0: none
    return Run(
        config,
        corpus.vocab,
        corpus.sha256,
        batches=StreamBatches(corpus.train_tokens, config.batch_size, config.seq_length),
        val_batches=(
            validation_batches(corpus.val_tokens, config.batch_size, config.seq_length) if has_validation else None
        ),
        engines=engines,
        initial_loss=initial_loss,
        progress={name: RunProgress(smooth_loss=initial_loss) for name in impls},  # min-char-rnn starts at ln V
        losses={name: [] for name in impls},
        is_main=parallel.is_main,
    )


def open_logger(run: Run, start_step: int) -> Logger | NullLogger:
    """TensorBoard writers and config.json per implementation (rank 0 only; the others log nothing)."""
    if not run.is_main:
        return NullLogger()
    impls = [engine.name for engine in run.engines]
    logger = Logger(
        run.run_dir,
        impls + (["diff"] if run.config.impl == "both" else []),
        purge_step=start_step + 1 if run.config.resume else None,
    )  # hide events of steps being redone
    for name in impls:
        settings = {"config": asdict(run.config), "vocab": run.vocab.chars}
        (run.run_dir / name / "config.json").write_text(json.dumps(settings, indent=1))
    return logger


def log_hparams(logger: Logger | NullLogger, run: Run, summary: dict[str, Any]) -> None:
    for name, result in summary["impls"].items():
        metrics = {"hparam/train_loss_smooth": result["train_loss"]}
        if run.val_batches is not None:
            metrics["hparam/val_loss"] = result["val_loss"]
        logger.hparams(name, run.config, metrics)


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


def log_drift(logger: Logger | NullLogger, run: Run, last: dict[str, StepStats], step: int) -> None:
    """--impl both: how far apart the two trajectories are after this step."""
    manual, torch_engine = run.engines
    logger.scalar("diff", "diff/loss", abs(last["manual"].loss - last["torch"].loss), step)
    logger.scalar(
        "diff", "diff/max_abs_param", max_param_diff(manual.numpy_params(), torch_engine.numpy_params()), step
    )


def train_steps(run: Run, logger: Logger | NullLogger, start_step: int, total_steps: int, stop: StopRequest) -> int:
    """The training loop, from ``start_step + 1``; returns the last step done."""
    config, engines, progress = run.config, run.engines, run.progress
    last: dict[str, StepStats] = {}  # impl name -> the StepStats of the step just done
    # disable=None: a progress bar on a terminal only, so that the stderr of a script or a test holds
    # nothing but messages (an error is then exactly one line). Under torchrun, rank 0's bar only.
    progress_bar = tqdm(
        range(start_step + 1, total_steps + 1),
        initial=start_step,
        total=total_steps,
        desc=f"train {config.impl}",
        unit="step",
        dynamic_ncols=True,
        disable=None if run.is_main else True,
    )
    for step in progress_bar:
        final = step == total_steps
        epoch, index = divmod(step - 1, len(run.batches))  # the step alone fixes the data position
        if index == 0:
            for engine in engines:
                engine.reset_hidden(config.batch_size)  # each epoch starts from h_0 = 0
        inputs, targets = run.batches.get_batch(index)

        # forward backward update, every engine on the same batch
        for engine in engines:
            stats = last[engine.name] = timed_step(engine, inputs, targets, progress[engine.name])
            run.losses[engine.name].append(stats.loss)
            if diverged(stats.loss, run.initial_loss):
                raise divergence(run, engine.name, "training loss", stats.loss, step)

        # logging
        if step % config.log_every == 0 or final:
            log_step(logger, run, last, step)
        if config.impl == "both":
            log_drift(logger, run, last, step)

        # validation, and the best checkpoint
        if run.val_batches is not None and (step % config.eval_every == 0 or final):
            for engine in engines:
                if validate(engine, run.val_batches, progress[engine.name]):
                    check_before_saving(run, engine, step)
                    run.save(engine, step, BEST)
                val_loss = progress[engine.name].val_loss
                assert val_loss is not None  # validate() has just measured it
                logger.scalar(engine.name, "loss/val", val_loss, step)

        # samples
        if run.is_main and (step % config.sample_every == 0 or final):
            for engine in engines:
                sample = sample_text(engine, run.vocab, config.sample_length, seed=config.seed + step)
                logger.text(engine.name, "sample", sample, step)

        # the latest checkpoint
        if step % config.checkpoint_every == 0 or final or stop.requested:
            for engine in engines:
                check_before_saving(run, engine, step)
                run.save(engine, step)

        # termination conditions
        if stop.requested:
            break
        if step % config.log_every == 0:
            shown = progress[engines[0].name]
            speed = chars_per_sec(step, config.batch_size, config.seq_length, shown.seconds)
            progress_bar.set_postfix(
                epoch=epoch, smooth_loss=f"{shown.smooth_loss:.3f}", refresh=False, chars_per_sec=f"{speed:.0f}"
            )
    progress_bar.close()
    return step
