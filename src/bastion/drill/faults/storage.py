"""Storage faults: flip bytes, truncate, delete, fill, make read-only, slow reads.

Owns: damaging real files on disk, and keeping exactly what is needed to undo it (the
original bytes at flipped offsets, a truncated tail, a deleted file moved aside, the
original modes). Every path is checked against the ``Scope`` before anything changes,
and each fault has a blast-radius limit (``max_files`` / ``max_bytes``).

Must never: touch a path outside the scope; follow a symlink out of it (paths are
resolved first); fill a filesystem that has more free space than ``max_bytes`` (a
"fill" is meant for a size-limited location, not the machine's disk).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import stat
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.drill.faults._base import Fault
from bastion.errors import NotFoundError, UsageError

if TYPE_CHECKING:
    from bastion.drill.faults.scope import Scope
    from bastion.events import Emit

__all__ = ["DeleteFiles", "FillDisk", "FlipBytes", "MakeReadOnly", "SlowReads", "TruncateFile"]


def _files(
    scope: Scope, targets: list[str | Path] | str | Path, fault: str, limit: int
) -> list[Path]:
    """Resolve and scope-check ``targets``; a directory means every regular file under it."""
    items = [targets] if isinstance(targets, str | Path) else list(targets)
    out: list[Path] = []
    for item in items:
        path = scope.check_path(item, fault=fault)
        if path.is_dir():
            out.extend(sorted(p for p in path.rglob("*") if p.is_file() and not p.is_symlink()))
        elif path.is_file():
            out.append(path)
        else:
            raise NotFoundError(f"{fault}: {path} does not exist; point the fault at a file")
    for path in out:
        scope.check_path(path, fault=fault)
    if len(out) > limit:
        raise UsageError(
            f"{fault}: {len(out)} files match but the blast radius allows {limit}; "
            "raise max_files or name fewer files"
        )
    return out


class FlipBytes(Fault):
    """Flip ``count`` random bytes in each target file (XOR 0xFF); revert writes them back."""

    kind = "storage.flip_bytes"

    def __init__(
        self,
        targets: list[str | Path] | str | Path,
        *,
        scope: Scope,
        count: int = 1,
        seed: int | None = None,
        max_files: int = 1,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.paths = _files(scope, targets, self.kind, max_files)
        self.count = count
        self.rng = random.Random(seed)
        self._saved: dict[Path, list[tuple[int, int]]] = {}
        self._mtimes: dict[Path, tuple[int, int]] = {}

    def describe(self) -> dict[str, Any]:
        return {"paths": [str(p) for p in self.paths], "count": self.count}

    def _inject(self) -> dict[str, Any]:
        flipped = 0
        for path in self.paths:
            size = path.stat().st_size
            if size == 0:
                continue
            st = path.stat()
            self._mtimes[path] = (st.st_atime_ns, st.st_mtime_ns)
            offsets = self.rng.sample(range(size), min(self.count, size))
            saved = []
            with path.open("r+b") as fh:
                for off in offsets:
                    fh.seek(off)
                    old = fh.read(1)[0]
                    fh.seek(off)
                    fh.write(bytes([old ^ 0xFF]))
                    saved.append((off, old))
                fh.flush()
                os.fsync(fh.fileno())
            self._saved[path] = saved
            flipped += len(saved)
        return {"flipped": flipped}

    def _revert(self) -> dict[str, Any]:
        for path, saved in self._saved.items():
            with path.open("r+b") as fh:
                for off, old in saved:
                    fh.seek(off)
                    fh.write(bytes([old]))
            os.utime(path, ns=self._mtimes[path])
        restored = sum(len(s) for s in self._saved.values())
        self._saved.clear()
        return {"restored": restored}


class TruncateFile(Fault):
    """Cut each target to ``keep_fraction`` of its size; revert appends the saved tail."""

    kind = "storage.truncate"

    def __init__(
        self,
        targets: list[str | Path] | str | Path,
        *,
        scope: Scope,
        keep_fraction: float = 0.5,
        max_files: int = 1,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        if not 0.0 <= keep_fraction < 1.0:
            raise UsageError(f"{self.kind}: keep_fraction {keep_fraction} must be in [0, 1)")
        self.paths = _files(scope, targets, self.kind, max_files)
        self.keep_fraction = keep_fraction
        self._tails: dict[Path, tuple[int, bytes, tuple[int, int]]] = {}

    def describe(self) -> dict[str, Any]:
        return {"paths": [str(p) for p in self.paths], "keep_fraction": self.keep_fraction}

    def _inject(self) -> dict[str, Any]:
        cut = 0
        for path in self.paths:
            st = path.stat()
            keep = int(st.st_size * self.keep_fraction)
            with path.open("r+b") as fh:
                fh.seek(keep)
                tail = fh.read()
                fh.truncate(keep)
            self._tails[path] = (keep, tail, (st.st_atime_ns, st.st_mtime_ns))
            cut += len(tail)
        return {"bytes_cut": cut}

    def _revert(self) -> dict[str, Any]:
        for path, (keep, tail, times) in self._tails.items():
            with path.open("r+b") as fh:
                fh.truncate(keep)
                fh.seek(keep)
                fh.write(tail)
            os.utime(path, ns=times)
        self._tails.clear()
        return {}


class DeleteFiles(Fault):
    """Delete the targets (files or whole directories); revert puts them back.

    The "deleted" entries are moved to a private stash directory (same filesystem when
    possible, so it is a rename), which keeps modes and times and costs no copy.
    """

    kind = "storage.delete"

    def __init__(
        self,
        targets: list[str | Path] | str | Path,
        *,
        scope: Scope,
        max_files: int = 1,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        items = [targets] if isinstance(targets, str | Path) else list(targets)
        self.paths = [scope.check_path(p, fault=self.kind) for p in items]
        files = 0
        for path in self.paths:
            if not path.exists():
                raise NotFoundError(f"{self.kind}: {path} does not exist; nothing to delete")
            files += sum(1 for p in path.rglob("*") if p.is_file()) if path.is_dir() else 1
        if files > max_files:
            raise UsageError(
                f"{self.kind}: {files} files would be deleted but the blast radius allows "
                f"{max_files}; raise max_files or name fewer paths"
            )
        self.files = files
        self._stash: Path | None = None
        self._moved: list[tuple[Path, Path]] = []

    def describe(self) -> dict[str, Any]:
        return {"paths": [str(p) for p in self.paths], "files": self.files}

    def _inject(self) -> dict[str, Any]:
        # Stash next to the first target's parent so the move is a rename, not a copy.
        parent = self.paths[0].parent
        try:
            self._stash = Path(tempfile.mkdtemp(prefix=".bastion-deleted-", dir=parent.parent))
        except OSError:
            self._stash = Path(tempfile.mkdtemp(prefix="bastion-deleted-"))
        for i, path in enumerate(self.paths):
            aside = self._stash / f"{i}-{path.name}"
            shutil.move(str(path), str(aside))
            self._moved.append((path, aside))
        return {"deleted": self.files}

    def _revert(self) -> dict[str, Any]:
        for path, aside in self._moved:
            if path.exists():
                # Something recreated it meanwhile (a repair): keep the original bytes.
                if path.is_dir():
                    shutil.rmtree(path)
                else:
                    path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(aside), str(path))
        if self._stash is not None:
            shutil.rmtree(self._stash, ignore_errors=True)
        self._moved.clear()
        return {"restored": self.files}


class FillDisk(Fault):
    """Fill the filesystem under ``path`` until ``leave_bytes`` are free (ENOSPC follows).

    Meant for a size-limited location (a tmpfs, a quota'd volume): it refuses when more
    than ``max_bytes`` would have to be written. Revert deletes the ballast file.
    """

    kind = "storage.fill"

    def __init__(
        self,
        path: str | Path,
        *,
        scope: Scope,
        leave_bytes: int = 0,
        max_bytes: int = 256 * 1024 * 1024,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.path = scope.check_path(path, fault=self.kind)
        if not self.path.is_dir():
            raise NotFoundError(f"{self.kind}: {self.path} is not a directory to fill")
        self.leave_bytes = leave_bytes
        self.max_bytes = max_bytes
        self.ballast = self.path / ".bastion-ballast"
        self.written = 0

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "leave_bytes": self.leave_bytes}

    def _inject(self) -> dict[str, Any]:
        free = shutil.disk_usage(self.path).free
        need = free - self.leave_bytes
        if need > self.max_bytes:
            raise UsageError(
                f"{self.kind}: {self.path} has {free} bytes free; filling it would write "
                f"{need} bytes, over the blast radius max_bytes={self.max_bytes}. Point it "
                "at a size-limited location (a small tmpfs or volume) or raise max_bytes"
            )
        chunk = b"\0" * (1 << 20)
        # With leave_bytes 0, write until the kernel says ENOSPC: root may write into the
        # blocks a filesystem reserves for it, which "free" does not count.
        limit = self.max_bytes if self.leave_bytes == 0 else need
        full = False
        with self.ballast.open("wb", buffering=0) as fh:
            while self.written < limit:
                part = chunk[: min(len(chunk), limit - self.written)]
                try:
                    self.written += fh.write(part) or 0
                except OSError:
                    full = True  # ENOSPC: that is what was asked for
                    break
            with contextlib.suppress(OSError):
                os.fsync(fh.fileno())
        if self.leave_bytes == 0 and not full:
            self.ballast.unlink(missing_ok=True)
            raise UsageError(
                f"{self.kind}: wrote max_bytes={self.max_bytes} to {self.path} and it is still "
                "not full; point it at a size-limited location or raise max_bytes"
            )
        return {"written": self.written, "free_after": shutil.disk_usage(self.path).free}

    def _revert(self) -> dict[str, Any]:
        self.ballast.unlink(missing_ok=True)
        return {"freed": self.written}


class MakeReadOnly(Fault):
    """Make the targets read-only: clear every write bit, and, when running as root
    (which ignores modes), also set the immutable attribute with ``chattr +i`` if the
    kernel allows it. ``enforced`` says whether writes by this user now fail."""

    kind = "storage.read_only"

    def __init__(
        self,
        targets: list[str | Path] | str | Path,
        *,
        scope: Scope,
        max_files: int = 64,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        items = [targets] if isinstance(targets, str | Path) else list(targets)
        self.paths: list[Path] = []
        for item in items:
            path = scope.check_path(item, fault=self.kind)
            if not path.exists():
                raise NotFoundError(f"{self.kind}: {path} does not exist")
            self.paths.append(path)
            if path.is_dir():
                self.paths.extend(sorted(path.rglob("*")))
        if len(self.paths) > max_files:
            raise UsageError(
                f"{self.kind}: {len(self.paths)} entries but the blast radius allows "
                f"{max_files}; raise max_files"
            )
        self._modes: dict[Path, int] = {}
        self._immutable: list[Path] = []
        self.enforced = False

    def describe(self) -> dict[str, Any]:
        return {"paths": [str(p) for p in self.paths[:8]], "entries": len(self.paths)}

    def _inject(self) -> dict[str, Any]:
        for path in self.paths:
            mode = path.lstat().st_mode
            self._modes[path] = stat.S_IMODE(mode)
            os.chmod(path, stat.S_IMODE(mode) & ~0o222)  # noqa: PTH101 - keep the exact bits
        self.enforced = os.geteuid() != 0
        if not self.enforced and shutil.which("chattr"):
            # Children first would not matter for +i; parents last keeps the order simple.
            for path in self.paths:
                done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
                if done.returncode != 0:
                    break
                self._immutable.append(path)
            self.enforced = len(self._immutable) == len(self.paths)
        return {"enforced": self.enforced}

    def _revert(self) -> dict[str, Any]:
        for path in reversed(self._immutable):
            subprocess.run(["chattr", "-i", str(path)], capture_output=True, check=False)
        self._immutable.clear()
        for path, mode in self._modes.items():
            os.chmod(path, mode)  # noqa: PTH101
        self._modes.clear()
        return {}


class SlowReads(Fault):
    """Serve a file's bytes slowly: the file is swapped for a named pipe fed at
    ``bytes_per_s`` by a thread. Any process that opens and reads it sees slow I/O.

    Why a FIFO: without root-only tools (FUSE, dm-delay, cgroup io.max) this is the one
    way to slow real reads of a real path for any reader. Limits: sequential reads only
    (no seek), and one reader per open; after each reader the pipe re-arms.
    """

    kind = "storage.slow_reads"

    def __init__(
        self,
        path: str | Path,
        *,
        scope: Scope,
        bytes_per_s: int = 64 * 1024,
        events: Emit | None = None,
        subject: str = "",
    ) -> None:
        super().__init__(events=events, subject=subject)
        self.path = scope.check_path(path, fault=self.kind)
        if not self.path.is_file():
            raise NotFoundError(f"{self.kind}: {self.path} is not a file")
        if bytes_per_s <= 0:
            raise UsageError(f"{self.kind}: bytes_per_s must be positive, got {bytes_per_s}")
        self.bytes_per_s = bytes_per_s
        self._aside = self.path.with_name(f".{self.path.name}.bastion-slow")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.readers = 0

    def describe(self) -> dict[str, Any]:
        return {"path": str(self.path), "bytes_per_s": self.bytes_per_s}

    def _feed(self) -> None:
        data = self._aside.read_bytes()
        step = max(1, self.bytes_per_s // 20)
        while not self._stop.is_set():
            try:
                fd = os.open(self.path, os.O_WRONLY)  # blocks until a reader opens
            except OSError:
                return
            if self._stop.is_set():
                os.close(fd)
                return
            self.readers += 1
            try:
                for off in range(0, len(data), step):
                    os.write(fd, data[off : off + step])
                    if self._stop.wait(step / self.bytes_per_s):
                        break
            except BrokenPipeError:
                pass
            finally:
                # A fresh FIFO for the next reader, swapped in atomically *before* this
                # one sees EOF: otherwise the next open() could join this reader's pipe
                # and feed it the file twice.
                fresh = self.path.with_name(f".{self.path.name}.bastion-fifo")
                with contextlib.suppress(OSError):
                    os.mkfifo(fresh, 0o644)
                    fresh.replace(self.path)
                os.close(fd)

    def _inject(self) -> dict[str, Any]:
        self.path.replace(self._aside)
        os.mkfifo(self.path, 0o644)
        self._thread = threading.Thread(target=self._feed, name="bastion-slow-reads", daemon=True)
        self._thread.start()
        return {}

    def _revert(self) -> dict[str, Any]:
        self._stop.set()
        # Unblock a feeder waiting in open() by opening the read end once.
        with contextlib.suppress(OSError):
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
            os.close(fd)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.path.unlink(missing_ok=True)
        self._aside.replace(self.path)
        return {"readers": self.readers}
