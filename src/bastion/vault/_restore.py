"""Restore: a snapshot's files written back under a directory, bit-identical and verified.

Owns: where each file of a snapshot lands under the destination (never outside it, even
through a symlinked directory), writing files so that a failed restore leaves an
existing file as it was, ``clean`` (removing what the snapshot lacks: a ransom note,
``*.locked`` copies), and the ``vault.restored`` event.

Must never: write a byte that did not verify (every chunk comes from ``Vault.fetch``,
which reads through the replica set), follow a symlink out of the destination, leave
a half-written file under a name the snapshot gives, or (``empty_only``, the CLI's
default) write into a directory that holds anything: ``vault restore x /`` must not
overwrite a system without being told to (``--force``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.errors import BastionError, IntegrityError, UsageError
from bastion.store import umask
from bastion.vault._snapshot import Snapshot, check_path
from bastion.vault._write import BATCH_BELOW, BATCH_BYTES, BATCH_COUNT

if TYPE_CHECKING:
    from bastion.vault._vault import Vault

__all__ = ["require_empty", "restore"]

# Threads for restore (file creation waits on the disk).
_WORKERS = max(4, 2 * (os.cpu_count() or 2))


def _targets(snap: Snapshot, root: Path, dest: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Each file's target path, and each directory's, every one inside ``root``.

    Each directory is resolved once (not each file): a symlinked directory inside dest
    must not lead a file outside it. A file that is itself a symlink is replaced by the
    restored file (rename), never written through.
    """
    parents: dict[str, Path] = {"": root}
    targets: dict[str, Path] = {}
    for path in snap.files:
        head, _, tail = check_path(path).rpartition("/")
        parent = parents.get(head)
        if parent is None:
            parent = (root / head).resolve()
            if not parent.is_relative_to(root):
                raise IntegrityError(f"{snap.ref}: file {path!r} would escape {dest}")
            parents[head] = parent
        targets[path] = parent / tail
    return targets, parents


def _clean(root: Path, keep: set[Path]) -> None:
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for filename in filenames:
            path = Path(dirpath) / filename
            if path not in keep:
                path.unlink()
        for dirname in dirnames:
            path = Path(dirpath) / dirname
            if not any(k.is_relative_to(path) for k in keep):
                with contextlib.suppress(OSError):
                    path.rmdir()


def require_empty(snap: Snapshot, dest: Path) -> None:
    """``UsageError`` (nothing written) unless ``dest`` is missing or an empty directory."""
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UsageError(f"restore {snap.ref}: {dest} is a file, not a directory")
    found = sorted(entry.name for entry in os.scandir(dest))
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise UsageError(
            f"restore {snap.ref}: {dest} is not empty ({len(found)} entries: {shown}); "
            "restoring would overwrite what is there. Give a new or empty directory, or "
            "pass --force to restore into it anyway (--clean also removes what the "
            "snapshot lacks); nothing was written"
        )


def _batches(snap: Snapshot) -> list[list[str]]:
    """Small files in batches, as on the write path; each big one alone."""
    batches: list[list[str]] = []
    batch: list[str] = []
    batch_bytes = 0
    for path in sorted(snap.files):
        size = snap.files[path].size
        if size >= BATCH_BELOW:
            batches.append([path])
            continue
        batch.append(path)
        batch_bytes += size
        if len(batch) >= BATCH_COUNT or batch_bytes >= BATCH_BYTES:
            batches.append(batch)
            batch, batch_bytes = [], 0
    if batch:
        batches.append(batch)
    return batches


class _FileRestorer:
    def __init__(
        self,
        vault: Vault,
        snap: Snapshot,
        targets: dict[str, Path],
        progress: Callable[[int], None] | None,
    ) -> None:
        self.vault = vault
        self.snap = snap
        self.targets = targets
        self.progress = progress
        self.umask = umask()
        self.failed: list[tuple[str, Exception]] = []
        self._lock = threading.Lock()

    def _open(self, path: str) -> tuple[int, Path | None, bool]:
        """A descriptor to write ``path`` into, the temporary name it has (None: its
        own), and whether its mode must still be set."""
        entry = self.snap.files[path]
        target = self.targets[path]
        try:
            # A new file is written in place: nothing to replace, and a failure removes
            # it. An existing one is replaced whole by a rename, so a failed restore
            # leaves it as it was.
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, entry.mode)
        except FileExistsError:
            if target.is_dir() and not target.is_symlink():
                raise IntegrityError(f"restore: {target} is a directory; remove it first") from None
            tmp = target.with_name(f".{target.name}.bastion-restore")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            return fd, tmp, True
        # a new file already has its mode unless the umask took bits
        return fd, None, entry.mode & self.umask != 0

    def file(self, path: str) -> int:
        entry = self.snap.files[path]
        fd, tmp, chmod = self._open(path)
        try:
            for chunk in entry.chunks:
                data = self.vault.fetch(chunk.id, context=f"{self.snap.ref}:{path}")
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                if self.progress is not None:
                    self.progress(len(data))
            if chmod:
                os.fchmod(fd, entry.mode)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                (tmp or self.targets[path]).unlink()
            raise
        os.close(fd)
        if tmp is not None:
            try:
                tmp.replace(self.targets[path])
            except BaseException:
                # the target could not be replaced (immutable, a directory's lock): leave
                # it as it was, and nothing of ours behind
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
        return entry.size

    def batch(self, paths: list[str]) -> int:
        # one file that cannot be written (a directory in its place, an immutable file)
        # must not stop the others: each is tried, and every failure is said at the end
        total = 0
        for path in paths:
            try:
                total += self.file(path)
            except (OSError, BastionError) as exc:
                with self._lock:
                    self.failed.append((path, exc))
        return total

    def raise_failures(self) -> None:
        """Raise the first failure (its own type), naming every file not restored."""
        if not self.failed:
            return
        failed = sorted(self.failed, key=lambda item: item[0])
        first = failed[0][1]
        first.add_note(
            f"restore {self.snap.ref}: {len(failed)} files not restored: "
            + ", ".join(path for path, _ in failed[:20])
            + (", ..." if len(failed) > 20 else "")
        )
        raise first


def restore(
    vault: Vault,
    snap: Snapshot,
    dest: Path,
    *,
    progress: Callable[[int], None] | None = None,
    clean: bool = False,
    empty_only: bool = False,
) -> Snapshot:
    """Write ``snap``'s files under ``dest`` (see ``Vault.restore``)."""
    started = time.perf_counter()
    dest = Path(dest)
    if empty_only:
        require_empty(snap, dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    targets, parents = _targets(snap, root, dest)
    if clean:
        _clean(root, set(targets.values()))
    for parent in parents.values():
        parent.mkdir(parents=True, exist_ok=True)
    restorer = _FileRestorer(vault, snap, targets, progress)
    batches = _batches(snap)
    if len(batches) <= 1:
        # one batch (a stage's few small inputs): a pool would only add its threads'
        # start and a hand-off to the same work, one file after another
        total = sum(restorer.batch(batch) for batch in batches)
    else:
        with ThreadPoolExecutor(_WORKERS, thread_name_prefix="vault-restore") as pool:
            total = sum(pool.map(restorer.batch, batches))
    restorer.raise_failures()
    vault.events.emit(
        ek.VAULT_RESTORED,
        snap.name,
        ref=snap.ref,
        snapshot=snap.id,
        dest=str(dest),
        files=len(snap.files),
        bytes=total,
        seconds=round(time.perf_counter() - started, 6),
    )
    return snap
