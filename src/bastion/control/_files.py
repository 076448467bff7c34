"""Where `bastion up` keeps its state, and the one way it writes a file there.

Owns: the layout of ``<state_dir>/up/`` (0700): ``up.pid`` (the running ``bastion up``:
pid and start time), ``up.lock`` (held by it, so two never run on one state directory),
``children.json`` (each child's pid, start time and command, so a restarted ``bastion up``
adopts them), ``state.json`` (phase, reload generation and last result, API URL),
``logs/`` (one log per child and ``up.log`` for a detached run); and
``write_private_json`` (0600, replaced whole by rename: a reader never sees half a file).

Must never: write a secret (tokens live hashed in ``tokens.json``, see ``_tokens``), or
leave a state file readable by other users.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["RELOAD_ACK_ENV", "UpFiles", "read_json", "write_private_json"]

#: the environment variable naming the file where ``bastion serve`` acknowledges a reload
RELOAD_ACK_ENV = "BASTION_RELOAD_ACK"


def write_private_json(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` (0600), atomically (a temporary file, renamed)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(doc, out, sort_keys=True, default=str)
    tmp.replace(path)


def read_json(path: Path) -> Any:
    """The JSON document at ``path``, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class UpFiles:
    """The files of one state directory's ``bastion up``."""

    state_dir: Path

    @property
    def root(self) -> Path:
        return self.state_dir / "up"

    @property
    def pid(self) -> Path:
        return self.root / "up.pid"

    @property
    def lock(self) -> Path:
        return self.root / "up.lock"

    @property
    def children(self) -> Path:
        return self.root / "children.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def ack(self, child: str) -> Path:
        return self.root / f"ack-{child.replace(':', '-')}.json"

    @property
    def tokens(self) -> Path:
        return self.state_dir / "tokens.json"

    def make(self) -> None:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for d in (self.root, self.logs):
            d.mkdir(mode=0o700, parents=True, exist_ok=True)
            with contextlib.suppress(OSError):
                d.chmod(0o700)

    def running_pid(self) -> int | None:
        """The pid of the ``bastion up`` running on this state directory, or None (its
        pid file names a process that is gone, or another one that reused the pid)."""
        import psutil

        doc = read_json(self.pid)
        if not isinstance(doc, dict):
            return None
        try:
            proc = psutil.Process(int(doc["pid"]))
            if abs(proc.create_time() - float(doc["create_time"])) > 0.05:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.Error, KeyError, TypeError, ValueError):
            return None
        return proc.pid
