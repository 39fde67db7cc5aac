"""Train the character RNN with either implementation, or both in lockstep.

    python -m compare.train --impl manual     # hand-written BPTT + AdaGrad (NumPy)
    python -m compare.train --impl torch      # autograd + torch.optim.Adagrad
    python -m compare.train --impl both       # one init, one data order, drift logged
    python -m compare.train --resume runs/<run> --epochs 10   # continue a run exactly
    tensorboard --logdir runs

Each implementation logs to ``<logdir>/<run-name>/<impl>`` with the same tags, so
TensorBoard overlays the two curves; ``--impl both`` also logs the drift between
them to ``<logdir>/<run-name>/diff``. Each implementation's directory also gets the
checkpoints ``latest.npz`` and ``best.npz`` (see compare.checkpoint). Ctrl-C or
SIGTERM finishes the current step, saves ``latest.npz`` and exits with 130 or 143.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np

from compare.checkpoint import (BEST, LATEST, Checkpoint, CheckpointError, RunProgress, find_checkpoint,
                                load_checkpoint, save_checkpoint)
from compare.cli_errors import TrainingFailed, UsageError, run_cli
from compare.data import StreamBatches, Vocab
from compare.init import init_params
from compare.inputs import check_writable_directory, load_corpus
from compare.tb_logger import Logger, NullLogger
from compare.train_config import TrainConfig, config_conflicts, parse_args

PROG = "python -m compare.train"


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


def validation_batches(val_tokens: np.ndarray, batch_size: int, seq_length: int) -> StreamBatches:
    """Validation chunks laid out like training, shrunk when the held-out text is short."""
    streams = max(1, min(batch_size, (len(val_tokens) - 1) // (seq_length + 1)))
    return StreamBatches(val_tokens, streams, min(seq_length, len(val_tokens) - 1))


def estimate_loss(engine, batches: StreamBatches) -> float:
    """Mean loss over every validation chunk, hidden state carried from chunk to chunk."""
    h = engine.zero_state(batches.inputs.shape[0])
    losses = []
    for index in range(len(batches)):
        loss, h = engine.eval_loss(*batches.get_batch(index), h)
        losses.append(loss)
    return float(np.mean(losses))


def max_param_diff(first: dict, second: dict) -> float:
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def planned_steps(config: TrainConfig, steps_per_epoch: int) -> int:
    total = config.epochs * steps_per_epoch
    return total if config.max_steps is None else min(total, config.max_steps)


@dataclass
class StopRequest:
    """Set by the CLI's signal handler; the training loop checks it after every step."""

    signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def handle(self, signal_number, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second signal: stop at once (checkpoints on disk stay whole)
        self.signal_number = signal_number


class TrainingDiverged(TrainingFailed):
    """The loss became NaN/Inf or exceeded three times its initial value (char-rnn's rule)."""


@dataclass
class Run:
    """Everything the training loop works with."""

    config: TrainConfig
    vocab: Vocab
    data_sha256: str
    batches: StreamBatches
    val_batches: StreamBatches | None  # None with --val-frac 0
    engines: list
    progress: dict  # impl name -> RunProgress
    losses: dict = field(default_factory=dict)  # impl name -> training loss of every step run here
    saved_steps: dict = field(default_factory=dict)  # impl name -> step of the latest.npz written here
    is_main: bool = True  # writes files and prints: the only process, or rank 0 under torchrun

    @property
    def run_dir(self) -> Path:
        return Path(self.config.logdir) / self.config.run_name

    def save(self, engine, step: int, filename: str = LATEST) -> None:
        """Write ``engine``'s checkpoint to <run_dir>/<impl>/<filename>."""
        import torch

        checkpoint = Checkpoint(impl=engine.name, step=step, vocab=self.vocab.chars, data_sha256=self.data_sha256,
                                config=asdict(self.config), progress=self.progress[engine.name],
                                engine=engine.export_state(), torch_rng_state=torch.get_rng_state().numpy())
        path = self.run_dir / engine.name / filename
        try:
            if self.is_main:  # one writer; under torchrun every rank took part in export_state's gather
                save_checkpoint(path, checkpoint)
        except OSError as error:  # disk full, quota, file system gone: the old file is still whole
            then = "start again" if self.nothing_saved(engine.name) else f"continue with --resume {self.run_dir}"
            raise TrainingFailed(f"could not save {path} at step {step} ({error.strerror or error}); "
                                 f"{self.kept_checkpoint(engine.name)}: free some space, then {then}") from error
        if filename == LATEST:
            self.saved_steps[engine.name] = step

    def nothing_saved(self, impl: str) -> bool:
        return impl not in self.saved_steps and not self.config.resume

    def kept_checkpoint(self, impl: str) -> str:
        """What a failed run leaves to continue from, for its error message."""
        if impl in self.saved_steps:
            path = self.run_dir / impl / LATEST
            return f"the last good checkpoint, {path} (step {self.saved_steps[impl]}), is intact"
        if self.config.resume:
            return "the checkpoint it resumed from is intact"
        return "no checkpoint had been saved yet"


def restore(run: Run) -> int:
    """Load each engine's checkpoint from ``run.config.resume``; returns the step they are at."""
    import torch

    checkpoints = [load_checkpoint(find_checkpoint(run.config.resume, engine.name)) for engine in run.engines]
    for checkpoint in checkpoints:
        if checkpoint.data_sha256 != run.data_sha256:
            raise CheckpointError("the training text differs from the one the checkpoint was trained on; "
                                  "pass the same --data (and --encoding) as that run")
        conflicts = config_conflicts(checkpoint.config, asdict(run.config))
        if conflicts:
            raise CheckpointError(f"settings differ from the checkpoint's: {'; '.join(conflicts)}")
    if len({checkpoint.step for checkpoint in checkpoints}) > 1:
        raise CheckpointError(f"the implementations' checkpoints are at different steps: "
                              f"{[checkpoint.step for checkpoint in checkpoints]}")
    for engine, checkpoint in zip(run.engines, checkpoints):
        engine.load_state(checkpoint.engine)
        run.progress[engine.name] = checkpoint.progress
    torch.set_rng_state(torch.from_numpy(checkpoints[0].torch_rng_state))
    return checkpoints[0].step


def timed_step(engine, inputs: np.ndarray, targets: np.ndarray, progress: RunProgress):
    """One training step; its time and loss go into ``progress``. Returns the StepStats."""
    start = time.perf_counter()
    stats = engine.train_step(inputs, targets)
    progress.seconds += time.perf_counter() - start
    progress.smooth_loss = 0.999 * progress.smooth_loss + 0.001 * stats.loss
    return stats


def chars_per_sec(step: int, config: TrainConfig, progress: RunProgress) -> float:
    return step * config.batch_size * config.seq_length / max(progress.seconds, 1e-12)


def validate(engine, run: Run) -> bool:
    """Measure the validation loss into the run's progress; True if it is the best so far."""
    progress = run.progress[engine.name]
    progress.val_loss = estimate_loss(engine, run.val_batches)
    improved = progress.best_val_loss is None or progress.val_loss < progress.best_val_loss
    if improved:
        progress.best_val_loss = progress.val_loss
    return improved


def train(config: TrainConfig, stop: StopRequest | None = None) -> dict:
    """Run training as configured, or continue it with ``config.resume``.

    Stops early, after saving latest.npz, once ``stop`` is requested. Returns a summary
    dict (final losses, speed, run directory, every step's loss). Under torchrun each
    process trains its share of every batch (data parallelism, see compare.distributed).
    """
    from compare.distributed import join_ranks

    stop = stop or StopRequest()
    with join_ranks(config, stop) as parallel:
        return train_as_rank(config, stop, parallel)


def train_as_rank(config: TrainConfig, stop: StopRequest, parallel) -> dict:
    """``train`` in this process: the whole run, or one rank's share of it (``parallel``)."""
    from compare.distributed import naming_kept_checkpoints

    if config.run_name is None:
        config = replace(config, run_name=parallel.agree_on(default_run_name(config)))  # rank 0's time stamp
    corpus = load_corpus(config)  # a bad --data fails here, in a second, before torch is even imported
    import torch

    from compare.engines import make_engine

    set_threads(config.threads)
    torch.manual_seed(config.seed)
    # Same seed and flags, same losses, bit for bit. On the CPU this changes no kernel the model
    # uses (measured: identical losses and weights with and without it, no speed difference beyond
    # noise); it is here so that a nondeterministic kernel, should one ever be used, is an error.
    torch.use_deterministic_algorithms(True)
    if config.device == "cuda":  # cuBLAS is deterministic only with this workspace, read at its first use
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    vocab = corpus.vocab
    impls = ["manual", "torch"] if config.impl == "both" else [config.impl]
    params = init_params(len(vocab), config.hidden_size, config.seed, config.cell, config.num_layers)
    initial_loss = math.log(len(vocab))  # the loss of a uniform prediction, and roughly of the initial weights
    has_validation = len(corpus.val_tokens) > 0  # --val-frac 0: none
    run = Run(config, vocab, corpus.sha256,
              batches=StreamBatches(corpus.train_tokens, config.batch_size, config.seq_length),
              val_batches=(validation_batches(corpus.val_tokens, config.batch_size, config.seq_length)
                           if has_validation else None),
              engines=[parallel.wrap(make_engine(name, params, config.lr, config.clip, config.dtype, config.cell,
                                                 device=parallel.torch_device(config.device))) for name in impls],
              progress={name: RunProgress(smooth_loss=initial_loss) for name in impls},  # min-char-rnn starts at ln V
              losses={name: [] for name in impls}, is_main=parallel.is_main)
    start_step = restore(run) if config.resume else 0
    total_steps = planned_steps(config, len(run.batches))
    if start_step >= total_steps:
        raise UsageError(f"the checkpoint is at step {start_step} of {total_steps}: raise --epochs or --max-steps")
    for name in impls:
        check_writable_directory(run.run_dir / name, config.logdir)  # now, not after an hour of training

    if not run.is_main:
        logger = NullLogger()  # rank 0 writes the events and config.json
    else:
        logger = Logger(run.run_dir, impls + (["diff"] if config.impl == "both" else []),
                        purge_step=start_step + 1 if config.resume else None)  # hide events of steps being redone
        for name in impls:
            settings = {"config": asdict(config), "vocab": vocab.chars}
            (run.run_dir / name / "config.json").write_text(json.dumps(settings, indent=1))
    try:
        # NumPy's overflow warnings would only repeat, several lines long and without the step, what
        # the divergence check reports in one line: NaN or Inf reaches the loss within a step.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"), naming_kept_checkpoints(run.run_dir, impls):
            step = train_steps(run, logger, start_step, total_steps, initial_loss, stop)
        summary = summarize(run, step)
        if not stop.requested:
            for name, result in summary["impls"].items():
                metrics = {"hparam/train_loss_smooth": result["train_loss"]}
                if has_validation:
                    metrics["hparam/val_loss"] = result["val_loss"]
                logger.hparams(name, config, metrics)
    finally:
        logger.close()  # complete event files even when training diverges or is interrupted
    return summary


def diverged(loss: float, initial_loss: float) -> bool:
    """char-rnn's rule: NaN or Inf, or more than three times the loss training started from."""
    return not math.isfinite(loss) or loss > 3 * initial_loss


def divergence(run: Run, impl: str, what: str, loss: float, step: int, initial_loss: float) -> TrainingDiverged:
    """The error for a diverged run: which step, which loss, what was kept, what to change."""
    size = "is not finite" if not math.isfinite(loss) else f"is above 3 x the initial loss {initial_loss:.4g}"
    return TrainingDiverged(f"training diverged at step {step}: {impl} {what} {loss:.4g} {size}; "
                            f"{run.kept_checkpoint(impl)}; start again with a lower --lr (now {run.config.lr:g}) "
                            f"or --clip (now {run.config.clip:g})")


def check_before_saving(run: Run, engine, step: int, initial_loss: float) -> None:
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
    if diverged(loss, initial_loss):
        raise divergence(run, engine.name, "loss after this step's update", loss, step, initial_loss)


def train_steps(run: Run, logger: Logger, start_step: int, total_steps: int, initial_loss: float,
                stop: StopRequest) -> int:
    """The training loop, from ``start_step + 1``; returns the last step done."""
    from tqdm import tqdm

    from compare.sampling import sample_text

    config, engines, progress = run.config, run.engines, run.progress
    last = {}
    # disable=None: a progress bar on a terminal only, so that the stderr of a script or a test holds
    # nothing but messages (an error is then exactly one line). Under torchrun, rank 0's bar only.
    progress_bar = tqdm(range(start_step + 1, total_steps + 1), initial=start_step, total=total_steps,
                        desc=f"train {config.impl}", unit="step", dynamic_ncols=True,
                        disable=None if run.is_main else True)
    for step in progress_bar:
        epoch, index = divmod(step - 1, len(run.batches))  # the step alone fixes the data position
        if index == 0:
            for engine in engines:
                engine.reset_hidden(config.batch_size)  # each epoch starts from h_0 = 0
        inputs, targets = run.batches.get_batch(index)
        for engine in engines:
            stats = last[engine.name] = timed_step(engine, inputs, targets, progress[engine.name])
            run.losses[engine.name].append(stats.loss)
            if diverged(stats.loss, initial_loss):
                raise divergence(run, engine.name, "training loss", stats.loss, step, initial_loss)
        final = step == total_steps
        if step % config.log_every == 0 or final:
            for name, stats in last.items():
                logger.scalar(name, "loss/train", stats.loss, step)
                logger.scalar(name, "loss/smooth", progress[name].smooth_loss, step)
                logger.scalar(name, "grad/global_norm", stats.grad_norm, step)
                logger.scalar(name, "speed/chars_per_sec", chars_per_sec(step, config, progress[name]), step)
        if config.impl == "both":
            logger.scalar("diff", "diff/loss", abs(last["manual"].loss - last["torch"].loss), step)
            logger.scalar("diff", "diff/max_abs_param",
                          max_param_diff(engines[0].numpy_params(), engines[1].numpy_params()), step)
        if run.val_batches is not None and (step % config.eval_every == 0 or final):
            for engine in engines:
                if validate(engine, run):
                    check_before_saving(run, engine, step, initial_loss)
                    run.save(engine, step, BEST)
                logger.scalar(engine.name, "loss/val", progress[engine.name].val_loss, step)
        if run.is_main and (step % config.sample_every == 0 or final):
            for engine in engines:
                sample = sample_text(engine, run.vocab, config.sample_length, seed=config.seed + step)
                logger.text(engine.name, "sample", sample, step)
        if step % config.checkpoint_every == 0 or final or stop.requested:
            for engine in engines:
                check_before_saving(run, engine, step, initial_loss)
                run.save(engine, step)
        if stop.requested:
            break
        if step % config.log_every == 0:
            shown = progress[engines[0].name]
            progress_bar.set_postfix(epoch=epoch, smooth_loss=f"{shown.smooth_loss:.3f}", refresh=False,
                                     chars_per_sec=f"{chars_per_sec(step, config, shown):.0f}")
    progress_bar.close()
    return step


def summarize(run: Run, step: int) -> dict:
    """Final figures per implementation, and a sample at temperature 0.8."""
    from compare.sampling import sample_text

    summary = {"run_dir": str(run.run_dir), "steps": step, "impls": {}}
    for engine in run.engines:
        progress = run.progress[engine.name]
        val_loss = math.nan if progress.val_loss is None else progress.val_loss
        summary["impls"][engine.name] = {
            "train_loss": progress.smooth_loss,
            "val_loss": val_loss,
            "val_bits_per_char": val_loss / math.log(2),
            "chars_per_sec": chars_per_sec(step, run.config, progress),
            "losses": run.losses[engine.name],
            "sample": sample_text(engine, run.vocab, 500, temperature=0.8, seed=run.config.seed),
        }
    return summary


def print_summary(summary: dict) -> None:
    print(f"\nrun directory: {summary['run_dir']}  ({summary['steps']} steps)")
    for name, result in summary["impls"].items():
        val = ("no validation (--val-frac 0)" if math.isnan(result["val_loss"]) else
               f"val loss {result['val_loss']:.4f} nats/char ({result['val_bits_per_char']:.3f} bits/char)")
        print(f"[{name}] smooth train loss {result['train_loss']:.4f} nats/char | {val} | "
              f"{result['chars_per_sec']:,.0f} chars/s")
    for name, result in summary["impls"].items():
        print(f"\n--- sample ({name}, temperature 0.8) ---\n{result['sample']}")


def main(argv=None) -> int:
    """The command line; errors end as one line on stderr, exit code 2 (bad input) or 1 (training failed)."""
    from compare.distributed import cli_prog

    return run_cli(cli_prog(PROG), train_command, argv)  # under torchrun, each line names its rank


def train_command(argv: list) -> int:
    config = parse_args(argv)
    stop = StopRequest()
    previous_handlers = {number: signal.signal(number, stop.handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        summary = train(config, stop)
    except KeyboardInterrupt:
        print("stopped at once by a second signal; the checkpoints last saved are intact", file=sys.stderr)
        return 130
    finally:
        for number, handler in previous_handlers.items():
            signal.signal(number, handler)
    from compare.distributed import is_main_process

    if stop.requested:
        if is_main_process():  # under torchrun, rank 0 speaks for every rank
            print(f"stopped by {signal.Signals(stop.signal_number).name} after step {summary['steps']}; "
                  f"checkpoint saved; continue with --resume {summary['run_dir']}", file=sys.stderr)
        return 128 + stop.signal_number
    if is_main_process():
        print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
