"""Train the character RNN with either implementation, or both in lockstep.

    python -m compare.train --impl manual     # hand-written BPTT + AdaGrad (NumPy)
    python -m compare.train --impl torch      # autograd + torch.optim.Adagrad
    python -m compare.train --impl both       # one init, one data order, drift logged
    tensorboard --logdir runs

Each implementation logs to ``<logdir>/<run-name>/<impl>`` with the same tags, so
TensorBoard overlays the two curves; ``--impl both`` also logs the drift between
them to ``<logdir>/<run-name>/diff``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from compare.data import StreamBatches, Vocab, load_text, split_train_val
from compare.init import init_params


@dataclass
class TrainConfig:
    impl: str = "manual"
    data: str | None = None  # None: the built-in corpus (pydoc_data.topics)
    val_frac: float = 0.05
    hidden_size: int = 100
    seq_length: int = 25
    batch_size: int = 1
    lr: float = 0.1
    clip: float = 5.0
    epochs: int = 5
    max_steps: int | None = None
    seed: int = 42
    dtype: str = "float32"
    threads: int | None = None
    logdir: str = "runs"
    run_name: str | None = None
    log_every: int = 100
    eval_every: int = 2000
    sample_every: int = 5000
    sample_length: int = 200


def parse_args(argv=None) -> TrainConfig:
    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m compare.train",
        description="Train the character RNN by hand-written BPTT (manual), by autograd (torch), or both in lockstep.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    impl = parser.add_argument_group("implementation")
    impl.add_argument("--impl", choices=["manual", "torch", "both"], default=defaults.impl,
                      help="which implementation trains; 'both' runs them side by side on the same batches")
    impl.add_argument("--dtype", choices=["float32", "float64"], default=defaults.dtype,
                      help="floating-point type of parameters and activations in both implementations")
    impl.add_argument("--threads", type=int, default=defaults.threads,
                      help="threads for NumPy's BLAS and for torch (default: leave the libraries' choice)")
    data = parser.add_argument_group("data")
    data.add_argument("--data", default=defaults.data,
                      help="UTF-8 text file to train on (default: the built-in corpus, CPython's pydoc topics)")
    data.add_argument("--val-frac", type=float, default=defaults.val_frac,
                      help="fraction of the text, taken from its end, held out for validation")
    model = parser.add_argument_group("model")
    model.add_argument("--hidden-size", type=int, default=defaults.hidden_size, help="H, the size of the hidden state")
    optim = parser.add_argument_group("optimization")
    optim.add_argument("--seq-length", type=int, default=defaults.seq_length,
                       help="T, characters per chunk: how far back truncated BPTT reaches")
    optim.add_argument("--batch-size", type=int, default=defaults.batch_size,
                       help="B, parallel streams the text is split into")
    optim.add_argument("--lr", type=float, default=defaults.lr, help="AdaGrad learning rate")
    optim.add_argument("--clip", type=float, default=defaults.clip,
                       help="clip every gradient entry to [-clip, clip] before the update; 0 turns clipping off")
    optim.add_argument("--epochs", type=int, default=defaults.epochs, help="passes over the training text")
    optim.add_argument("--max-steps", type=int, default=defaults.max_steps,
                       help="stop after this many steps even if epochs remain; 0 means no limit")
    optim.add_argument("--seed", type=int, default=defaults.seed, help="seed of the weight initializer and of sampling")
    logging = parser.add_argument_group("logging")
    logging.add_argument("--logdir", default=defaults.logdir, help="TensorBoard log root")
    logging.add_argument("--run-name", default=defaults.run_name,
                         help="run directory under --logdir (default: a time stamp and the settings)")
    logging.add_argument("--log-every", type=int, default=defaults.log_every, help="steps between scalar logs")
    logging.add_argument("--eval-every", type=int, default=defaults.eval_every, help="steps between validation losses")
    logging.add_argument("--sample-every", type=int, default=defaults.sample_every,
                         help="steps between text samples written to TensorBoard")
    logging.add_argument("--sample-length", type=int, default=defaults.sample_length,
                         help="characters in each text sample")
    args = parser.parse_args(argv)
    config = TrainConfig(**vars(args))
    if config.max_steps == 0:
        config.max_steps = None
    problem = config_problem(config)
    if problem:
        parser.error(problem)  # one line on stderr, exit code 2
    return config


def config_problem(config: TrainConfig) -> str | None:
    """A one-line description of the first invalid setting, or None."""
    positive = ("hidden_size", "seq_length", "batch_size", "epochs", "log_every", "eval_every", "sample_every")
    for name in positive:
        if getattr(config, name) <= 0:
            return f"--{name.replace('_', '-')} must be positive, got {getattr(config, name)}"
    if not config.lr > 0:
        return f"--lr must be positive, got {config.lr}"
    if not config.clip >= 0:
        return f"--clip must be >= 0 (0 turns clipping off), got {config.clip}"
    if config.max_steps is not None and config.max_steps < 0:
        return f"--max-steps must be >= 0, got {config.max_steps}"
    if not 0 < config.val_frac < 1:
        return f"--val-frac must be in (0, 1), got {config.val_frac}"
    if config.threads is not None and config.threads <= 0:
        return f"--threads must be positive, got {config.threads}"
    return None


def set_threads(threads: int | None) -> None:
    """Use the same thread count in NumPy's BLAS and in torch."""
    if threads is None:
        return
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    threadpool_limits(limits=threads)


