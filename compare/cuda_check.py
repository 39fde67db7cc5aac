"""A short check, for a machine with a GPU, that ``--device cuda`` trains like the CPU in float64.

    python -m compare.cuda_check            # about a minute; prints PASS or FAIL and the numbers

1. engines: for each cell, 20 float64 steps of the torch engine on the GPU against the
   manual engine on the CPU, from the same weights on the same batches (needs only NumPy
   and torch);
2. the CLI: ``python -m compare.train --impl both --device cuda --dtype float64``, and the
   two implementations' checkpoints compared (needs tensorboard and tqdm as well);
3. torchrun, one process: the same run data-parallel, NCCL carrying the GPU gradients and
   gloo the CPU ones (needs NCCL).

The GPU and the CPU sum in other orders, so float64 results differ by rounding only. AdaGrad
magnifies rounding where a gradient entry is a near-cancelling sum (it divides by that entry's
own small root), so even the CPU twins (torch on the CPU against manual) drift apart: measured
after 20 steps, 2e-15 (lstm, gru) to 3e-11 (rnn) on the weights; part 1 prints this CPU figure
next to the GPU one. TOLERANCE leaves two orders of magnitude for the GPU's own summation
orders; a real bug (a wrong gradient, a missed clip) is off by 1e-3 or more.
The exit code is 0 on PASS, 1 on FAIL; a part that cannot run on this machine is SKIPped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from compare.cli.errors import run_cli
from compare.cli.parser import CommandParser

TOLERANCE = 1e-8  # max |difference| of any loss or weight after STEPS float64 steps
STEPS = 20
TEXT = "the quick brown fox jumps over the lazy dog. " * 40
CELLS = ("rnn", "lstm", "gru")


def max_param_diff(first: dict[str, np.ndarray], second: dict[str, np.ndarray]) -> float:
    return max(float(np.max(np.abs(first[name] - second[name]))) for name in first)


def train_engines(cell: str, torch_device: str) -> dict[str, float]:
    """Manual (CPU) and torch (``torch_device``) side by side; their largest loss and weight differences."""
    from compare.data.corpus import StreamBatches, Vocab
    from compare.model.engines import make_engine
    from compare.model.init import init_params

    vocab = Vocab.from_text(TEXT)
    batches = StreamBatches(vocab.encode(TEXT), batch_size=4, seq_length=10)
    params = init_params(len(vocab), 16, seed=3, cell=cell, num_layers=2)
    manual = make_engine("manual", params, lr=0.1, clip=5.0, dtype="float64", cell=cell)
    autograd = make_engine("torch", params, lr=0.1, clip=5.0, dtype="float64", cell=cell, device=torch_device)
    loss_diff = 0.0
    for engine in (manual, autograd):
        engine.reset_hidden(4)
    for index in range(STEPS):
        inputs, targets = batches.get_batch(index)
        step_diff = manual.train_step(inputs, targets).loss - autograd.train_step(inputs, targets).loss
        loss_diff = max(loss_diff, abs(step_diff))
    return {"loss": loss_diff, "params": max_param_diff(manual.numpy_params(), autograd.numpy_params())}


def check_engines() -> tuple[bool, list[str]]:
    """Part 1: returns (passed, lines to print)."""
    import torch

    torch.use_deterministic_algorithms(True)  # as compare.train does: an op without a deterministic kernel fails
    lines, passed = [], True
    for cell in CELLS:
        gpu, cpu = train_engines(cell, "cuda"), train_engines(cell, "cpu")
        ok = max(gpu.values()) < TOLERANCE
        passed &= ok
        lines.append(
            f"  {cell} x2 layers: GPU torch vs CPU manual: max |loss diff| {gpu['loss']:.2e}, "
            f"max |weight diff| {gpu['params']:.2e}   (CPU torch vs CPU manual: {cpu['loss']:.2e}, "
            f"{cpu['params']:.2e})  {'ok' if ok else 'TOO LARGE'}"
        )
    return passed, lines


def train_flags(directory: Path, run_name: str) -> list[str]:
    corpus = directory / "corpus.txt"
    corpus.write_text(TEXT)
    return [
        "--data",
        str(corpus),
        "--impl",
        "both",
        "--device",
        "cuda",
        "--dtype",
        "float64",
        "--cell",
        "lstm",
        "--hidden-size",
        "16",
        "--seq-length",
        "10",
        "--batch-size",
        "4",
        "--max-steps",
        str(STEPS),
        "--logdir",
        str(directory / "runs"),
        "--run-name",
        run_name,
        "--sample-every",
        "1000",
        "--seed",
        "3",
    ]


def checkpoint_params(directory: Path, run_name: str, impl: str) -> dict[str, np.ndarray]:
    from compare.model.checkpoint import load_checkpoint

    return load_checkpoint(directory / "runs" / run_name / impl / "latest.npz").engine.params


def run_command(command: list[str], directory: Path) -> tuple[bool, str]:
    """(passed, output tail) of a command run to completion."""
    result = subprocess.run(
        command,
        cwd=directory,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    return result.returncode == 0, (result.stdout + result.stderr)[-1500:]


def check_run(directory: Path, run_name: str, command: list[str]) -> tuple[bool, list[str]]:
    """Parts 2 and 3: run ``command``, then compare the two implementations' final weights."""
    ran, output = run_command(command, directory)
    if not ran:
        return False, [f"  the command failed: {' '.join(command)}", output]
    diff = max_param_diff(
        checkpoint_params(directory, run_name, "manual"), checkpoint_params(directory, run_name, "torch")
    )
    ok = diff < TOLERANCE
    return ok, [
        f"  {run_name}: max |weight diff| manual (CPU) vs torch (GPU) after {STEPS} steps {diff:.2e}  "
        f"{'ok' if ok else 'TOO LARGE'}"
    ]


