"""The segments' durable state: the token revocation list and each segment's quarantine.

Owns: ``<state_dir>/segments/state.json`` (0600, in a 0700 directory; replaced whole,
under ``state.lock``), and ``RevocationList``, the vault server's view of it, re-read
whenever the file changes (one ``stat`` per request), so a quarantine written by another
process is in force on the server's next request, with no signal and no restart.

Must never: forget a revocation (a released segment's old tokens stay refused: release
means new tokens), or hold a token itself (only block ids and times).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bastion.segment._token import Scope
from bastion.store import make_dirs, open_file, write_file

__all__ = ["RevocationList", "SegmentState"]


class SegmentState:
    """The state file of ``state_dir``'s segments (see the module)."""

    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir) / "segments"
        self.path = self.dir / "state.json"

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {"revoked": {}, "segments": {}}
        data.setdefault("revoked", {})
        data.setdefault("segments", {})
        return dict(data)

    @contextlib.contextmanager
    def update(self) -> Iterator[dict[str, Any]]:
        """The state to change in place, written back whole when the block ends, one
        writer at a time across processes."""
        make_dirs(self.dir, 0o700)
        fd = open_file(self.dir / "state.lock", os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            state = self.read()
            yield state
            write_file(
                self.path, json.dumps(state, sort_keys=True).encode(), mode=0o600, dir_mode=0o700
            )
        finally:
            os.close(fd)

    def segment(self, name: str) -> dict[str, Any]:
        return dict(self.read()["segments"].get(name, {}))

    def quarantined(self, name: str) -> bool:
        return bool(self.segment(name).get("quarantined"))

    def revoke(self, token_id: str, *, clock: Callable[[], float] = time.time) -> None:
        with self.update() as state:
            state["revoked"][token_id] = clock()


class RevocationList:
    """What the vault server refuses, from the state file, re-read when it changes."""

    def __init__(self, state: SegmentState) -> None:
        self.state = state
        self._seen: tuple[int, ...] | None = None
        self._revoked: set[str] = set()
        self._segments: dict[str, dict[str, Any]] = {}

    def _refresh(self) -> None:
        try:
            st = self.state.path.stat()
            seen: tuple[int, ...] = (st.st_mtime_ns, st.st_ino, st.st_size, st.st_ctime_ns)
        except FileNotFoundError:
            seen = ()
        if seen == self._seen:
            return
        data = self.state.read()
        self._revoked = set(data["revoked"])
        self._segments = dict(data["segments"])
        self._seen = seen

    def quarantined(self, segment: str) -> bool:
        self._refresh()
        return bool(self._segments.get(segment, {}).get("quarantined"))

    def why(self, scope: Scope) -> str | None:
        """Why ``scope``'s token is refused, or None: a revoked block, a quarantined
        segment, or issued before its segment's last quarantine."""
        self._refresh()
        for token_id in scope.ids:
            if token_id in self._revoked:
                return f"token {token_id[:8]} was revoked (`bastion segment revoke`)"
        seg = self._segments.get(scope.segment, {})
        if seg.get("quarantined"):
            return (
                f"segment {scope.segment!r} is quarantined (`bastion segment release "
                f"{scope.segment}` after its check, then mint new tokens)"
            )
        before = seg.get("revoked_before")
        if isinstance(before, int | float) and scope.issued < before:
            return (
                f"it was issued before segment {scope.segment!r} was quarantined; mint a "
                "new one with `bastion segment token`"
            )
        return None
