"""Worker slots: where a job runs, and failover when one goes bad.

Owns: the ``WorkerSlot`` interface (``name``, ``check()``, ``env()``, ``describe()``),
the local implementation, and the choice of the next healthy slot.

A slot is "a place that can run the job": a local scratch directory, or a node of a Ray
cluster (``backend: ray``, ``_ray.RaySlot``). The job supervisor calls ``check()`` to
pick one, ``preflight()`` once before it starts (a slot that can never work is a usage
error, exit 2), and ``launch()`` to start the worker there (``None``: start it here, as
``supervise`` does, warm standby included).

Must never: delete or move anything in a scratch directory (probe files aside).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import UnavailableError, UsageError
from bastion.supervise import Child, ProcessSpec

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

    def preflight(self) -> None:
        """Raise ``UsageError`` if the slot can never run the job as configured."""
        ...

    def launch(
        self, spec: ProcessSpec, heartbeat_path: Path | None, env: Mapping[str, str]
    ) -> Child | None:
        """Start the worker on this slot, or ``None``: the supervisor starts it here."""
        ...


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

    def preflight(self) -> None:
        return None

    def launch(
        self, spec: ProcessSpec, heartbeat_path: Path | None, env: Mapping[str, str]
    ) -> Child | None:
        return None


def slots_from_manifest(
    job: Any, *, name: str = "", source: str = "bastion.yaml"
) -> list[WorkerSlot]:
    """The job's ``slots`` (default: one local slot with no scratch). ``name`` and
    ``source`` (the manifest's path) say where a slot is, for its errors."""
    out: list[WorkerSlot] = []
    for i, slot in enumerate(getattr(job, "slots", None) or []):
        if slot.backend == "ray":
            from bastion.train._ray import RaySlot

            where = f"{source}: jobs.{name or '?'}.slots[{i}]"
            out.append(
                RaySlot(slot.name, slot.address, slot.resources, scratch=slot.scratch, where=where)
            )
        elif slot.backend == "local":
            out.append(LocalSlot(slot.name, slot.scratch))
        else:
            raise UsageError(
                f"worker slot {slot.name!r}: backend {slot.backend!r} is not available in "
                "this build (use backend: local or ray)"
            )
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