def default_run_name(config: TrainConfig) -> str:
    return f"{time.strftime('%Y%m%d-%H%M%S')}-h{config.hidden_size}-t{config.seq_length}-b{config.batch_size}-{config.dtype}"


def validation_batches(val_tokens: np.ndarray, batch_size: int, seq_length: int) -> StreamBatches:
    """Validation chunks laid out like training, shrunk when the held-out text is short."""
    streams = max(1, min(batch_size, (len(val_tokens) - 1) // (seq_length + 1)))
    return StreamBatches(val_tokens, streams, min(seq_length, len(val_tokens) - 1))


def estimate_loss(engine, batches: StreamBatches, hidden_size: int) -> float:
    """Mean loss over every validation chunk, hidden state carried from chunk to chunk."""
    h = np.zeros((batches.inputs.shape[0], hidden_size))
    losses = []
    for index in range(len(batches)):
        loss, h = engine.eval_loss(*batches.get_batch(index), h)
        losses.append(loss)
    return float(np.mean(losses))


def max_param_diff(first: dict, second: dict) -> float:
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


class Logger:
    """One SummaryWriter per implementation (same tags), plus one for the drift with --impl both."""

    def __init__(self, run_dir: Path, names):
        from torch.utils.tensorboard import SummaryWriter

        self.writers = {name: SummaryWriter(log_dir=str(run_dir / name)) for name in names}

    def scalar(self, name: str, tag: str, value: float, step: int) -> None:
        self.writers[name].add_scalar(tag, value, step)

    def text(self, name: str, tag: str, value: str, step: int) -> None:
        # TensorBoard renders text as Markdown: indent it so whitespace and newlines survive.
        self.writers[name].add_text(tag, "    " + value.replace("\n", "\n    "), step)

    def hparams(self, name: str, config: TrainConfig, metrics: dict) -> None:
        hparams = {key: value for key, value in asdict(config).items() if value is not None}
        hparams["impl"] = name
        self.writers[name].add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


def train(config: TrainConfig) -> dict:
    """Run training as configured. Returns a summary dict (final losses, speed, run directory)."""
    import torch
    from tqdm import tqdm

    from compare.engines import make_engine
    from compare.sampling import sample_text

    set_threads(config.threads)
    torch.manual_seed(config.seed)
    text = load_text(config.data)
    vocab = Vocab.from_text(text)
    train_tokens, val_tokens = split_train_val(vocab.encode(text), config.val_frac)
    batches = StreamBatches(train_tokens, config.batch_size, config.seq_length)
    val_batches = validation_batches(val_tokens, config.batch_size, config.seq_length)

    impls = ["manual", "torch"] if config.impl == "both" else [config.impl]
    params = init_params(len(vocab), config.hidden_size, config.seed)
    engines = [make_engine(name, params, config.lr, config.clip, config.dtype) for name in impls]

    run_dir = Path(config.logdir) / (config.run_name or default_run_name(config))
    logger = Logger(run_dir, impls + (["diff"] if config.impl == "both" else []))
    for name in impls:
        (run_dir / name / "config.json").write_text(json.dumps({"config": asdict(config), "vocab": vocab.chars}, indent=1))

    total_steps = config.epochs * len(batches)
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    chars_per_step = config.batch_size * config.seq_length
    initial_loss = math.log(len(vocab))  # the loss of a uniform prediction, and roughly of the initial weights
    smooth = {name: initial_loss for name in impls}  # min-char-rnn starts the average at ln V
    seconds = {name: 0.0 for name in impls}
    val_loss = {name: float("nan") for name in impls}
    last = {}

    progress = tqdm(range(1, total_steps + 1), desc=f"train {config.impl}", unit="step", dynamic_ncols=True)
    for step in progress:
        epoch, index = divmod(step - 1, len(batches))
        if index == 0:
            for engine in engines:
                engine.reset_hidden(config.batch_size)  # each epoch starts from h_0 = 0
        inputs, targets = batches.get_batch(index)
        for engine in engines:
            start = time.perf_counter()
            stats = engine.train_step(inputs, targets)
            seconds[engine.name] += time.perf_counter() - start
            last[engine.name] = stats
            if not math.isfinite(stats.loss) or stats.loss > 3 * initial_loss:
                raise TrainingDiverged(f"{engine.name}: loss {stats.loss:.4g} at step {step} "
                                       f"(initial {initial_loss:.4g}); lower --lr or --clip")
            smooth[engine.name] = 0.999 * smooth[engine.name] + 0.001 * stats.loss

        if step % config.log_every == 0 or step == total_steps:
            for name in impls:
                logger.scalar(name, "loss/train", last[name].loss, step)
                logger.scalar(name, "loss/smooth", smooth[name], step)
                logger.scalar(name, "grad/global_norm", last[name].grad_norm, step)
                logger.scalar(name, "speed/chars_per_sec", step * chars_per_step / max(seconds[name], 1e-12), step)
        if config.impl == "both":
            manual_engine, torch_engine = engines
            logger.scalar("diff", "diff/loss", abs(last["manual"].loss - last["torch"].loss), step)
            logger.scalar("diff", "diff/max_abs_param",
                          max_param_diff(manual_engine.numpy_params(), torch_engine.numpy_params()), step)
        if step % config.eval_every == 0 or step == total_steps:
            for engine in engines:
                val_loss[engine.name] = estimate_loss(engine, val_batches, config.hidden_size)
                logger.scalar(engine.name, "loss/val", val_loss[engine.name], step)
        if step % config.sample_every == 0 or step == total_steps:
            for engine in engines:
                sample = sample_text(engine, vocab, config.sample_length, seed=config.seed + step)
                logger.text(engine.name, "sample", sample, step)
        if step % config.log_every == 0:
            progress.set_postfix(epoch=epoch, smooth_loss=f"{smooth[impls[0]]:.3f}", refresh=False,
                                 chars_per_sec=f"{step * chars_per_step / max(seconds[impls[0]], 1e-12):.0f}")

    summary = {"run_dir": str(run_dir), "steps": total_steps, "impls": {}}
    for engine in engines:
        name = engine.name
        summary["impls"][name] = {
            "train_loss": smooth[name],
            "val_loss": val_loss[name],
            "val_bits_per_char": val_loss[name] / math.log(2),
            "chars_per_sec": total_steps * chars_per_step / max(seconds[name], 1e-12),
            "sample": sample_text(engine, vocab, 500, temperature=0.8, seed=config.seed),
        }
        logger.hparams(name, config, {"hparam/train_loss_smooth": smooth[name], "hparam/val_loss": val_loss[name]})
    logger.close()
    return summary


class TrainingDiverged(RuntimeError):
    """The loss became NaN/Inf or exceeded three times its initial value."""


def print_summary(summary: dict) -> None:
    print(f"\nrun directory: {summary['run_dir']}  ({summary['steps']} steps)")
    for name, result in summary["impls"].items():
        print(f"[{name}] smooth train loss {result['train_loss']:.4f} nats/char | "
              f"val loss {result['val_loss']:.4f} nats/char ({result['val_bits_per_char']:.3f} bits/char) | "
              f"{result['chars_per_sec']:,.0f} chars/s")
    for name, result in summary["impls"].items():
        print(f"\n--- sample ({name}, temperature 0.8) ---\n{result['sample']}")


def main(argv=None) -> int:
    config = parse_args(argv)
    try:
        summary = train(config)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except TrainingDiverged as error:
        print(f"error: training diverged: {error}", file=sys.stderr)
        return 1
    print_summary(summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
