"""When to checkpoint: every N steps, every T seconds, or adaptively under an overhead cap.

Owns: the decision "is a checkpoint due at this step". Pure: the clock is injected and
the checkpointer reports each save's stall.

Adaptive mode (CheckFreq, FAST'21): the loop pays ``stall`` seconds per checkpoint, so a
checkpoint every ``k`` steps of ``step_s`` seconds costs ``stall / (k * step_s)``. Pick the
smallest ``k`` that keeps that under ``max_overhead`` (the issue's 3.5 %), re-estimated
from EWMAs of the measured step time and stall. ``every_steps`` then acts as the floor.

Must never: depend on anything the training math sees (where checkpoints fall does not
change the weights, so resume stays bit-exact whatever the cadence did).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cadence"]


@dataclass(kw_only=True)
class Cadence:
    every_steps: int | None = None
    every_seconds: float | None = None
    max_overhead: float | None = None
    alpha: float = 0.2
    clock: Callable[[], float] = time.monotonic
    step_s: float | None = field(default=None, init=False)
    stall_s: float | None = field(default=None, init=False)
    _last_step: int | None = field(default=None, init=False)
    _last_time: float | None = field(default=None, init=False)
    _saved_step: int = field(default=0, init=False)
    _saved_time: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        if self.every_steps is None and self.every_seconds is None and self.max_overhead is None:
            self.every_steps = 100
        self._saved_time = self.clock()

    @classmethod
    def from_policy(cls, policy: Any) -> Cadence:
        """From a manifest ``CheckpointPolicy``."""
        return cls(
            every_steps=policy.every_steps,
            every_seconds=policy.every_seconds,
            max_overhead=policy.max_overhead,
        )

    @staticmethod
    def _ewma(old: float | None, new: float, alpha: float) -> float:
        return new if old is None else (1 - alpha) * old + alpha * new

    def interval_steps(self) -> int | None:
        """Steps between checkpoints now (adaptive: from measured step time and stall)."""
        floor = self.every_steps
        if self.max_overhead is None or self.step_s is None or self.stall_s is None:
            return floor
        adaptive = max(1, math.ceil(self.stall_s / (self.max_overhead * max(self.step_s, 1e-9))))
        return max(floor or 1, adaptive)

    def observe_step(self, step: int) -> None:
        now = self.clock()
        if self._last_step is not None and self._last_time is not None and step > self._last_step:
            per = (now - self._last_time) / (step - self._last_step)
            self.step_s = self._ewma(self.step_s, per, self.alpha)
        self._last_step, self._last_time = step, now

    def due(self, step: int) -> bool:
        if step <= self._saved_step:
            return False
        interval = self.interval_steps()
        if interval is not None and step - self._saved_step >= interval:
            return True
        return self.every_seconds is not None and self.clock() - self._saved_time >= (
            self.every_seconds
        )

    def saved(self, step: int, stall_s: float) -> None:
        """A checkpoint of ``step`` was taken, blocking the loop for ``stall_s``."""
        self._saved_step = step
        self._saved_time = self.clock()
        self.stall_s = self._ewma(self.stall_s, stall_s, self.alpha)
        # the stall is not part of a training step: do not let it inflate step_s
        if self._last_time is not None:
            self._last_time += stall_s

    def skipped(self, step: int) -> None:
        """The save due at ``step`` was skipped (one in flight): wait a full interval."""
        self._saved_step = step
        self._saved_time = self.clock()

    def restart_from(self, step: int) -> None:
        self._saved_step = step
        self._saved_time = self.clock()
        self._last_step, self._last_time = None, None

    def statistics(self) -> dict[str, Any]:
        return {
            "every_steps": self.every_steps,
            "every_seconds": self.every_seconds,
            "max_overhead": self.max_overhead,
            "interval_steps": self.interval_steps(),
            "step_s": self.step_s,
            "stall_s": self.stall_s,
            "overhead": (
                self.stall_s / (self.interval_steps() or 1) / self.step_s
                if self.stall_s is not None and self.step_s
                else None
            ),
        }
