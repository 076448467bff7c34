"""What every fault shares: inject, revert, the events, and a record of what it did.

Owns: ``Fault``, the base class. A subclass implements ``_inject`` and ``_revert`` and
keeps whatever it needs to undo itself; the base class enforces the order (no double
inject, revert only after inject), emits ``drill.fault.injected`` and
``drill.fault.reverted`` with monotonic timestamps, and exposes ``statistics()``.

Must never: inject without having checked its scope first (subclasses check in
``__init__`` or at the top of ``_inject``, before any change).
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self

from bastion import event_kinds as ek
from bastion.errors import UsageError

if TYPE_CHECKING:
    from bastion.events import Emit

__all__ = ["Fault", "FaultStatistics"]


@dataclass(frozen=True, slots=True)
class FaultStatistics:
    """One fault, now."""

    #: the fault's name in the library (``storage.flip_bytes``)
    kind: str
    injected: bool
    reverted: bool
    #: seconds from injection to revert (or to now while active); None before injection
    active_s: float | None
    #: what it targets (``describe()``)
    target: dict[str, Any]


class Fault(ABC):
    """One fault: ``inject()`` breaks something in scope, ``revert()`` puts it back.

    Use as a context manager to guarantee the revert. ``events`` (optional) is the event
    log that receives ``drill.fault.injected`` / ``drill.fault.reverted``; ``subject`` is
    the manifest component the fault is aimed at, carried on those events.
    """

    kind: ClassVar[str] = "fault"  # dotted family name, e.g. "storage.flip_bytes"
    revertible: ClassVar[bool] = True

    def __init__(self, *, events: Emit | None = None, subject: str = "") -> None:
        self.events = events
        self.subject = subject
        self.injected = False
        self.reverted = False
        self.injected_at_ns: int | None = None
        self.reverted_at_ns: int | None = None
        self._lock = threading.Lock()

    @abstractmethod
    def _inject(self) -> dict[str, Any]:
        """Break the target; return the details worth recording (no secrets)."""

    @abstractmethod
    def _revert(self) -> dict[str, Any]:
        """Undo ``_inject``; return the details worth recording."""

    def describe(self) -> dict[str, Any]:
        """What the fault targets, for events and ``bastion drill faults``."""
        return {}

    def inject(self) -> dict[str, Any]:
        with self._lock:
            if self.injected and not self.reverted:
                raise UsageError(f"{self.kind}: already injected; revert it first")
            # Marked injected before the work starts: an inject cut short (an abort's
            # SystemExit, a guard killing the attack) must still be revertible.
            self.injected, self.reverted = True, False
            self.injected_at_ns = time.monotonic_ns()
            try:
                details = {**self.describe(), **self._inject()}
            except BaseException:
                # Cut short (an abort, a guard): it still happened, and it will be reverted.
                self._emit(
                    ek.DRILL_FAULT_INJECTED,
                    {**self.describe(), "partial": True},
                    at_ns=self.injected_at_ns,
                )
                raise
        # The event's time is the injection's start: a slow one (ransomware) hurts from then.
        self._emit(ek.DRILL_FAULT_INJECTED, details, at_ns=self.injected_at_ns)
        return details

    def revert(self) -> dict[str, Any]:
        with self._lock:
            if not self.injected or self.reverted:
                return {}
            details = {**self.describe(), **self._revert()}
            self.reverted = True
            self.reverted_at_ns = time.monotonic_ns()
        self._emit(ek.DRILL_FAULT_REVERTED, details)
        return details

    def _emit(self, kind: str, details: dict[str, Any], *, at_ns: int | None = None) -> None:
        if self.events is not None:
            self.events.emit(kind, self.subject, at_ns=at_ns, fault=self.kind, **details)

    def statistics(self) -> FaultStatistics:
        active_ns = None
        if self.injected_at_ns is not None:
            end = self.reverted_at_ns if self.reverted_at_ns is not None and self.reverted else None
            end = end if end is not None else time.monotonic_ns()
            active_ns = end - self.injected_at_ns
        return FaultStatistics(
            kind=self.kind,
            injected=self.injected,
            reverted=self.reverted,
            active_s=None if active_ns is None else active_ns / 1e9,
            target=self.describe(),
        )

    def __enter__(self) -> Self:
        self.inject()
        return self

    def __exit__(self, *exc: object) -> None:
        self.revert()
