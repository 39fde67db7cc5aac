"""The training loop of ``python -m compare.train``: both implementations, step by step, on one batch.

train() sets the run up (ranks, run directory, engines from one init), then train_steps runs one flat
loop, one heading per phase: implementation error; forward backward update; logging; validation and the
best checkpoint; samples; the latest checkpoint; termination conditions. Below the loop, the helpers
only it uses: the validation loss, and char-rnn's rule for a run that has diverged, with the check that
keeps it out of every checkpoint. Under torchrun each process trains its share of every batch (see
compare.training.parallel)."""

from __future__ import annotations

import itertools
import math
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm import tqdm

from compare.cli.errors import TrainingFailed, UsageError
from compare.data.corpus import StreamBatches
from compare.gradients.flow import log_gradient_flow
from compare.model.cells import cell_label
from compare.model.checkpoint import BEST, RunProgress, check_writable_directory
from compare.model.init import init_params
from compare.model.sampling import sample_text
from compare.training.agreement import worst
from compare.training.config import (
    RunSpec,
    TrainConfig,
    apply_torch_threads,
    describe_run,
    lr_schedule_of,
    memory_line,
    resume_source,
)
from compare.training.logger import (
    Logger,
    NullLogger,
    agreement_probe,
    log_agreement,
    log_chaos,
    log_hparams,
    log_step,
    open_logger,
    progress_postfix,
    summarize,
)
from compare.training.parallel import StopRequest, join_ranks, naming_kept_checkpoints
from compare.training.run import Run, opening, restore

if TYPE_CHECKING:
    from compare.model.checkpoint import RunProgress
    from compare.model.engines import Engine, StepStats
    from compare.training.parallel import DataParallel
    from compare.training.run import Run


EVALS_PER_RUN = 10  # validations in a run without --eval-every: enough points for a loss/val curve


def set_threads(threads: int | None) -> None:
    """Use the same thread count in NumPy's BLAS and in torch."""
    if threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def default_run_name(config: TrainConfig) -> str:
    """'<cell>-<n>', n the first number not taken: short enough that TensorBoard's run list and HParams
    table show 'rnn-3/manual' whole (the settings are in the HParams columns and config.json).

    The directory is created here, so that two runs started at once never take the same name.
    """
    stem = cell_label(config.cell)  # 'mgu' for compare.examples.mgu or path/to/mgu.py
    logdir = Path(config.logdir)
    check_writable_directory(logdir, config.logdir)  # makes it: a --logdir that cannot be one is a UsageError
    for number in itertools.count(1):
        try:
            (logdir / f"{stem}-{number}").mkdir()
        except FileExistsError:
            continue
        return f"{stem}-{number}"
    raise AssertionError("unreachable: itertools.count never ends")


