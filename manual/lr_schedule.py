"""Learning-rate schedules by hand, update by update, as ``torch.optim.lr_scheduler`` computes them.

After update t (t = 1, 2, ...) the learning rate of update t + 1 becomes, from lr_0 = the base rate:

    step   (char-rnn's decay, torch's StepLR):   lr_t = lr_{t-1} * gamma   when t is a multiple of ``every``,
                                                 lr_{t-1} otherwise:  lr_0 * gamma^(t // every) in exact arithmetic
    cosine (CosineAnnealingLR, eta_min 0):       lr_t = lr_{t-1} * (1 + cos(pi t / T)) / (1 + cos(pi (t - 1) / T))
                                                 the closed form lr_0 * (1 + cos(pi t / T)) / 2, one ratio a step

torch updates the rate recursively, from the previous one, not from the closed form, and the two round
differently; so this does the same multiplications in the same order (Python floats, as torch's are),
and gives torch's rates to the bit. ``T`` is the horizon: at t = T the rate reaches 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SCHEDULES = ("constant", "step", "cosine")


@dataclass(frozen=True)
class LRSchedule:
    """Which schedule, counted in updates: ``every`` and ``gamma`` for 'step', ``horizon`` (T) for 'cosine'."""

    kind: str = "constant"
    every: int = 1
    gamma: float = 1.0
    horizon: int = 1


class ScheduledRate:
    """The learning rate of the next update under ``schedule``, starting at ``base_lr``."""

    def __init__(self, schedule: LRSchedule, base_lr: float) -> None:
        if schedule.kind not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule.kind!r}; choose from {SCHEDULES}")
        self.schedule = schedule
        self.base_lr = base_lr
        self.lr = base_lr
        self.updates = 0  # t: torch's last_epoch

    def step(self) -> float:
        """Count one more update (torch: ``scheduler.step()`` after ``optimizer.step()``); the next update's rate."""
        self.updates += 1
        t, schedule = self.updates, self.schedule
        if schedule.kind == "step" and t % schedule.every == 0:
            self.lr = self.lr * schedule.gamma
        elif schedule.kind == "cosine":
            horizon = schedule.horizon
            if (t - 1 - horizon) % (2 * horizon) == 0:  # just past a trough, where the ratio's denominator is 0
                self.lr = self.lr + self.base_lr * (1 - math.cos(math.pi / horizon)) / 2
            else:
                self.lr = (1 + math.cos(math.pi * t / horizon)) / (1 + math.cos(math.pi * (t - 1) / horizon)) * self.lr
        return self.lr

    def restart_at(self, updates: int) -> float:
        """The rate after ``updates`` updates, reached the way training reached it (a resume): replayed from t = 0."""
        self.lr, self.updates = self.base_lr, 0
        for _ in range(updates):
            self.step()
        return self.lr
