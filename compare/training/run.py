"""What one training run holds (settings, data, engines, progress), and how it is saved and restored.

Each implementation's checkpoints are ``<logdir>/<run-name>/<impl>/latest.npz`` and
``best.npz`` (the format is compare.model.checkpoint).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from compare.cli.errors import TrainingFailed
from compare.data.corpus import StreamBatches, Vocab
from compare.model.checkpoint import (
    LATEST,
    Checkpoint,
    CheckpointError,
    RunProgress,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from compare.training.config import TrainConfig, config_conflicts

if TYPE_CHECKING:
    from compare.model.engines import Engine
    from compare.training.agreement import Verdict
    from compare.training.threads import ThreadChoice


@dataclass
class Run:
    """Everything the training loop works with."""

    config: TrainConfig
    vocab: Vocab
    data_sha256: str
    batches: StreamBatches
    val_batches: StreamBatches | None  # None with --val-frac 0
    engines: list[Engine]
    progress: dict[str, RunProgress]  # impl name -> its progress
    initial_loss: float  # ln V: the loss of a uniform prediction, and roughly of the initial weights
    losses: dict[str, list[float]] = field(default_factory=dict)  # impl name -> training loss of every step run here
    saved_steps: dict[str, int] = field(default_factory=dict)  # impl name -> step of the latest.npz written here
    is_main: bool = True  # writes files and prints: the only process, or rank 0 under torchrun
    torch_threads: ThreadChoice | None = None  # what torch ran on and why (torch/config.json records it)
    agreement: Verdict | None = None  # --impl both: the largest implementation error measured in this run so far

    @property
    def run_dir(self) -> Path:
        assert self.config.run_name is not None  # train() names the run before it builds one
        return Path(self.config.logdir) / self.config.run_name

    def save(self, engine: Engine, step: int, filename: str = LATEST) -> None:
        """Write ``engine``'s checkpoint to <run_dir>/<impl>/<filename>."""
        import torch  # here, not at the top: a bad --data is reported before torch's import second

        checkpoint = Checkpoint(
            impl=engine.name,
            step=step,
            vocab=self.vocab.chars,
            data_sha256=self.data_sha256,
            config=asdict(self.config),
            progress=self.progress[engine.name],
            engine=engine.export_state(),
            torch_rng_state=torch.get_rng_state().numpy(),
        )
        path = self.run_dir / engine.name / filename
        try:
            if self.is_main:  # one writer; under torchrun every rank took part in export_state's gather
                save_checkpoint(path, checkpoint)
        except OSError as error:  # disk full, quota, file system gone: the old file is still whole
            then = "start again" if self.nothing_saved(engine.name) else f"continue with --resume {self.run_dir}"
            raise TrainingFailed(
                f"could not save {path} at step {step} ({error.strerror or error}); "
                f"{self.kept_checkpoint(engine.name)}: free some space, then {then}"
            ) from error
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
    import torch  # as in Run.save

    assert run.config.resume is not None  # train() restores only a run given --resume
    checkpoints = [
        load_checkpoint(find_checkpoint(run.config.resume, engine.name), run.config.cell) for engine in run.engines
    ]
    for checkpoint in checkpoints:
        if checkpoint.data_sha256 != run.data_sha256:
            raise CheckpointError(
                "the training text differs from the one the checkpoint was trained on; "
                "pass the same --data (and --encoding) as that run"
            )
        conflicts = config_conflicts(checkpoint.config, asdict(run.config))
        if conflicts:
            raise CheckpointError(f"settings differ from the checkpoint's: {'; '.join(conflicts)}")
    if len({checkpoint.step for checkpoint in checkpoints}) > 1:
        raise CheckpointError(
            f"the implementations' checkpoints are at different steps: "
            f"{[checkpoint.step for checkpoint in checkpoints]}"
        )
    for engine, checkpoint in zip(run.engines, checkpoints, strict=True):
        engine.load_state(checkpoint.engine)
        run.progress[engine.name] = checkpoint.progress
    torch.set_rng_state(torch.from_numpy(checkpoints[0].torch_rng_state))
    return checkpoints[0].step
