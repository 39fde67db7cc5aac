"""compare.train's ``train`` under torchrun, for tests/test_distributed.py.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/dist_train.py LOSSES.json <train flags>

Rank 0 writes every step's training loss of each implementation to LOSSES.json (JSON keeps a
float64 exactly, where TensorBoard's events round it to float32), and every rank r writes what
it ended with (the losses, the validation loss and a sample of its weights) to LOSSES.json.rank<r>.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from compare.training.config import parse_args
from compare.training.loop import train


def main(losses_path: str, argv: list) -> None:
    summary = train(parse_args(argv))
    rank = int(os.environ["RANK"])
    ended_with = {
        name: {key: result[key] for key in ("losses", "val_loss", "sample")}
        for name, result in summary["impls"].items()
    }
    Path(f"{losses_path}.rank{rank}").write_text(json.dumps(ended_with))
    if rank == 0:
        Path(losses_path).write_text(json.dumps({name: result["losses"] for name, result in summary["impls"].items()}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
