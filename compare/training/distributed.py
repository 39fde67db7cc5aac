"""Data-parallel training on torch.distributed, for both implementations: the plumbing, in one place.

    torchrun --standalone --nproc_per_node 2 -m compare.train --impl manual --batch-size 64

torchrun starts one process per rank and tells each who it is in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT). Every rank

* reads the same text and draws the same initial weights from --seed (compare.model.init), so the
  ranks start identical without sending a single weight;
* trains on its share of each batch: of the B streams, rank r of N takes the rows
  r*B/N ... (r+1)*B/N - 1 and carries their hidden state from chunk to chunk;
* after backward, sums its gradients with the other ranks' in ONE all_reduce of one flat
  buffer (every gradient, then the loss, then a stop vote) and divides by N. Each rank's loss
  is the mean over its B/N rows, so the mean of the ranks' gradients is the gradient of the
  mean loss over all B rows: what one process computes from the full batch, summed in
  another order (the only difference, and a rounding-level one);
* measures, clips and applies that averaged gradient: the same numbers into the same
  optimizer, so every rank holds the same weights after every step.

Rank 0 alone writes TensorBoard events, checkpoints and samples. Validation, sampling and the
check before saving run on whole batches on every rank: the weights are the same, so are the
results, and nothing has to be sent (validation is repeated N times; it is a small share of
the work). A checkpoint gathers every rank's rows of the hidden state, so it holds all B rows
and resumes under any number of processes, one included.

Why the torch implementation uses the same explicit all-reduce and not DistributedDataParallel:
the manual implementation has no autograd hooks, so it needs this all-reduce anyway, and with
one code path both implementations send the same buffer, laid out the same way, through the
same collective: a distributed torch run and a distributed manual run differ exactly as their
single-process runs do. DDP's gain, overlapping the all-reduce with backward, is small for a
recurrent net: U, W and b are shared by every time step, so their gradients are complete only
when backpropagation through time reaches t = 1. And DDP must wrap the module's forward, while
the engine calls ``model.loss``; the flat buffer also carries the loss and the stop vote in the
same single collective.

A rank that dies closes its connections: the others' next collective fails at once; a rank
that hangs is given up after --dist-timeout seconds. Either way the survivors stop with one
line that names the checkpoint they leave (``lost_rank_error``), never hang.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import TYPE_CHECKING, SupportsFloat

import numpy as np

from compare.cli.errors import TrainingFailed
from compare.training.parallel_engine import DataParallelEngine
from compare.training.ranks import DEFAULT_TIMEOUT_S, launched_by_torchrun
from compare.training.stop import StopRequest

if TYPE_CHECKING:
    import torch

    from compare.model.engines import Engine, ManualEngine, TorchEngine


class RankLost(TrainingFailed):
    """A collective failed: another rank died, or did not answer within --dist-timeout."""


@dataclass
class StopVote:
    """Ctrl-C or SIGTERM on any rank stops every rank after the same step.

    The signal reaches the ranks at different moments, so a rank must not act on it at once:
    rank 0 would gather the hidden state for its checkpoint while rank 1 sent its next
    gradients. The signal is held here and voted on in the next gradient all-reduce; every
    rank sees the same total and marks ``stop`` after that same step.
    """

    stop: StopRequest  # what the training loop reads
    held: int = 0  # the signal this rank received and has not yet acted on; 0: none

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.held or self.stop.requested:
            raise KeyboardInterrupt  # a second signal: stop at once, as in one process
        self.held = signal_number

    def ballot(self) -> float:
        return float(self.held)

    def count(self, total: float) -> None:
        if total > 0 and not self.stop.requested:
            self.stop.signal_number = self.held or signal.SIGTERM  # SIGTERM: another rank's signal


@dataclass
class DataParallel:
    """This process's place among the ranks, and the collectives data-parallel training needs."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launched: bool = False  # started by torchrun: a process group exists, even of one rank
    timeout_s: float = DEFAULT_TIMEOUT_S
    stop_vote: StopVote | None = None

    @classmethod
    def from_environment(
        cls, timeout_s: float = DEFAULT_TIMEOUT_S, environ: Mapping[str, str] = os.environ
    ) -> DataParallel:
        if not launched_by_torchrun(environ):
            return cls(timeout_s=timeout_s)
        return cls(
            int(environ["RANK"]),
            int(environ["WORLD_SIZE"]),
            int(environ.get("LOCAL_RANK", "0")),
            launched=True,
            timeout_s=timeout_s,
        )

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def rows(self, batch_size: int) -> slice:
        """This rank's rows of a batch of ``batch_size`` streams: an equal, contiguous share."""
        share = batch_size // self.world_size
        return slice(self.rank * share, (self.rank + 1) * share)

    def torch_device(self, device: str) -> str:
        """Where the torch implementation runs: each rank of a launch on its own GPU, LOCAL_RANK."""
        return f"cuda:{self.local_rank}" if device == "cuda" and self.launched else device

    def wrap(self, engine: ManualEngine | TorchEngine) -> Engine:
        """``engine`` as the training loop should drive it: unchanged in a process torchrun did not start."""
        return DataParallelEngine(engine, self) if self.launched else engine

    def average_arrays(self, grads: dict[str, np.ndarray], loss: SupportsFloat) -> float:
        """Replace every NumPy gradient by its mean over the ranks, in place; return the mean loss."""
        import torch

        views = [torch.from_numpy(grad) for grad in grads.values()]  # share memory: writing them writes grads
        return self.average_tensors(views, loss)

    def average_tensors(self, grads: list[torch.Tensor], loss: SupportsFloat) -> float:
        """Replace every gradient tensor by its mean over the ranks, in place; return the mean loss.

        One all_reduce per step, of one flat buffer: [every gradient, the loss, the stop vote].
        """
        vote = self.stop_vote.ballot() if self.stop_vote else 0.0
        flat = pack(grads, [loss, vote])
        self.all_reduce_sum(flat)
        flat /= self.world_size  # N means over B/N rows each, summed, / N: the mean over all B rows
        unpack_into(flat, grads)
        if self.stop_vote:
            self.stop_vote.count(float(flat[-1]))
        return float(flat[-2])

    def all_reduce_sum(self, flat: torch.Tensor) -> None:
        import torch.distributed as dist

        self.collective(lambda: dist.all_reduce(flat))

    def gather_rows(self, state: np.ndarray) -> np.ndarray:
        """(L, P, B/N, H) rows of every rank -> (L, P, B, H), the same on every rank."""
        import torch
        import torch.distributed as dist

        mine = torch.from_numpy(np.ascontiguousarray(state))
        everyone = [torch.empty_like(mine) for _ in range(self.world_size)]
        self.collective(lambda: dist.all_gather(everyone, mine))
        return torch.cat(everyone, dim=2).numpy()

    def agree_on(self, text: str) -> str:
        """Rank 0's ``text`` on every rank (the run name: rank 0 claims its directory)."""
        if not self.launched:
            return text
        import torch.distributed as dist

        holder = [text]
        self.collective(lambda: dist.broadcast_object_list(holder, src=0))
        return holder[0]

    def collective(self, operation: Callable[[], object]) -> None:
        """Run a collective; a lost or silent rank becomes one RankLost error instead of a hang."""
        try:
            operation()
        except RuntimeError as error:  # gloo and NCCL raise RuntimeError (or its DistError subclasses)
            raise RankLost(
                f"rank {self.rank} of {self.world_size} lost contact with {self.others()} "
                f"({short_reason(error)}): another rank died or did not answer within "
                f"--dist-timeout {self.timeout_s:g} s"
            ) from error

    def others(self) -> str:
        """Whom a failed collective lost: of two ranks, the other one by name; of more, gloo cannot say which."""
        return f"rank {1 - self.rank}" if self.world_size == 2 else "the other ranks"


def pack(tensors: list[torch.Tensor], scalars: list[SupportsFloat]) -> torch.Tensor:
    """One flat buffer: every tensor flattened, then the scalars, in the first tensor's dtype and device."""
    import torch

    first = tensors[0]
    tail = [torch.as_tensor(value, dtype=first.dtype, device=first.device).reshape(1) for value in scalars]
    return torch.cat([tensor.reshape(-1) for tensor in tensors] + tail)


def unpack_into(flat: torch.Tensor, tensors: list[torch.Tensor]) -> None:
    """Copy the front of ``flat`` back into ``tensors``, in the order ``pack`` laid them out."""
    offset = 0
    for tensor in tensors:
        tensor.copy_(flat[offset : offset + tensor.numel()].view_as(tensor))
        offset += tensor.numel()


def short_reason(error: Exception) -> str:
    """gloo's '[.../pair.cc:537] Read error ...: Connection reset by peer. This is typically ...'
    -> 'Read error ...: Connection reset by peer'."""
    text = str(error).strip().split("\n")[0]
    text = re.sub(r"^\[[^\]]*\]\s*", "", text)
    return text.split(". ")[0].rstrip(".") or type(error).__name__