def eval_interval(config: TrainConfig, total_steps: int) -> int:
    """--eval-every, or about ten validations per run when it is not given (at least one step apart)."""
    return config.eval_every if config.eval_every is not None else max(1, total_steps // EVALS_PER_RUN)


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    total = config.epochs * steps_per_epoch
    return total if config.max_steps is None else min(total, config.max_steps)


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
        spec = describe_run(config)  # each setting resolved once; a bad --data fails before a directory is made
        if config.run_name is None:
            name = default_run_name(config) if parallel.is_main else ""  # only rank 0 claims a directory
            config = replace(config, run_name=parallel.agree_on(name))
            spec = replace(spec, config=config)
        run = build_run(spec, parallel)
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
        with opening(run.run_dir, impls, resumed, run.is_main, parallel.agree_on, config.overwrite):
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
                    log_hparams(logger, run)
            finally:
                logger.close()  # complete event files even when training diverges or is interrupted
    return summary


def build_run(spec: TrainConfig | RunSpec, parallel: DataParallel) -> Run:
    """Seed everything and make one engine per implementation from one init (a TrainConfig: described first)."""
    spec = describe_run(spec)
    config, corpus, cell = spec.config, spec.corpus, spec.cell
    import torch

    from compare.model.engines import make_engine

    set_threads(config.threads)
    torch_threads = apply_torch_threads(config, cell)  # without --threads: by a rule on the configuration
    if parallel.is_main and config.impl != "manual":
        print(torch_threads.line())
    if parallel.is_main:
        print(memory_line(config, len(corpus.vocab), cell))
    torch.manual_seed(config.seed)
    # Same seed and flags, same losses, bit for bit. On the CPU this changes no kernel the model
    # uses (measured: identical losses and weights with and without it, no speed difference beyond
    # noise); it is here so that a nondeterministic kernel, should one ever be used, is an error.
    torch.use_deterministic_algorithms(True)
    if config.device == "cuda":  # cuBLAS is deterministic only with this workspace, read at its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    impls = ["manual", "torch"] if config.impl == "both" else [config.impl]
    batches = StreamBatches(corpus.train_tokens, config.batch_size, config.seq_length)
    params = init_params(len(corpus.vocab), config.hidden_size, config.seed, cell, config.num_layers)
    initial_loss = math.log(len(corpus.vocab))
    engines = [
        parallel.wrap(
            make_engine(
                name,
                params,
                config.lr,
                config.clip,
                spec.dtype.name,
                cell,
                config.adagrad_eps,
                device=parallel.torch_device(config.device),
                loss_reduction=config.loss_reduction,
                eps_placement=config.adagrad_eps_placement,
                gradient=config.grad,
                segment_length=config.segment_length,
                optimizer=config.optimizer,
                clip_norm=config.clip_norm,
                lr_schedule=lr_schedule_of(config, len(batches)),
            )
        )
        for name in impls
    ]
    has_validation = len(corpus.val_tokens) > 0  # --val-frac 0: none
    return Run(
        config,
        corpus.vocab,
        corpus.sha256,
        batches=batches,
        val_batches=(
            validation_batches(corpus.val_tokens, config.batch_size, config.seq_length) if has_validation else None
        ),
        engines=engines,
        initial_loss=initial_loss,
        progress={name: RunProgress(smooth_loss=initial_loss) for name in impls},  # min-char-rnn starts at ln V
        losses={name: [] for name in impls},
        is_main=parallel.is_main,
        torch_threads=torch_threads,
    )


def train_steps(run: Run, logger: Logger | NullLogger, start_step: int, total_steps: int, stop: StopRequest) -> int:
    """The training loop, from ``start_step + 1``; returns the last step done."""
    config, engines, progress = run.config, run.engines, run.progress
    last: dict[str, StepStats] = {}  # impl name -> the StepStats of the step just done
    eval_every = eval_interval(config, total_steps)
    probe = agreement_probe(run)
    started = time.perf_counter()
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

        # implementation error: manual against autograd on identical weights, state and batch, before the update
        if probe is not None and (step % config.agree_every == 0 or final):
            agreement = log_agreement(logger, probe, (inputs, targets), step)
            run.agreement = worst(run.agreement, agreement.verdict(probe.dtype, f" at step {step}"))

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
            log_chaos(logger, run, last, step)
        if config.gradflow_every and step % config.gradflow_every == 0 and isinstance(logger, Logger):
            for engine in engines:  # how far back this batch's last-step loss reaches, per implementation's weights
                log_gradient_flow(logger, engine.name, engine.numpy_params(), inputs, targets, config.cell, step)

        # validation, and the best checkpoint
        if run.val_batches is not None and (step % eval_every == 0 or final):
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
            wall_seconds = time.perf_counter() - started
            progress_bar.set_postfix_str(
                f"epoch {epoch} | {progress_postfix(run, step, start_step, wall_seconds)}", refresh=False
            )
    progress_bar.close()
    return step


def validation_batches(val_tokens: np.ndarray, batch_size: int, seq_length: int) -> StreamBatches:
    """Validation chunks laid out like training, shrunk when the held-out text is short."""
    streams = max(1, min(batch_size, (len(val_tokens) - 1) // (seq_length + 1)))
    return StreamBatches(val_tokens, streams, min(seq_length, len(val_tokens) - 1))


def estimate_loss(engine: Engine, batches: StreamBatches) -> float:
    """Mean loss over every validation chunk, hidden state carried from chunk to chunk."""
    h = engine.zero_state(batches.inputs.shape[0])
    losses = []
    for index in range(len(batches)):
        loss, h = engine.eval_loss(*batches.get_batch(index), h)
        losses.append(loss)
    return float(np.mean(losses))


def validate(engine: Engine, batches: StreamBatches, progress: RunProgress) -> bool:
    """Measure the validation loss into ``progress`` (a RunProgress); True if it is the best so far."""
    progress.val_loss = estimate_loss(engine, batches)
    improved = progress.best_val_loss is None or progress.val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss = progress.val_loss
    return improved


class TrainingDiverged(TrainingFailed):
    """The loss became NaN/Inf or exceeded three times its initial value (char-rnn's rule)."""


def diverged(loss: float, initial_loss: float) -> bool:
    """NaN or Inf, or more than three times the loss training started from."""
    return not math.isfinite(loss) or loss > 3 * initial_loss


def divergence(run: Run, impl: str, what: str, loss: float, step: int) -> TrainingDiverged:
    """The error for a diverged run: which step, which loss, what was kept, what to change."""
    initial_loss = run.initial_loss
    size = "is not finite" if not math.isfinite(loss) else f"is above 3 x the initial loss {initial_loss:.4g}"
    return TrainingDiverged(
        f"training diverged at step {step}: {impl} {what} {loss:.4g} {size}; "
        f"{run.kept_checkpoint(impl)}; start again with a lower --lr (now {run.config.lr:g}) "
        f"or --clip (now {run.config.clip:g})"
    )


def check_before_saving(run: Run, engine: Engine, step: int) -> None:
    """Refuse to save weights that have diverged.

    A checkpoint holds the weights *after* this step's update, which no training loss has
    measured yet. The loss the next step will see (its batch, from the hidden state it will
    start from) measures them, so the update that blows up is never saved over the last
    good checkpoint.
    """
    next_index = step % len(run.batches)  # the batch of step + 1
    state = engine.export_state().hidden if next_index else None  # a new epoch starts from zeros
    if state is None:
        state = engine.zero_state(run.config.batch_size)
    loss, _ = engine.eval_loss(*run.batches.get_batch(next_index), state)
    if diverged(loss, run.initial_loss):
        raise divergence(run, engine.name, "loss after this step's update", loss, step)
