"""Ctrl-C and SIGTERM: the training loop finishes its step, saves, and stops."""

from __future__ import annotations

from dataclasses import dataclass
from types import FrameType


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
