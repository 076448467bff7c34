"""The guard: watch protected working directories, detect tampering and ransomware, stop
further damage, and put back the last good snapshot.

Owns: the protected-directory list (``<state_dir>/guard.json``), the detection rules, the
freeze (read-only modes, plus the immutable flag when we may set it, because root ignores
modes), and the ``vault.guard.*`` events.

Must never: restore over a directory while the attack can still write to it (the freeze
comes first and the restore waits for quiet), or leave a directory frozen when it stops.

Signals (CryptoDrop's indicators, simplified): a high-entropy rewrite of a file that was
low-entropy; an extension change (``x.csv`` -> ``x.csv.locked``); a new file named like
a ransom note; a touched canary; ``burst`` or more files changed inside ``window_s``. Any
one of them is ransomware; any other change not recorded with ``snapshot_dir`` is
tampering. Detection runs on inotify (watchdog), so it is milliseconds behind the write.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import json
import math
import os
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bastion import event_kinds as ek
from bastion.errors import NotFoundError, UsageError
from bastion.names import parse_name
from bastion.vault._objects import boundaries, hash_bytes

if TYPE_CHECKING:
    from bastion.vault._snapshot import Snapshot
    from bastion.vault._vault import Vault

__all__ = [
    "CANARY",
    "Guard",
    "GuardStatistics",
    "Protected",
    "load_protected",
    "protect",
    "snapshot_dir",
]

_GETFLAGS, _SETFLAGS, _IMMUTABLE = 0x80086601, 0x40086602, 0x10
_NOTE = re.compile(r"(readme|restore|decrypt|ransom|how[_-]?to|recover).*\.(txt|html?|md)$", re.I)
CANARY = ".bastion-canary"
_HIGH_ENTROPY = 7.2  # bits per byte; text and CSV sit near 4-5, ciphertext near 8


def _entropy(data: bytes) -> float:
    if not data:
        return 0.0
    n = len(data)
    return -sum(c / n * math.log2(c / n) for c in Counter(data).values())


@dataclass(frozen=True)
class Protected:
    directory: Path
    name: str


def _registry(vault: Vault) -> Path:
    if vault.state_dir is None:
        raise UsageError("the guard needs a state directory (state_dir in bastion.yaml)")
    return vault.state_dir / "guard.json"


def load_protected(vault: Vault) -> list[Protected]:
    path = _registry(vault)
    if not path.exists():
        return []
    return [Protected(Path(d["dir"]), d["name"]) for d in json.loads(path.read_text())]


def _dir_files(directory: Path) -> dict[str, Path]:
    return {
        p.relative_to(directory).as_posix(): p
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink() and p.name != CANARY
    }


def snapshot_dir(vault: Vault, directory: Path, name: str | None = None) -> Snapshot:
    """Record the directory's current content as its new good state (a legitimate change)."""
    directory = directory.resolve()
    if name is None:
        match = [p for p in load_protected(vault) if p.directory == directory]
        if not match:
            raise NotFoundError(f"{directory} is not protected (run `bastion vault protect` first)")
        name = match[0].name
    return vault.commit(
        parse_name(name), _dir_files(directory), meta={"protected_dir": str(directory)}
    )


def protect(vault: Vault, directory: Path, name: str) -> Snapshot:
    """Take a baseline snapshot of ``directory``, drop a canary and register it."""
    directory = directory.resolve()
    if not directory.is_dir():
        raise NotFoundError(f"{directory} is not a directory; give the directory to protect")
    snap = snapshot_dir(vault, directory, name)
    (directory / CANARY).write_text("bastion canary: do not touch\n")
    entries = [p for p in load_protected(vault) if p.directory != directory]
    entries.append(Protected(directory, name))
    listed = [{"dir": str(p.directory), "name": p.name} for p in entries]
    vault.write_state(_registry(vault).name, json.dumps(listed).encode())
    vault.events.emit(ek.VAULT_GUARD_PROTECTED, name, dir=str(directory), snapshot=snap.ref)
    return snap


def _set_immutable(path: Path, on: bool) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else os.O_NONBLOCK)
    try:
        fd = os.open(path, flags)
    except OSError:
        return
    try:
        buf = array.array("i", [0])
        fcntl.ioctl(fd, _GETFLAGS, buf, True)
        buf[0] = buf[0] | _IMMUTABLE if on else buf[0] & ~_IMMUTABLE
        fcntl.ioctl(fd, _SETFLAGS, buf, True)
    except OSError:
        pass  # not root, or a filesystem without the flag: the read-only modes remain
    finally:
        os.close(fd)


@dataclass(frozen=True, slots=True)
class GuardStatistics:
    """What a running guard watches.

    Attributes:
        dirs: protected directories being watched.
        incidents: ransomware detections since it started.
        frozen: directories frozen now (read-only until restored).
    """

    dirs: int
    incidents: int
    frozen: int


