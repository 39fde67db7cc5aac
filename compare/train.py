"""Train the character RNN with either implementation, or both in lockstep.

    python -m compare.train --impl manual     # hand-written BPTT + AdaGrad (NumPy)
    python -m compare.train --impl torch      # autograd + torch.optim.Adagrad
    python -m compare.train --impl both       # one init, one data order, drift logged
    python -m compare.train --resume runs/<run> --epochs 10   # continue a run exactly
    tensorboard --logdir runs

Each implementation logs to ``<logdir>/<run-name>/<impl>`` with the same tags, so
TensorBoard overlays the two curves; ``--impl both`` also logs the drift between
them to ``<logdir>/<run-name>/diff``. Each implementation's directory also gets the
checkpoints ``latest.npz`` and ``best.npz``. A finished run prints its losses, a sample
and the next three commands for it (TensorBoard, compare.sample, compare.demo); with ``--impl both``
the largest implementation error measured and its verdict (exit code 1 beyond the dtype's bound). Ctrl-C
or SIGTERM finishes the current step, saves ``latest.npz`` and exits with 130 or 143.
The loop is compare.training.loop.
"""

from __future__ import annotations

import math
import signal
import sys
from typing import Any

from compare.cli.errors import run_cli
from compare.training.config import parse_args
from compare.training.logger import SAMPLE_TEMPERATURE, next_commands
from compare.training.loop import train
from compare.training.parallel import StopRequest, cli_prog, is_main_process
from compare.training.run import restarted_config

PROG = "python -m compare.train"


def print_summary(summary: dict[str, Any]) -> None:
    agreement = summary["agreement"]  # --impl both: the largest implementation error measured, judged
    print(f"\nrun directory: {summary['run_dir']}  ({summary['steps']} steps)")
    for name, result in summary["impls"].items():
        val = (
            "no validation (--val-frac 0)"
            if math.isnan(result["val_loss"])
            else f"val loss {result['val_loss']:.4f} nats/char ({result['val_bits_per_char']:.3f} bits/char)"
        )
        print(
            f"[{name}] smooth train loss {result['train_loss']:.4f} nats/char | {val} | "
            f"{result['chars_per_sec']:,.0f} chars/s"
        )
    if agreement is not None:
        print(
            f"[both] implementation error, manual vs autograd on the same weights, state and batch: "
            f"{agreement.difference:.1e} at worst ({agreement.where})"
        )
    elif len(summary["impls"]) == 2:  # --impl both, and nothing measured
        print("[both] implementation error: not measured (--agree-every 0)")
    for name, result in summary["impls"].items():
        print(f"\n--- sample ({name}, temperature {SAMPLE_TEMPERATURE}) ---\n{result['sample']}")
    print("\nnext:")
    for command in next_commands(summary):
        print(f"  {command}")
    if agreement is not None:  # the verdict is the last line
        print(f"\n{agreement.line()}")


def main(argv: list[str] | None = None) -> int:
    """The command line; errors end as one line on stderr, exit code 2 (bad input) or 1 (training failed).

    --impl both also ends with exit code 1 when manual and autograd disagreed beyond the dtype's bound
    at any measurement (the summary's verdict line; compare.training.agreement).
    """
    return run_cli(cli_prog(PROG), train_command, argv)  # under torchrun, each line names its rank


def train_command(argv: list[str]) -> int:
    config = restarted_config(argv, parse_args(argv))  # under torchrun --max-restarts: resume on a restart
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
    if stop.requested:
        assert stop.signal_number is not None  # a stop is requested by a signal
        if is_main_process():  # under torchrun, rank 0 speaks for every rank
            print(
                f"stopped by {signal.Signals(stop.signal_number).name} after step {summary['steps']}; "
                f"checkpoint saved; continue with --resume {summary['run_dir']}",
                file=sys.stderr,
            )
        return 128 + stop.signal_number
    if is_main_process():
        print_summary(summary)
    agreement = summary["agreement"]  # measured on rank 0 only: under torchrun its exit code speaks for the run
    return 0 if agreement is None else agreement.exit_code


if __name__ == "__main__":
    sys.exit(main())
