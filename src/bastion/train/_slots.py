"""Worker slots: where a job runs, and failover when one goes bad.

Owns: the ``WorkerSlot`` interface (``name``, ``check()``, ``env()``, ``describe()``),
the local implementation, and the choice of the next healthy slot.

A slot is "a place that can run the job": today a local scratch directory; tomorrow a
Ray actor placement (``backend: ray`` in the manifest). The supervisor only calls these
three methods, so a Ray backend is one new class here.

Must never: delete or move anything in a scratch directory (probe files aside).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import UnavailableError, UsageError

__all__ = ["LocalSlot", "SlotPicker", "WorkerSlot", "slots_from_manifest"]


class WorkerSlot(Protocol):
    name: str

    def check(self) -> str | None:
        """``None`` if the slot can run the job now, else why not."""
        ...

    def env(self) -> dict[str, str]:
        """Environment the job gets on this slot (``BASTION_SLOT``, ``BASTION_SCRATCH``)."""
        ...

    def describe(self) -> dict[str, Any]: ...


class LocalSlot:
    """This machine, with an optional scratch directory that must stay writable."""

    def __init__(self, name: str, scratch: Path | None = None) -> None:
        self.name = name
        self.scratch = scratch

    def check(self) -> str | None:
        if self.scratch is None:
            return None
        try:
            self.scratch.mkdir(parents=True, exist_ok=True)
            probe = self.scratch / f".bastion-probe-{uuid.uuid4().hex[:8]}"
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, b"ok")
                os.fsync(fd)
            finally:
                os.close(fd)
            probe.unlink()
        except OSError as exc:
            return f"scratch {self.scratch} is not writable ({exc.strerror or exc})"
        return None

    def env(self) -> dict[str, str]:
        out = {"BASTION_SLOT": self.name}
        if self.scratch is not None:
            out["BASTION_SCRATCH"] = str(self.scratch)
        return out

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "backend": "local", "scratch": str(self.scratch or "")}


def slots_from_manifest(job: Any) -> list[WorkerSlot]:
    """The job's ``slots`` (default: one local slot with no scratch)."""
    out: list[WorkerSlot] = []
    for slot in getattr(job, "slots", None) or []:
        if slot.backend != "local":
            raise UsageError(
                f"worker slot {slot.name!r}: backend {slot.backend!r} is not available in "
                "this build (use backend: local)"
            )
        out.append(LocalSlot(slot.name, slot.scratch))
    return out or [LocalSlot("local")]


class SlotPicker:
    """Keep the job on its slot while it is healthy; move to the next healthy one when
    it fails, round-robin so a slot that recovers can be used again later."""

    def __init__(self, slots: Sequence[WorkerSlot]) -> None:
        if not slots:
            raise UsageError("a job needs at least one worker slot")
        self.slots = list(slots)
        self.index = 0
        self.failures: dict[str, str] = {}

    @property
    def current(self) -> WorkerSlot:
        return self.slots[self.index]

    def pick(self) -> tuple[WorkerSlot, list[tuple[str, str]]]:
        """The slot to run on now, and the ``(slot, why)`` failures seen on the way."""
        failed: list[tuple[str, str]] = []
        for offset in range(len(self.slots)):
            slot = self.slots[(self.index + offset) % len(self.slots)]
            why = slot.check()
            if why is None:
                self.index = (self.index + offset) % len(self.slots)
                return slot, failed
            self.failures[slot.name] = why
            failed.append((slot.name, why))
        raise UnavailableError(
            "no worker slot can run the job: "
            + "; ".join(f"{n}: {w}" for n, w in failed)
            + "; free or fix one of them"
        )