def missing_modules(names: Iterable[str]) -> list[str]:
    import importlib.util

    return [name for name in names if importlib.util.find_spec(name) is None]


PROG = "python -m compare.cuda_check"


def main(argv: list[str] | None = None) -> int:
    """The command line; a machine without a GPU is a FAIL (exit 1), a bad flag one line (exit 2)."""
    return run_cli(PROG, cuda_check_command, argv)


def cuda_check_command(argv: list[str]) -> int:
    CommandParser(prog=PROG, description=__doc__.splitlines()[0]).parse_args(argv)
    import torch
    import torch.distributed

    print(
        f"python {sys.version.split()[0]} ({sys.executable}), numpy {np.__version__}, torch {torch.__version__}, "
        f"CUDA available: {torch.cuda.is_available()}"
    )
    if not torch.cuda.is_available():
        print("FAIL: torch sees no CUDA GPU here (a CPU build of torch, or no driver); nothing was checked")
        return 1
    print(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}; tolerance {TOLERANCE:g}")
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before the first cuBLAS call, as compare.train
    results = []
    try:
        passed, lines = check_engines()
    except Exception as error:  # e.g. a kernel without a deterministic version: report it, check the rest
        passed, lines = False, [f"  {type(error).__name__}: {error}"]
    results.append(("1. engines", passed))
    print("1. engines, float64, 20 steps:", *lines, sep="\n")
    missing = missing_modules(["tensorboard", "tqdm", "threadpoolctl"])
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        if missing:
            print(f"2. CLI: SKIP (not installed: {', '.join(missing)})\n3. torchrun: SKIP")
        else:
            command = [sys.executable, "-m", "compare.train", *train_flags(directory, "cli")]
            passed, lines = check_run(directory, "cli", command)
            results.append(("2. CLI --impl both --device cuda", passed))
            print("2. CLI --impl both --device cuda:", *lines, sep="\n")
            if not torch.distributed.is_nccl_available():
                print("3. torchrun: SKIP (this torch has no NCCL)")
            else:
                command = [
                    sys.executable,
                    "-m",
                    "torch.distributed.run",
                    "--standalone",
                    "--nproc_per_node",
                    "1",
                    "-m",
                    "compare.train",
                    *train_flags(directory, "torchrun"),
                ]
                passed, lines = check_run(directory, "torchrun", command)
                results.append(("3. torchrun, 1 process, NCCL + gloo", passed))
                print("3. torchrun --nproc_per_node 1 ... --device cuda:", *lines, sep="\n")
    failed = [name for name, ok in results if not ok]
    print(
        f"FAIL: {', '.join(failed)}" if failed else f"PASS: {len(results)} parts, every difference below {TOLERANCE:g}"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
