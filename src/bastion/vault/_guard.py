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
import stat
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer

from bastion import event_kinds as ek
from bastion.errors import BastionError, NotFoundError, UsageError
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
    "freeze_tree",
    "load_protected",
    "protect",
    "snapshot_dir",
    "unfreeze_tree",
]

_GETFLAGS, _SETFLAGS, _IMMUTABLE = 0x80086601, 0x40086602, 0x10
_NOTE = re.compile(r"(readme|restore|decrypt|ransom|how[_-]?to|recover).*\.(txt|html?|md)$", re.I)
CANARY = ".bastion-canary"
_CANARY_TEXT = b"bastion canary: do not touch\n"
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


def freeze_tree(root: Path, frozen: dict[Path, int]) -> None:
    """Take the write bits off ``root`` and everything under it (and set the immutable
    flag where we may), recording each path's mode before in ``frozen`` (a path already
    there keeps its first mode). ``unfreeze_tree(frozen)`` puts them back. Shared by the
    guard and segment quarantine (``bastion.segment``)."""
    dirs = [root, *(p for p in root.rglob("*") if p.is_dir() and not p.is_symlink())]
    # Only write bits are taken away: a freeze must not make a private file readable
    # by others (0600 stays 0400, never 0444).
    for directory in dirs:  # directories first: no more renames or new files
        with contextlib.suppress(OSError):
            mode = directory.stat().st_mode & 0o7777
            frozen.setdefault(directory, mode)
            directory.chmod(mode & ~0o222)
            _set_immutable(directory, True)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                mode = path.stat().st_mode & 0o7777
                frozen.setdefault(path, mode)
                path.chmod(mode & ~0o222)
                _set_immutable(path, True)


def unfreeze_tree(frozen: dict[Path, int]) -> None:
    """Undo ``freeze_tree``: each recorded path's mode back, deepest first; ``frozen``
    is emptied."""
    for path, mode in sorted(frozen.items(), key=lambda kv: len(kv[0].parts), reverse=True):
        with contextlib.suppress(OSError):
            _set_immutable(path, False)
            path.chmod(mode)
    frozen.clear()


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
    (directory / CANARY).write_bytes(_CANARY_TEXT)
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
    """What a running guard watches, and where it stands.

    Attributes:
        dirs: protected directories being watched.
        incidents: ransomware detections since it started.
        frozen: directories frozen now (read-only until restored).
        tampered: files that differ from their snapshot now, as the guard last saw them
            (changed, deleted, or added), over every directory.
        pending: changed files not yet put back (with ``restore``) or settled (without).
        restores: restore passes run (a restore that needed three rounds counts three).
        unrestored: files the last restore could not put back (0 when it was whole).
        scans: sweeps of the protected trees (the first at start, then every
            ``rescan_s``, and after each restore).
    """

    dirs: int
    incidents: int
    frozen: int
    tampered: int = 0
    pending: int = 0
    restores: int = 0
    unrestored: int = 0
    scans: int = 0


# A file's state as ``lstat`` gives it: what changes when anyone writes, renames or
# replaces it. ctime is in it because no one can set it back (touch -r restores mtime).
_Stat = tuple[int, int, int, int, int]
_MISSING: _Stat = (0, 0, 0, 0, 0)


def _stat_of(path: Path) -> _Stat | None:
    try:
        st = os.lstat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_mode)


@dataclass
class _Watch:
    protected: Protected
    snapshot: Snapshot
    baseline: dict[str, tuple[tuple[str, ...], float]]  # path -> (chunk ids, entropy)
    seen: dict[str, _Stat | None] = field(default_factory=dict)  # state at last look
    tampered: dict[str, str] = field(default_factory=dict)  # path -> how it differs
    pending: dict[str, int] = field(default_factory=dict)  # path -> mono ns, not yet put back
    recent: dict[str, int] = field(default_factory=dict)  # path -> mono ns (the burst rule)
    unreported: set[str] = field(default_factory=set)  # newly tampered, not yet in an event
    first_change_ns: int = 0
    last_change_ns: int = 0
    signals: list[str] = field(default_factory=list)
    detected: bool = False
    frozen: dict[Path, int] = field(default_factory=dict)
    unrestored: int = 0


class _Handler(FileSystemEventHandler):
    def __init__(self, inbox: queue.Queue[tuple[int, FileSystemEvent]]) -> None:
        self.inbox = inbox

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):
            self.inbox.put((time.monotonic_ns(), event))


