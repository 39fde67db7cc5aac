"""Data-parallel training on torch.distributed, for both implementations, and stopping on a signal.

    torchrun --standalone --nproc_per_node 2 -m compare.train --impl manual --batch-size 64

    join_ranks          this process's place among the ranks for one run (DataParallel), joined and left
    DataParallel        the rank, its share of a batch, and the collectives (one all-reduce per step)
    DataParallelEngine  an engine handed whole batches that trains this rank's rows
    StopRequest, StopVote  Ctrl-C and SIGTERM: one process, or every rank after the same step

torchrun starts one process per rank and tells each who it is in environment variables
(RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT), which the CLI reads before torch is
imported (is_main_process, cli_prog). Every rank

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
line that names the checkpoint they leave (``lost_rank_error``), never hang."""

from __future__ import annotations

import datetime
import os
import re
import signal
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, Protocol, SupportsFloat

import numpy as np

from compare.cli.errors import TrainingFailed, UsageError
from compare.model.checkpoint import LATEST, CheckpointError, checkpoint_step
from compare.training.config import DEFAULT_TIMEOUT_S

if TYPE_CHECKING:
    import torch

    from compare.model.engines import Engine, ManualEngine, StepStats, TorchEngine
    from compare.model.state import EngineState
    from compare.training.config import TrainConfig


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What signal.signal takes and returns: a function, SIG_DFL or SIG_IGN, or None for a handler not set from Python.
SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


@contextmanager
def join_ranks(config: TrainConfig, stop: StopRequest) -> Iterator[DataParallel]:
    """This process's DataParallel for one training run.

    In a process torchrun started: check that the batch splits evenly, join the process group
    (timeout --dist-timeout), let Ctrl-C and SIGTERM be voted on (StopVote), and leave the group
    at the end. In any other process: a DataParallel of one rank, and nothing else.
    """
    parallel = DataParallel.from_environment(config.dist_timeout)
    if not parallel.launched:
        yield parallel
        return
    problem = batch_split_problem(config.batch_size, parallel.world_size)
    if config.loss_reduction == "sum":  # the ranks average their gradients: that is the mean loss's gradient
        problem = "--loss-reduction sum (--preset original) trains in one process: run it without torchrun"
    if config.optimizer == "hf":  # its products with G and its trial loss see one rank's share of the batch
        problem = "--optimizer hf trains in one process (its Gauss-Newton products are not averaged over ranks)"
    if problem:
        raise UsageError(problem)
    import torch
    import torch.distributed as dist

    if config.device == "cuda":
        torch.cuda.set_device(parallel.local_rank)
    try:
        dist.init_process_group(backend_for(config), timeout=datetime.timedelta(seconds=config.dist_timeout))
    except RuntimeError as error:  # the others never came (DistStoreError), or the address is taken
        raise TrainingFailed(
            f"rank {parallel.rank} could not join the other {parallel.world_size - 1} "
            f"within --dist-timeout {config.dist_timeout:g} s ({short_reason(error)})"
        ) from error
    parallel.stop_vote = StopVote(stop)
    previous_handlers = install_handlers(parallel.stop_vote.handle)
    try:
        yield parallel
    finally:
        install_handlers(previous_handlers)
        try:
            dist.destroy_process_group()
        except RuntimeError:  # a group whose peer is gone may fail to tear down: the error that ended the run stands
            pass


def install_handlers(handlers: SignalHandler | dict[int, SignalHandler]) -> dict[int, SignalHandler]:
    """Point SIGINT and SIGTERM at ``handlers`` (one handler, or a dict by signal); returns the previous ones."""
    if threading.current_thread() is not threading.main_thread():  # Python allows signal handlers only there
        return {}
    if not isinstance(handlers, dict):
        handlers = {number: handlers for number in STOP_SIGNALS}
    return {
        number: signal.signal(number, handler) for number, handler in handlers.items() if handler is not None
    }  # None: a handler not set from Python, which cannot be put back


def describe_checkpoint(path: Path) -> str:
    """What a rank that lost the others can say about the checkpoint rank 0 keeps at ``path``."""
    if not path.exists():
        return f"no checkpoint at {path} yet"
    try:
        return f"the last checkpoint, {path} (step {checkpoint_step(path)}), is intact"
    except CheckpointError as error:
        return f"the checkpoint {path} cannot be read ({error})"


def lost_rank_error(error: RankLost, run_dir: Path, impls: Iterable[str], latest: str) -> TrainingFailed:
    """``error`` with what the run leaves: the checkpoint each implementation can continue from."""
    kept = "; ".join(describe_checkpoint(run_dir / impl / latest) for impl in impls)
    return TrainingFailed(f"{error}; {kept}; after fixing the cause, continue with --resume {run_dir}")