@dataclass
class _Watch:
    protected: Protected
    snapshot: Snapshot
    baseline: dict[str, tuple[tuple[str, ...], float]]  # path -> (chunk ids, entropy)
    changed: dict[str, float] = field(default_factory=dict)  # path -> mono time
    first_change_ns: int = 0
    last_change_ns: int = 0
    signals: list[str] = field(default_factory=list)
    detected: bool = False
    frozen: dict[Path, int] = field(default_factory=dict)
    tampered_reported: bool = False


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue[tuple[int, FileSystemEvent]]) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.inbox.put((time.monotonic_ns(), event))


class Guard:
    """Watch every protected directory of ``vault``; ``restore``: put back after an attack."""

    def __init__(
        self,
        vault: Vault,
        *,
        restore: bool = False,
        freeze: bool = True,
        window_s: float = 2.0,
        burst: int = 5,
        settle_s: float = 0.5,
    ) -> None:
        self.vault = vault
        self.restore = restore
        self.freeze = freeze
        self.window_s = window_s
        self.burst = burst
        self.settle_s = settle_s
        self._inbox: queue.Queue[tuple[int, FileSystemEvent]] = queue.Queue()
        self._watches: list[_Watch] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._quiet = threading.Event()
        self.incidents: list[dict[str, Any]] = []

    def _baseline(self, protected: Protected) -> _Watch:
        snap = self.vault.snapshot(protected.name)
        base: dict[str, tuple[tuple[str, ...], float]] = {}
        for path, entry in snap.files.items():
            data = self.vault.read(snap, path)
            base[path] = (tuple(c.id for c in entry.chunks), _entropy(data[: 64 << 10]))
        return _Watch(protected, snap, base)

    def start(self) -> None:
        protected = load_protected(self.vault)
        if not protected:
            raise UsageError("nothing is protected yet; run `bastion vault protect DIR --name ...`")
        self._watches = [self._baseline(p) for p in protected]
        self._observer = Observer()
        for watch in self._watches:
            self._observer.schedule(
                _Handler(self._inbox), str(watch.protected.directory), recursive=True
            )
        self._observer.start()
        self._thread = threading.Thread(target=self._loop, name="vault-guard", daemon=True)
        self._thread.start()
        self.vault.events.emit(
            ek.VAULT_GUARD_STARTED,
            self.vault.subject,
            dirs=[str(w.protected.directory) for w in self._watches],
        )

    def stop(self) -> None:
        self._stop.set()
        if self._observer is not None:
            self._observer.stop()
            self._observer.join()
        if self._thread is not None:
            self._thread.join()
        for watch in self._watches:
            self._unfreeze(watch)

    def __enter__(self) -> Guard:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def statistics(self) -> GuardStatistics:
        return GuardStatistics(
            dirs=len(self._watches),
            incidents=len(self.incidents),
            frozen=sum(1 for w in self._watches if w.frozen),
        )

    # ------------------------------------------------------------------ detection

    def _watch_for(self, path: Path) -> tuple[_Watch, str] | None:
        for watch in self._watches:
            root = watch.protected.directory
            if path.is_relative_to(root):
                return watch, path.relative_to(root).as_posix()
        return None

    def _content_changed(self, watch: _Watch, rel: str, path: Path) -> tuple[bool, float]:
        try:
            data = path.read_bytes()
        except OSError:
            return True, 0.0
        ids = tuple(
            hash_bytes(memoryview(data)[o : o + n]) for o, n in boundaries(memoryview(data))
        )
        base = watch.baseline.get(rel)
        return (base is None or base[0] != ids), _entropy(data[: 64 << 10])

    def _classify(self, watch: _Watch, event: FileSystemEvent, at: int) -> None:
        if event.is_directory:
            return
        src = Path(os.fsdecode(event.src_path))
        found = self._watch_for(src)
        if found is None:
            return
        _, rel = found
        if src.name.endswith(".bastion-restore"):
            return
        kind = event.event_type
        changed = False
        if src.name == CANARY:
            watch.signals.append(f"canary touched ({kind})")
            changed = True
        elif kind == "moved":
            dest = Path(os.fsdecode(event.dest_path))
            if dest.suffix != src.suffix:
                watch.signals.append(f"extension change {src.name} -> {dest.name}")
            changed = True
        elif kind == "deleted":
            changed = rel in watch.baseline
        elif kind in ("created", "modified", "closed"):
            if not src.exists():
                return
            differs, entropy = self._content_changed(watch, rel, src)
            if not differs:
                return
            changed = True
            base = watch.baseline.get(rel)
            if kind == "created" and base is None and _NOTE.search(src.name):
                watch.signals.append(f"ransom note {src.name}")
            elif base is not None and entropy > _HIGH_ENTROPY and base[1] < _HIGH_ENTROPY - 1:
                watch.signals.append(f"high-entropy rewrite of {rel} ({entropy:.2f} bits/byte)")
        if not changed:
            return
        if not watch.first_change_ns:
            watch.first_change_ns = at
        watch.last_change_ns = at
        watch.changed[rel] = at / 1e9
        recent = [t for t in watch.changed.values() if at / 1e9 - t <= self.window_s]
        if len(recent) >= self.burst:
            watch.signals.append(f"{len(recent)} files changed within {self.window_s:g} s")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                at, event = self._inbox.get(timeout=0.1)
            except queue.Empty:
                self._on_quiet()
                continue
            src = Path(os.fsdecode(event.src_path))
            found = self._watch_for(src)
            if found is None:
                continue
            watch = found[0]
            try:
                self._classify(watch, event, at)
            except OSError:
                continue
            if watch.signals and not watch.detected:
                self._detect(watch)
            elif watch.changed and not watch.tampered_reported and not watch.signals:
                watch.tampered_reported = True
                self.vault.events.emit(
                    ek.VAULT_GUARD_TAMPERED,
                    watch.protected.name,
                    dir=str(watch.protected.directory),
                    files=sorted(watch.changed)[:20],
                    detect_ms=round((time.monotonic_ns() - watch.first_change_ns) / 1e6, 1),
                )

    def _detect(self, watch: _Watch) -> None:
        watch.detected = True
        if self.freeze:
            self._freeze(watch)
        now = time.monotonic_ns()
        incident: dict[str, Any] = {
            "dir": str(watch.protected.directory),
            "name": watch.protected.name,
            "signals": watch.signals[:10],
            "detect_ms": round((now - watch.first_change_ns) / 1e6, 1),
            "files_changed_at_detection": len(watch.changed),
            "frozen": bool(watch.frozen),
        }
        self.incidents.append(incident)
        self.vault.events.emit(ek.VAULT_GUARD_RANSOMWARE, watch.protected.name, **incident)

    def _on_quiet(self) -> None:
        now = time.monotonic_ns()
        for watch in self._watches:
            if not watch.changed or now - watch.last_change_ns < self.settle_s * 1e9:
                continue
            if self.restore:
                self._restore(watch)
            else:
                watch.changed.clear()

    # ------------------------------------------------------------- freeze/restore

    def _freeze(self, watch: _Watch) -> None:
        root = watch.protected.directory
        dirs = [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]
        # Only write bits are taken away: a freeze must not make a private file readable
        # by others (0600 stays 0400, never 0444).
        for directory in dirs:  # directories first: no more renames or new files
            with contextlib.suppress(OSError):
                mode = directory.stat().st_mode & 0o7777
                watch.frozen[directory] = mode
                directory.chmod(mode & ~0o222)
                _set_immutable(directory, True)
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                with contextlib.suppress(OSError):
                    mode = path.stat().st_mode & 0o7777
                    watch.frozen[path] = mode
                    path.chmod(mode & ~0o222)
                    _set_immutable(path, True)

    def _unfreeze(self, watch: _Watch) -> None:
        for path, mode in sorted(
            watch.frozen.items(), key=lambda kv: len(kv[0].parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                _set_immutable(path, False)
                path.chmod(mode)
        watch.frozen.clear()

    def _damage(self, watch: _Watch) -> int:
        current = _dir_files(watch.protected.directory)
        damaged = 0
        for rel in watch.baseline:
            path = current.get(rel)
            if path is None or self._content_changed(watch, rel, path)[0]:
                damaged += 1
        return damaged

    def _restore(self, watch: _Watch) -> None:
        started = time.monotonic_ns()
        damaged = self._damage(watch)
        self._unfreeze(watch)
        root = watch.protected.directory
        self.vault.restore(watch.snapshot, root, clean=True)
        with contextlib.suppress(OSError):
            (root / CANARY).write_text("bastion canary: do not touch\n")
        identical = self._damage(watch) == 0
        # Drain what our own restore generated, so it is not taken for a new attack.
        time.sleep(0.2)  # inotify delivers asynchronously; this only ages out our own events
        with contextlib.suppress(queue.Empty):
            while True:
                self._inbox.get_nowait()
        self.vault.events.emit(
            ek.VAULT_GUARD_RESTORED,
            watch.protected.name,
            dir=str(root),
            snapshot=watch.snapshot.ref,
            files_damaged=damaged,
            bit_identical=identical,
            restore_ms=round((time.monotonic_ns() - started) / 1e6, 1),
            signals=watch.signals[:10],
        )
        watch.changed.clear()
        watch.signals.clear()
        watch.detected = False
        watch.tampered_reported = False
        watch.first_change_ns = 0
