"""A pipeline run's state on disk, and the status view over it.

Owns: ``<state_dir>/pipelines/<name>/run.json``, the journal of the latest run: its id,
whether it finished, and per stage its state, output snapshot, inputs, cache key (or
why it had none) and attempts. Each change is written whole to a temporary file and
renamed over the old one, so a runner killed at any moment leaves the previous state or
the next, never half of one. ``bastion pipeline status`` and the resume both read it.

Must never: decide what runs (``_runner`` does) or trust a recorded output without the
vault verifying it (the journal says where to look, the vault says whether it is good).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from bastion.store import write_file

__all__ = ["RunRecord", "StageRecord", "StageState", "journal_path", "read_run", "write_run"]

StageState = Literal["pending", "running", "succeeded", "cached", "resumed", "failed", "blocked"]
DONE: frozenset[str] = frozenset({"succeeded", "cached", "resumed"})


@dataclass
class StageRecord:
    """One stage in a run."""

    state: StageState = "pending"
    #: the snapshot it published or reused, {"ref", "id"}
    output: dict[str, Any] | None = None
    #: input name -> snapshot id it read
    inputs: dict[str, str | None] = field(default_factory=dict)
    #: the cache key's label, None when the stage ran uncached
    key: str | None = None
    #: why the stage had no cache key (fails closed)
    uncached: str | None = None
    attempts: int = 0
    seconds: float | None = None
    reason: str = ""
    #: the stage process while it runs, so a resumed run can stop one a killed runner left
    pid: int | None = None
    pid_start: str | None = None


@dataclass
class RunRecord:
    """The latest run of one pipeline."""

    pipeline: str
    run_id: str
    state: Literal["running", "succeeded", "failed"] = "running"
    stages: dict[str, StageRecord] = field(default_factory=dict)
    resumed_from: str | None = None

    def to_json(self) -> dict[str, Any]:
        # by hand, not dataclasses.asdict (which deep-copies every value): the journal is
        # written on every stage transition
        return {
            "pipeline": self.pipeline,
            "run_id": self.run_id,
            "state": self.state,
            "stages": {name: dict(vars(rec)) for name, rec in self.stages.items()},
            "resumed_from": self.resumed_from,
        }


def journal_path(state_dir: Path, pipeline: str) -> Path:
    return Path(state_dir) / "pipelines" / pipeline / "run.json"


def read_run(state_dir: Path, pipeline: str) -> RunRecord | None:
    """The latest run's record, or None (never run, or a record that does not parse)."""
    try:
        doc = json.loads(journal_path(state_dir, pipeline).read_text())
        stages = {k: StageRecord(**v) for k, v in doc.pop("stages").items()}
        return RunRecord(**doc, stages=stages)
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def write_run(state_dir: Path, record: RunRecord) -> None:
    data = json.dumps(record.to_json(), separators=(",", ":")).encode()  # stage order kept
    # No fsync: the rename is atomic against a killed runner, which is what resume needs;
    # after a power loss an older record only means more stages are checked again.
    write_file(journal_path(state_dir, record.pipeline), data, mode=0o600, dir_mode=0o700)
