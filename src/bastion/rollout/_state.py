"""A rollout's durable record: where it stands, so a restarted gateway resumes it.

Owns: ``RolloutRecord`` (the rollout's id, service, backend, candidate and stable
snapshots, strategy, planned steps, the step it is at, its status and why) and reading
and writing it at ``<state_dir>/rollout/<service>.json``: written whole and atomically
(``bastion.store.write_file``: a temporary file, fsync, rename; private mode) at every
change of step or status, so a SIGKILL leaves the old record or the new one, never half.

Must never: trust the file (it is read back through pydantic; a damaged one is a
``UsageError`` naming it and how to clear it); hold anything secret.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bastion.errors import UsageError

__all__ = ["ACTIVE", "RolloutRecord", "read_record", "record_path", "write_record"]

Status = Literal["starting", "running", "promoted", "rolled_back", "aborted"]
#: the statuses of a rollout still in progress (a restarted gateway resumes these)
ACTIVE = frozenset({"starting", "running"})


class RolloutRecord(BaseModel):
    """One rollout, as its state file holds it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9-]{1,64}$")
    service: str
    backend: str
    candidate: str
    candidate_id: str
    stable: str
    strategy: Literal["canary", "shadow", "blue-green"]
    steps: list[float] = Field(min_length=1)
    step: int = Field(default=0, ge=0)
    phase: Literal["check", "switched"] = "check"
    status: Status = "starting"
    reason: str = ""
    looks: int = 0
    started_at: float
    updated_at: float

    @property
    def weight(self) -> float:
        if self.status not in ACTIVE or self.status == "starting":
            return 0.0
        if self.strategy == "blue-green":
            return 100.0 if self.phase == "switched" else 0.0
        return self.steps[min(self.step, len(self.steps) - 1)]


def record_path(state_dir: Path, service: str) -> Path:
    return state_dir / "rollout" / f"{service}.json"


def read_record(state_dir: Path, service: str) -> RolloutRecord | None:
    """The service's newest rollout record, or None when it never had one."""
    path = record_path(state_dir, service)
    try:
        text = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        return RolloutRecord.model_validate_json(text)
    except ValidationError as exc:
        raise UsageError(
            f"{path}: not a rollout record Bastion wrote ({exc.error_count()} problem(s), "
            f"first: {exc.errors()[0]['msg']}); move it away to forget that rollout"
        ) from None


def write_record(state_dir: Path, record: RolloutRecord) -> None:
    from bastion.store import write_file

    path = record_path(state_dir, record.service)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = json.dumps(record.model_dump(), indent=1).encode() + b"\n"
    write_file(path, data, mode=0o600, dir_mode=0o700)