class Guard:
    """Watch every protected directory of ``vault``; ``restore``: put back after an attack.

    What it compares is the tree against its snapshot, never the events alone: an inotify
    event only says where to look, and the guard looks at what is on disk when it gets
    to it (so a change undone before it looks, such as its own restore, is no change,
    and events that arrive late or out of order cannot mislead it). ``rescan_s``: how
    often every file is looked at again by its ``lstat`` (content hashed only where that
    changed), which catches what inotify cannot report: a write through a hard link from
    outside the tree, events lost to a full inotify queue, changes made while the guard
    was not running (the first sweep, at start).

    ``settle_s``: changes are put back (``restore``) once none came for this long, or
    ``max_wait_s`` after the first, whichever is sooner (an attacker writing without
    pause cannot postpone the restore). A restore is checked against the snapshot and
    repeated, up to ``max_rounds`` rounds, until the tree is identical; what it could not
    put back is named in ``vault.guard.restored`` and ``vault.guard.restore_failed``.
    Without ``restore``, every tampered file is named in ``vault.guard.tampered`` events
    as it is found, however slowly they come.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        restore: bool = False,
        freeze: bool = True,
        window_s: float = 2.0,
        burst: int = 5,
        settle_s: float = 0.5,
        max_wait_s: float = 5.0,
        rescan_s: float = 5.0,
        max_rounds: int = 5,
    ) -> None:
        self.vault = vault
        self.restore = restore
        self.freeze = freeze
        self.window_s = window_s
        self.burst = burst
        self.settle_s = settle_s
        self.max_wait_s = max_wait_s
        self.rescan_s = rescan_s
        self.max_rounds = max_rounds
        self._inbox: queue.Queue[tuple[int, FileSystemEvent]] = queue.Queue()
        self._watches: list[_Watch] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._observer: Any = None
        self._last_scan_ns = 0
        self._scans = 0
        self._restores = 0
        self.incidents: list[dict[str, Any]] = []

    def _baseline(self, protected: Protected) -> _Watch:
        snap = self.vault.snapshot(protected.name)
        base: dict[str, tuple[tuple[str, ...], float]] = {}
        for path, entry in snap.files.items():
            data = self.vault.read(snap, path)
            base[path] = (tuple(c.id for c in entry.chunks), _entropy(data[: 64 << 10]))
        return _Watch(protected, snap, base)

    def start(self) -> None:
        """Load each directory's snapshot, start watching, and sweep every tree once
        (a change made before the watch began is found here); then return."""
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
        self.vault.events.emit(
            ek.VAULT_GUARD_STARTED,
            self.vault.subject,
            dirs=[str(w.protected.directory) for w in self._watches],
        )
        self._scan_all(time.monotonic_ns(), full=True)
        self._flush()
        self._thread = threading.Thread(target=self._loop, name="vault-guard", daemon=True)
        self._thread.start()

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
        watches = list(self._watches)
        return GuardStatistics(
            dirs=len(watches),
            incidents=len(self.incidents),
            frozen=sum(1 for w in watches if w.frozen),
            tampered=sum(len(w.tampered) for w in watches),
            pending=sum(len(w.pending) for w in watches),
            restores=self._restores,
            unrestored=sum(w.unrestored for w in watches),
            scans=self._scans,
        )

    # ------------------------------------------------------------------ detection

    def _watch_for(self, path: Path) -> tuple[_Watch, str] | None:
        for watch in self._watches:
            root = watch.protected.directory
            if path.is_relative_to(root):
                return watch, path.relative_to(root).as_posix()
        return None

    def _difference(self, watch: _Watch, rel: str, state: _Stat | None) -> tuple[str | None, float]:
        """How ``rel`` differs from the snapshot now (None: it does not), and its entropy."""
        base = watch.baseline.get(rel)
        if rel == CANARY:
            if state is None:
                return "canary deleted", 0.0
            path = watch.protected.directory / rel
            try:
                same = path.read_bytes() == _CANARY_TEXT
            except OSError:
                same = False
            return (None if same else "canary changed"), 0.0
        if state is None:
            return ("deleted" if base is not None else None), 0.0
        if stat.S_ISDIR(state[4]):
            return ("replaced by a directory" if base is not None else None), 0.0
        if base is None:
            return "added", 0.0
        if not stat.S_ISREG(state[4]):
            return "replaced by a link or device", 0.0
        try:
            data = (watch.protected.directory / rel).read_bytes()
        except OSError as exc:
            return f"unreadable ({exc.strerror})", 0.0
        ids = tuple(
            hash_bytes(memoryview(data)[o : o + n]) for o, n in boundaries(memoryview(data))
        )
        return (None if ids == base[0] else "modified"), _entropy(data[: 64 << 10])

    def _look(self, watch: _Watch, rel: str, at: int, kind: str, *, force: bool = False) -> None:
        """Compare ``rel`` with the snapshot now and record what changed: a path whose
        state is as the guard last saw it is skipped unless ``force``."""
        state = _stat_of(watch.protected.directory / rel)
        before = watch.seen.get(rel, _MISSING)
        if not force and state == before and rel in watch.seen:
            return
        watch.seen[rel] = state
        problem, entropy = self._difference(watch, rel, state)
        known = watch.tampered.get(rel)
        if problem is None:
            # as in the snapshot: the guard's own restore, or a change undone
            watch.tampered.pop(rel, None)
            watch.pending.pop(rel, None)
            if state is None and rel not in watch.baseline:
                del watch.seen[rel]  # a file that came and went: nothing to look at again
            return
        if known is not None and state == before:
            return  # already known as it is
        watch.tampered[rel] = problem
        if known is None:
            watch.unreported.add(rel)
        if not watch.first_change_ns:
            watch.first_change_ns = at
        watch.last_change_ns = at
        watch.pending[rel] = at
        watch.recent[rel] = at
        base = watch.baseline.get(rel)
        if rel == CANARY:
            watch.signals.append(f"{problem} ({kind})")
        elif problem == "added" and _NOTE.search(rel.rsplit("/", 1)[-1]):
            watch.signals.append(f"ransom note {rel}")
        elif (
            problem == "modified"
            and base is not None
            and entropy > _HIGH_ENTROPY
            and base[1] < _HIGH_ENTROPY - 1
        ):
            watch.signals.append(f"high-entropy rewrite of {rel} ({entropy:.2f} bits/byte)")
        window_ns = self.window_s * 1e9
        for path, when in list(watch.recent.items()):
            if at - when > window_ns:
                del watch.recent[path]
        if len(watch.recent) >= self.burst:
            watch.signals.append(f"{len(watch.recent)} files changed within {self.window_s:g} s")

    def _on_event(self, at: int, event: FileSystemEvent) -> None:
        src = Path(os.fsdecode(event.src_path))
        found = self._watch_for(src)
        if found is None:
            return
        watch, rel = found
        if event.is_directory:
            # a directory moved, made or removed: every file under it may have changed
            # (watchdog does not always report each one), so the next tick sweeps
            self._last_scan_ns = 0
            return
        rels = [rel]
        if event.event_type == "moved":
            dest = Path(os.fsdecode(event.dest_path))
            moved = self._watch_for(dest)
            if moved is not None and moved[0] is watch:
                rels.append(moved[1])
            if (
                dest.suffix != src.suffix
                and rel in watch.baseline
                and not src.name.endswith(".bastion-restore")
            ):
                watch.signals.append(f"extension change {src.name} -> {dest.name}")
        for path in rels:
            try:
                self._look(watch, path, at, event.event_type)
            except OSError:
                continue
        if watch.signals and not watch.detected:
            self._detect(watch)

    def _scan(self, watch: _Watch, at: int, *, full: bool) -> None:
        """Look at every file of the tree (and every file the snapshot has): by ``lstat``,
        its content only where that changed, or every content with ``full``."""
        root = watch.protected.directory
        found: set[str] = set()
        for dirpath, dirnames, filenames in os.walk(root):
            base = Path(dirpath)
            found.update(
                (base / name).relative_to(root).as_posix()
                for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]
            )
        for rel in sorted(found | set(watch.baseline) | set(watch.seen) | {CANARY}):
            try:
                self._look(watch, rel, at, "scan", force=full)
            except OSError:
                continue
        if watch.signals and not watch.detected:
            self._detect(watch)

    def _scan_all(self, at: int, *, full: bool = False) -> None:
        for watch in self._watches:
            self._scan(watch, at, full=full)
        self._scans += 1
        self._last_scan_ns = time.monotonic_ns()

    def _flush(self) -> None:
        """Name every newly tampered file in ``vault.guard.tampered`` (in events of at
        most 500 files each)."""
        now = time.monotonic_ns()
        for watch in self._watches:
            if not watch.unreported:
                continue
            new = sorted(watch.unreported)
            watch.unreported.clear()
            for at in range(0, len(new), 500):
                self.vault.events.emit(
                    ek.VAULT_GUARD_TAMPERED,
                    watch.protected.name,
                    dir=str(watch.protected.directory),
                    files=new[at : at + 500],
                    how={rel: watch.tampered.get(rel, "put back") for rel in new[at : at + 500]},
                    tampered=len(watch.tampered),
                    detect_ms=round((now - watch.first_change_ns) / 1e6, 1),
                )

    def _loop(self) -> None:
        next_tick = 0
        while not self._stop.is_set():
            try:
                at, event = self._inbox.get(timeout=0.05)
            except queue.Empty:
                event = None
            if event is not None:
                with contextlib.suppress(OSError):
                    self._on_event(at, event)
            now = time.monotonic_ns()
            if event is None or self._inbox.empty() or now >= next_tick:
                self._flush()
            if now >= next_tick:
                self._tick(now)
                next_tick = now + 100_000_000

    def _tick(self, now: int) -> None:
        """Sweep when it is time, then settle what is due (restore, or let go)."""
        if now - self._last_scan_ns >= self.rescan_s * 1e9:
            self._scan_all(now)
            self._flush()
        for watch in self._watches:
            if not watch.pending:
                continue
            quiet = now - watch.last_change_ns >= self.settle_s * 1e9
            overdue = bool(watch.first_change_ns) and (
                now - watch.first_change_ns >= self.max_wait_s * 1e9
            )
            if not (quiet or overdue):
                continue
            if self.restore and (watch.tampered or watch.detected):
                self._restore(watch)
                self._flush()
            else:
                # reported as found; they stay tampered (and frozen, after an attack)
                watch.pending.clear()
                watch.first_change_ns = 0

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
            "files_changed_at_detection": len(watch.tampered),
            "frozen": bool(watch.frozen),
        }
        self.incidents.append(incident)
        self.vault.events.emit(ek.VAULT_GUARD_RANSOMWARE, watch.protected.name, **incident)

    # ------------------------------------------------------------- freeze/restore

    def _freeze(self, watch: _Watch) -> None:
        freeze_tree(watch.protected.directory, watch.frozen)

    def _unfreeze(self, watch: _Watch) -> None:
        unfreeze_tree(watch.frozen)

    def _refresh(self, watch: _Watch) -> None:
        """Take a snapshot recorded since the guard started (``bastion vault snapshot``:
        a legitimate change) as the tree's good state, so it is not undone."""
        with contextlib.suppress(BastionError):
            latest = self.vault.snapshot(watch.protected.name)
            if latest.id != watch.snapshot.id:
                fresh = self._baseline(watch.protected)
                watch.snapshot, watch.baseline = fresh.snapshot, fresh.baseline
                self._scan(watch, time.monotonic_ns(), full=True)

    def _restore(self, watch: _Watch) -> None:
        """Put the tree back and look again, round after round, until it is the snapshot
        or ``max_rounds`` rounds are spent; then say what was done and what was not."""
        started = time.monotonic_ns()
        self._refresh(watch)
        damaged = sorted(r for r in watch.tampered if r in watch.baseline)
        added = sorted(r for r in watch.tampered if r not in watch.baseline and r != CANARY)
        root = watch.protected.directory
        rounds = 0
        errors: list[str] = []
        while (watch.tampered or (watch.detected and rounds == 0)) and rounds < self.max_rounds:
            rounds += 1
            self._restores += 1
            self._unfreeze(watch)
            try:
                self.vault.restore(watch.snapshot, root, clean=True)
            except (BastionError, OSError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
            if self._difference(watch, CANARY, _stat_of(root / CANARY))[0] is not None:
                with contextlib.suppress(OSError):
                    (root / CANARY).write_bytes(_CANARY_TEXT)
            # what is on disk now, every file hashed: a write that landed during the
            # restore (or after the file was put back) is found here, not lost
            self._scan(watch, time.monotonic_ns(), full=True)
        left = sorted(watch.tampered)
        identical = not left
        outcome: dict[str, Any] = {
            "dir": str(root),
            "snapshot": watch.snapshot.ref,
            "files_damaged": len(damaged),
            "files": damaged,
            "files_added": added,
            "bit_identical": identical,
            "rounds": rounds,
            "files_not_restored": left,
            "restore_ms": round((time.monotonic_ns() - started) / 1e6, 1),
            "signals": watch.signals[:10],
        }
        if errors:
            outcome["errors"] = errors[-3:]
        self.vault.events.emit(ek.VAULT_GUARD_RESTORED, watch.protected.name, **outcome)
        watch.pending.clear()
        watch.recent.clear()
        watch.first_change_ns = 0
        watch.unrestored = len(left)
        if identical:
            watch.signals.clear()
            watch.detected = False
            return
        self.vault.events.emit(
            ek.VAULT_GUARD_RESTORE_FAILED,
            watch.protected.name,
            dir=str(root),
            snapshot=watch.snapshot.ref,
            files=left,
            how={rel: watch.tampered[rel] for rel in left},
            rounds=rounds,
            errors=errors[-3:],
        )
        if watch.detected and self.freeze:
            self._freeze(watch)  # the attack may still be running: hold what is left
