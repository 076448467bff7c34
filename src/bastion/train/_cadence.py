"""When to checkpoint: every N steps, every T seconds, or adaptively under an overhead cap.

Owns: the decision "is a checkpoint due at this step". Pure: the clock is injected and
the checkpointer reports each save's stall.

Adaptive mode (CheckFreq, FAST'21): a checkpoint costs the loop its ``stall`` (the
in-memory copy) plus the inflation of the steps that run while the background persist is
in flight (the writer's hashing, copying and disk DMA compete with the step for CPU and
memory bandwidth: on 2 cores that, not the stall, is most of the cost). Both are
measured: steps taken with a persist in flight are compared with the EWMA of steps
taken without one, and the excess is summed per checkpoint. A checkpoint every ``k``
steps of ``step_s`` seconds then costs ``(stall + inflation) / (k * step_s)``; pick the
smallest ``k`` that keeps that under ``max_overhead`` (the issue's 3.5 %), re-estimated
from EWMAs. ``every_steps`` then acts as the floor; before anything is measured the
first checkpoint falls after ``BOOTSTRAP_STEPS`` steps (or the floor).

Must never: depend on anything the training math sees (where checkpoints fall does not
change the weights, so resume stays bit-exact whatever the cadence did).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Cadence", "CadenceStatistics"]

BOOTSTRAP_STEPS = 10


@dataclass(frozen=True)
class CadenceStatistics:
    """A cadence's settings and what it has measured (``Cadence.statistics()``)."""

    every_steps: int | None
    """The fixed interval in steps (adaptive mode: the floor)."""
    every_seconds: float | None
    """The fixed interval in seconds, if any."""
    max_overhead: float | None
    """The adaptive cap on the loop time checkpoints may cost (0.035 = 3.5 %)."""
    interval_steps: int | None
    """Steps between checkpoints now."""
    step_s: float | None
    """EWMA of an undisturbed training step, seconds."""
    stall_s: float | None
    """EWMA of a save's in-memory copy, seconds."""
    inflation_s: float | None
    """EWMA of the extra step time while a persist is in flight, per checkpoint."""
    overhead: float | None
    """Estimated fraction of loop time checkpoints cost at ``interval_steps``."""


@dataclass(kw_only=True)
class Cadence:
    every_steps: int | None = None
    every_seconds: float | None = None
    max_overhead: float | None = None
    alpha: float = 0.2
    clock: Callable[[], float] = time.monotonic
    step_s: float | None = field(default=None, init=False)
    stall_s: float | None = field(default=None, init=False)
    inflation_s: float | None = field(default=None, init=False)
    _extra_s: float = field(default=0.0, init=False)
    _extra_steps: int = field(default=0, init=False)
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

    def cost_s(self) -> float | None:
        """Measured loop time one checkpoint costs: stall plus in-flight step inflation."""
        if self.stall_s is None:
            return None
        return self.stall_s + (self.inflation_s or 0.0)

    def interval_steps(self) -> int | None:
        """Steps between checkpoints now (adaptive: from measured step time and cost)."""
        floor = self.every_steps
        if self.max_overhead is None:
            return floor
        cost = self.cost_s()
        if self.step_s is None or cost is None:
            return floor or BOOTSTRAP_STEPS
        adaptive = max(1, math.ceil(cost / (self.max_overhead * max(self.step_s, 1e-9))))
        return max(floor or 1, adaptive)

    def observe_step(self, step: int, *, in_flight: bool = False) -> None:
        """A step ended. ``in_flight``: a background persist ran during (part of) it, so
        its excess over the undisturbed step time is that checkpoint's inflation."""
        now = self.clock()
        if self._last_step is not None and self._last_time is not None and step > self._last_step:
            n = step - self._last_step
            per = (now - self._last_time) / n
            if in_flight and self.step_s is not None:
                self._extra_s += (per - self.step_s) * n
                self._extra_steps += n
            else:
                self._close_inflation()
                self.step_s = self._ewma(self.step_s, per, self.alpha)
        self._last_step, self._last_time = step, now

    def _close_inflation(self) -> None:
        """The persist that was in flight is done: fold its summed inflation in."""
        if self._extra_steps:
            # negative sums are noise (a step cannot run faster because a write ran)
            self.inflation_s = self._ewma(self.inflation_s, max(0.0, self._extra_s), self.alpha)
        self._extra_s, self._extra_steps = 0.0, 0

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
        self._close_inflation()  # back to back: the previous persist's steps are all in
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

    def resume(self) -> None:
        """The loop paused (evaluation, a data stall): the time until the next step is
        not a training step's time, so it must not enter the step-time estimate."""
        self._last_step, self._last_time = None, None

    def restart_from(self, step: int) -> None:
        self._saved_step = step
        self._saved_time = self.clock()
        self._last_step, self._last_time = None, None
        self._extra_s, self._extra_steps = 0.0, 0

    def statistics(self) -> CadenceStatistics:
        interval = self.interval_steps()
        cost = self.cost_s()
        return CadenceStatistics(
            every_steps=self.every_steps,
            every_seconds=self.every_seconds,
            max_overhead=self.max_overhead,
            interval_steps=interval,
            step_s=self.step_s,
            stall_s=self.stall_s,
            inflation_s=self.inflation_s,
            overhead=(
                cost / (interval or 1) / self.step_s if cost is not None and self.step_s else None
            ),
        )
