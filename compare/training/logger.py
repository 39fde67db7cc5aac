"""TensorBoard output of ``compare.train``: one event directory per implementation, and the drift."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from compare.training.config import TrainConfig


class Logger:
    """One SummaryWriter per implementation (same tags), plus one for the drift with --impl both."""

    def __init__(self, run_dir: Path, names: Iterable[str], purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # purge_step: TensorBoard hides this run's older events from that step on, so a
        # resumed run does not show the steps after its checkpoint twice.
        self.writers = {name: SummaryWriter(log_dir=str(run_dir / name), purge_step=purge_step) for name in names}

    def scalar(self, name: str, tag: str, value: float, step: int) -> None:
        self.writers[name].add_scalar(tag, value, step)

    def text(self, name: str, tag: str, value: str, step: int) -> None:
        # TensorBoard renders text as Markdown: indent it so whitespace and newlines survive.
        self.writers[name].add_text(tag, "    " + value.replace("\n", "\n    "), step)

    def hparams(self, name: str, config: TrainConfig, metrics: dict[str, float]) -> None:
        hparams = {key: value for key, value in asdict(config).items() if value is not None}
        hparams["impl"] = name
        self.writers[name].add_hparams(hparams, metrics, run_name=".")

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()


class NullLogger:
    """What ranks other than 0 of a data-parallel run log: nothing (rank 0 writes the events)."""

    def scalar(self, name: str, tag: str, value: float, step: int) -> None:
        pass

    def text(self, name: str, tag: str, value: str, step: int) -> None:
        pass

    def hparams(self, name: str, config: TrainConfig, metrics: dict[str, float]) -> None:
        pass

    def close(self) -> None:
        pass