@contextmanager
def naming_kept_checkpoints(run_dir: Path, impls: Iterable[str]) -> Iterator[None]:
    """Inside: a RankLost becomes the error a user needs, which also names the checkpoints kept."""
    try:
        yield
    except RankLost as error:
        raise lost_rank_error(error, run_dir, impls, LATEST) from error


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


class RankShare(Protocol):
    """DataParallel above, as the engine uses it:
    this rank's share of the rows, and the engines' gradient averager (compare.model.engines)."""

    world_size: int

    def rows(self, batch_size: int) -> slice: ...

    def gather_rows(self, state: np.ndarray) -> np.ndarray: ...

    def average_arrays(self, grads: dict[str, np.ndarray], loss: SupportsFloat) -> float: ...

    def average_tensors(self, grads: list[torch.Tensor], loss: SupportsFloat) -> float: ...


class DataParallelEngine:
    """An engine as the training loop sees it in a data-parallel run: it is handed whole batches.

    ``train_step`` trains on this rank's rows and reports the whole batch (the loss averaged
    over the ranks, the norm of the averaged gradient). ``export_state`` gathers every rank's
    rows of the hidden state, so a checkpoint holds all B rows; ``load_state`` keeps this
    rank's. Validation, sampling and the check before saving use the wrapped engine on whole
    batches, exactly as in one process.
    """

    def __init__(self, engine: ManualEngine | TorchEngine, parallel: RankShare) -> None:
        self.engine = engine
        self.parallel = parallel
        self.name = engine.name
        engine.gradient_averager = parallel  # the engines' hook between backward and clipping

    def reset_hidden(self, batch_size: int) -> None:
        self.engine.reset_hidden(batch_size // self.parallel.world_size)

    def train_step(self, inputs: np.ndarray, targets: np.ndarray) -> StepStats:
        rows = self.parallel.rows(len(inputs))
        return self.engine.train_step(inputs[rows], targets[rows])

    def export_state(self) -> EngineState:
        state = self.engine.export_state()
        if state.hidden is None:  # before the first step, on every rank alike
            return state
        return replace(state, hidden=self.parallel.gather_rows(state.hidden))

    def load_state(self, state: EngineState) -> None:
        hidden = None if state.hidden is None else state.hidden[:, :, self.parallel.rows(state.hidden.shape[2])]
        self.engine.load_state(replace(state, hidden=hidden))

    def zero_state(self, batch_size: int) -> np.ndarray:
        return self.engine.zero_state(batch_size)

    def eval_loss(self, inputs: np.ndarray, targets: np.ndarray, state: np.ndarray) -> tuple[float, np.ndarray]:
        return self.engine.eval_loss(inputs, targets, state)

    def step_logits(self, tokens: np.ndarray, state: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.engine.step_logits(tokens, state)

    def numpy_params(self) -> dict[str, np.ndarray]:
        return self.engine.numpy_params()


class HasDevice(Protocol):
    """A compare.training.config.TrainConfig, as ``backend_for`` sees it."""

    device: str


def launched_by_torchrun(environ: Mapping[str, str] = os.environ) -> bool:
    return "RANK" in environ and "WORLD_SIZE" in environ


def is_main_process(environ: Mapping[str, str] = os.environ) -> bool:
    """Rank 0 of a torchrun launch, or a process torchrun did not start: the one that prints."""
    return int(environ.get("RANK", "0")) == 0


def cli_prog(prog: str, environ: Mapping[str, str] = os.environ) -> str:
    """'<prog> [rank 1/2]' when several ranks run, so that each error line says whose it is."""
    world_size = int(environ.get("WORLD_SIZE", "1"))
    return f"{prog} [rank {environ.get('RANK', '0')}/{world_size}]" if world_size > 1 else prog


def batch_split_problem(batch_size: int, world_size: int) -> str | None:
    if batch_size % world_size == 0:
        return None
    lower, higher = batch_size - batch_size % world_size, batch_size + world_size - batch_size % world_size
    return (
        f"--batch-size {batch_size} cannot be split evenly over {world_size} processes; "
        f"use a multiple of {world_size} (e.g. {lower or higher} or {higher})"
    )


def backend_for(config: HasDevice) -> str:
    """gloo on the CPU; with --device cuda, NCCL for the GPU tensors and gloo for the CPU ones (manual)."""
    return "cpu:gloo,cuda:nccl" if config.device == "cuda" else "gloo"


@dataclass
class StopRequest:
    """Set by the CLI's signal handler; the training loop checks it after every step."""

    signal_number: int | None = None

    @property
    def requested(self) -> bool:
        return self.signal_number is not None

    def handle(self, signal_number: int, frame: FrameType | None) -> None:
        if self.requested:
            raise KeyboardInterrupt  # a second signal: stop at once (checkpoints on disk stay whole)
        self.signal_number = signal_number
