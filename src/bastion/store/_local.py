"""A replica in a local directory (another disk, a NAS mount): the ``Store`` for paths.

Owns: the on-disk form of one replica: ``<root>/<key>`` files, read-only the moment they
are created, and ``<root>/tmp/`` for values being written. Who may read them is the
replica's access mode (``bastion.store._access``): by default the owner alone (0700
directories, 0400 values, 0600 lock files), whatever the umask and whatever the modes of
the files that were put in the vault.

Must never: expose a partial value (a value is written to an unnamed ``O_TMPFILE`` in its
key's directory, or to ``tmp/`` where that is unsupported, then hard-linked to its key,
so it appears whole or not at all, and an existing key is never replaced except by the
vault's repair path), or follow a key outside ``root``.

Why hard links rather than ``rename``: ``link`` fails when the key exists, which makes
"write once" atomic across processes without a lock; ``rename`` would silently replace.

``tmp/`` also holds the replica's named locks (``tmp/<name>.lock``, ``flock``): no key
can start with ``tmp/``, and ``cleanup`` removes only files named by a writer's pid.
"""

# The hot path creates one file per object per replica: plain str paths and os calls
# avoid building a Path per object, so the pathlib rules are off for this module.
# ruff: noqa: PTH101, PTH105, PTH108, PTH112, PTH113, PTH116, PTH118, PTH120

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import functools
import mmap
import os
import re
import secrets
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

from bastion.errors import InvalidNameError, NotFoundError, UnavailableError
from bastion.store._access import AccessMode, make_dirs, open_file, permissions, umask
from bastion.store._protocol import Buffer, StoreStatistics
from bastion.supervise import pid_alive

__all__ = ["LocalStore", "buffer_address", "write_direct"]

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]*(/[A-Za-z0-9_][A-Za-z0-9._@-]*)*$")
_TMP = "tmp"
# What a writer leaves in tmp/: "<pid>-<16 hex>.tmp" (and ".tmp.swap" while replacing).
_LEFTOVER = re.compile(r"^(\d+)-[0-9a-f]{16}\.tmp(\.swap)?$")
_LOCK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# Linux caps one write at 0x7ffff000 bytes; larger views are written in a loop.
_MAX_WRITE = 0x7FFFF000
# Values this big are written with O_DIRECT from a page-aligned buffer (see _put_direct).
_DIRECT_MIN = 1 << 20
_ALIGN = 4096  # O_DIRECT wants block-aligned addresses, offsets and lengths
_O_DIRECT = getattr(os, "O_DIRECT", 0)
_aligned = threading.local()


def _aligned_buffer(size: int) -> mmap.mmap:
    """This thread's reusable page-aligned buffer of at least ``size`` bytes.

    An anonymous mmap is page-aligned; reusing it per thread avoids a fresh allocation
    (page faults and zeroing) per object, which can cost more than the write itself.
    """
    buf: mmap.mmap | None = getattr(_aligned, "buf", None)
    if buf is None or len(buf) < size:
        if buf is not None:
            buf.close()
        buf = _aligned.buf = mmap.mmap(-1, max(size, 16 << 20) + _ALIGN)
    return buf


def buffer_address(view: memoryview) -> int | None:
    """Where a buffer's bytes start in memory, or None if Python cannot say (ctypes
    exposes only writable buffers; a ``bytes`` object or a read-only map is copied)."""
    if view.readonly:
        return None
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return None


def write_direct(fd: int, parts: Sequence[Buffer], size: int, *, durable: bool) -> int:
    """Write ``parts`` (``size`` bytes in all) to ``fd``, opened with O_DIRECT; return
    ``size``. OSError EINVAL: the filesystem refused O_DIRECT after all (write plainly).

    Big objects (checkpoint chunks, model weights) skip the page cache: the disk
    DMAs from memory, so there is no copy into the cache, no dirty-page throttling
    and no writeback left for the commit's ``syncfs`` (measured several times faster
    for the same bytes; see ``benchmarks/checkpoint.py``). O_DIRECT needs block-aligned memory,
    offsets and lengths: a part that starts page-aligned in memory at a block-aligned
    file offset (a chunk of the training's staging buffer behind a 4 KiB object
    header, see ``bastion.vault._objects``) is written straight from where it is;
    everything else (a one-byte header, a chunk cut anywhere, a tail) is copied into
    this thread's page-aligned buffer first. The last block is padded and cut off
    again with ``ftruncate``; the file's size and extents are metadata, made durable
    by the commit's ``syncfs`` or the fsync here.
    """
    buf = _aligned_buffer(min(size, 16 << 20) + _ALIGN)
    view = memoryview(buf)
    staged = 0  # bytes copied into buf, not written yet

    def flush(upto: int) -> None:
        # write buf[:upto] (upto is block-aligned), keep what follows at the front
        nonlocal staged
        done = 0
        while done < upto:
            done += os.write(fd, view[done : min(upto, done + _MAX_WRITE)])
        view[: staged - upto] = view[upto:staged]
        staged -= upto

    try:
        for part in parts:
            data = memoryview(part).cast("B")
            address = buffer_address(data) if len(data) >= _ALIGN else None
            if address is not None and address % _ALIGN == 0 and staged % _ALIGN == 0:
                flush(staged)
                whole = len(data) // _ALIGN * _ALIGN
                done = 0
                while done < whole:
                    done += os.write(fd, data[done : min(whole, done + _MAX_WRITE)])
                data = data[whole:]
            while data:
                room = len(view) - staged
                if room < _ALIGN:
                    flush(staged // _ALIGN * _ALIGN)
                    room = len(view) - staged
                take = min(room, len(data))
                view[staged : staged + take] = data[:take]
                staged += take
                data = data[take:]
        padded = -(-staged // _ALIGN) * _ALIGN
        view[staged:padded] = bytes(padded - staged)
        staged = padded
        flush(padded)
    finally:
        view.release()
    os.ftruncate(fd, size)
    if durable:
        os.fsync(fd)
    return size


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """libc, found when first needed: ``find_library`` runs ``ldconfig -p`` in a child
    process, which every importer of this module (each model replica) paid for."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:  # pragma: no cover - not glibc
        return None


def _syncfs(fd: int) -> None:
    """Flush one filesystem (not every disk, as ``sync`` would); fall back to ``os.sync``."""
    libc = _libc()
    if libc is not None and hasattr(libc, "syncfs") and libc.syncfs(fd) == 0:
        return
    os.sync()  # pragma: no cover


_proc: list[int] = []


def _read_whole(fd: int) -> bytes:
    """All of a file: one read of its size + 1 (a short read of a regular file is EOF)."""
    size = os.fstat(fd).st_size
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]  # it grew while we read: keep reading to EOF
    while block := os.read(fd, 1 << 20):
        parts.append(block)
    return b"".join(parts)


def _proc_fd() -> int:
    """A descriptor of /proc, opened once (racing threads may open two; both work)."""
    if not _proc:
        _proc.append(os.open("/proc", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC))
    return _proc[0]


class LocalStore:
    """One replica in a directory. Thread-safe; safe across processes (write-once keys).

    ``mode``: who may reach its files (``private``: the owner; ``group``: the owner's
    group too; see ``bastion.store._access``). ``create``: make the directory if it is
    missing, and give an existing one that the owner holds the mode's bits (a replica
    made before modes were enforced becomes unreadable to others at once, because its
    root no longer lets them in).
    """

    def __init__(
        self, root: str | Path, *, create: bool = True, mode: AccessMode = "private"
    ) -> None:
        self.root = Path(root)
        self.mode: AccessMode = mode
        self.permissions = permissions(mode)
        # A file's bits are set at creation; where the umask would strip some of them
        # (group mode under umask 027 or 077), they are set again on the descriptor.
        self._chmod_values = bool(self.permissions.values & umask())
        self._lock = threading.Lock()
        # Plain ints in a dict on the hot path (one per object per replica); the typed
        # record is made only when someone asks (statistics()).
        self._stats: dict[str, int] = {
            name: 0 for name in asdict(StoreStatistics("")) if name != "url"
        }
        self._known_dirs: set[str] = set()
        # Directories whose own names this store has made durable (it fsynced their
        # parent after they existed), so a flush need not climb past them again; one
        # this store makes anew is dropped from it.
        self._durable_dirs: set[str] = set()
        # Unnamed files need O_TMPFILE (Linux >= 3.11 on ext4, xfs, btrfs, tmpfs) and
        # /proc to name them; elsewhere values go through tmp/ and a hard link.
        self._tmpfile = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
        self._direct = bool(_O_DIRECT)
        if create:
            # A failure is reported by available(); a vault with a replica down still works.
            with contextlib.suppress(OSError):
                made = make_dirs(self.root / _TMP, self.permissions.dirs)
                for directory in made:  # a new replica survives a power loss too
                    self._fsync_dir(os.path.dirname(directory))
                self._tighten(str(self.root))
                self._tighten(os.path.join(self.root, _TMP))

    def _tighten(self, directory: str) -> None:
        """Give a directory this replica owns the mode's bits (not one it does not own:
        a shared mount point is its administrator's)."""
        with contextlib.suppress(OSError):
            info = os.stat(directory)
            if info.st_uid == os.geteuid() and info.st_mode & 0o7777 != self.permissions.dirs:
                os.chmod(directory, self.permissions.dirs)

    @property
    def url(self) -> str:
        return str(self.root)

    @property
    def worker_url(self) -> str:
        # Any process on this machine reaches the same directory, with the same mode.
        where = str(self.root.absolute())
        return where if self.mode == "private" else f"file://{where}?mode={self.mode}"

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def available(self) -> bool:
        # Asks, never creates: a missing replica is an unmounted or lost disk, and making
        # it here would put the vault's writes on whatever disk holds the mount point
        # (and make a read-only command change something). It is made at open time
        # (``create=True``), by ``bastion init``, or by the user.
        tmp = os.path.join(self.root, _TMP)
        return (
            os.path.isdir(tmp)
            and os.access(tmp, os.W_OK | os.X_OK)
            and os.access(self.root, os.W_OK | os.X_OK)
        )

    def _path(self, key: str) -> str:
        if not _KEY.match(key) or ".." in key.split("/") or key.split("/", 1)[0] == _TMP:
            raise InvalidNameError(f"store key {key!r} is not a safe relative key")
        return os.path.join(self.root, key)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        path = self._path(key)
        if not replace and os.path.lexists(path):
            self._count("put_existing")
            return False
        if not replace and self._tmpfile:
            created = self._put_unnamed(path, parts, durable=durable, made=[])
            if created is not None:
                return created
        tmp = os.path.join(self.root, _TMP, f"{os.getpid()}-{secrets.token_hex(8)}.tmp")
        try:
            # Created read-only yet writable through this descriptor.
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self.permissions.values
            )
        except (FileNotFoundError, NotADirectoryError):
            raise UnavailableError(
                f"vault replica {self.root}: directory is missing (is the disk mounted?)"
            ) from None
        try:
            if self._chmod_values:
                os.fchmod(fd, self.permissions.values)
            total = self._write_all(fd, parts, durable=durable)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            self._count("errors")
            raise
        os.close(fd)
        try:
            made = self._link(tmp, path, replace=replace)
        except FileExistsError:
            os.unlink(tmp)
            self._count("put_existing")
            return False
        except BaseException:
            os.unlink(tmp)
            raise
        os.unlink(tmp)
        if durable:
            self._fsync_entry(path, made)
        with self._lock:
            self._stats["puts"] += 1
            self._stats["put_bytes"] += total
        return True

    def _put_unnamed(
        self, path: str, parts: Sequence[Buffer], *, durable: bool, made: list[str]
    ) -> bool | None:
        """Write-once through an unnamed file (``O_TMPFILE``) linked in when whole.

        The file has no name until ``linkat`` gives it its key, so a writer killed midway
        leaves nothing behind (no ``tmp/`` entry to clean), and creating it touches only
        the key's own directory (256 of them for objects) instead of one ``tmp/`` that
        every writer thread contends on. None: the filesystem lacks ``O_TMPFILE``; the
        caller uses ``tmp/`` and a hard link instead. ``made`` gathers the directories
        made on the way (see ``_fsync_entry``).
        """
        parent = os.path.dirname(path)
        made += self._ensure_dir(parent)
        size = sum(len(memoryview(p).cast("B")) for p in parts)
        direct = _O_DIRECT if self._direct and size >= _DIRECT_MIN else 0
        flags = os.O_TMPFILE | os.O_WRONLY | os.O_CLOEXEC
        try:
            fd = self._open_tmpfile(parent, flags | direct, made)
        except OSError as exc:
            if direct and exc.errno == errno.EINVAL:
                # O_DIRECT refused (tmpfs): the page cache it is, for this replica.
                self._direct = False
                return self._put_unnamed(path, parts, durable=durable, made=made)
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                self._tmpfile = False
                return None
            raise
        # With directories made for it, their names are made durable with the file's
        # bytes, before the link (_fsync_made); otherwise the file is fsynced as written.
        early = durable and bool(made)
        durable_write = durable and not early
        try:
            if self._chmod_values:
                os.fchmod(fd, self.permissions.values)
            if direct:
                try:
                    total = write_direct(fd, parts, size, durable=durable_write)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    # Opened but refused at write time: rewrite through the page cache.
                    self._direct = False
                    os.ftruncate(fd, 0)
                    os.lseek(fd, 0, os.SEEK_SET)
                    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~_O_DIRECT)
                    total = self._write_all(fd, parts, durable=durable_write)
            else:
                total = self._write_all(fd, parts, durable=durable_write)
            if early:
                self._fsync_made(made, fd)
            # linkat(AT_SYMLINK_FOLLOW) through /proc gives the unnamed inode its name and
            # fails with EEXIST rather than replacing, like link() in the named path.
            # src_dir_fd makes CPython call linkat (plain link() would not follow the
            # /proc symlink); "self" is resolved per call, so this is fork-safe.
            os.link(f"self/fd/{fd}", path, src_dir_fd=_proc_fd(), follow_symlinks=True)
        except FileExistsError:
            self._count("put_existing")
            return False
        except BaseException:
            self._count("errors")
            raise
        finally:
            os.close(fd)
        if durable:
            self._fsync_dir(parent)  # the name, once the bytes and its directories are
        with self._lock:
            self._stats["puts"] += 1
            self._stats["put_bytes"] += total
        return True

    def _open_tmpfile(self, parent: str, flags: int, made: list[str]) -> int:
        try:
            return os.open(parent, flags, self.permissions.values)
        except FileNotFoundError:
            self._known_dirs.discard(parent)
            made += self._ensure_dir(parent)
            return os.open(parent, flags, self.permissions.values)

    def _ensure_dir(self, parent: str) -> list[str]:
        """Make the key directory ``parent`` if it is missing; the directories made."""
        if parent in self._known_dirs:
            return []
        # Never recreate the replica itself: a missing root is an unmounted disk.
        if not os.path.isdir(os.path.join(self.root, _TMP)):
            raise UnavailableError(
                f"vault replica {self.root}: directory is missing (is the disk mounted?)"
            )
        made = self._make_dirs(parent)
        self._known_dirs.add(parent)
        return made

    def _make_dirs(self, directory: str) -> list[str]:
        try:
            made = make_dirs(directory, self.permissions.dirs, stop=self.root)
            self._durable_dirs.difference_update(made)  # made again after it went
            return made
        except FileNotFoundError:
            raise UnavailableError(
                f"vault replica {self.root}: directory is missing (is the disk mounted?)"
            ) from None

    @staticmethod
    def _write_all(fd: int, parts: Sequence[Buffer], *, durable: bool) -> int:
        views = [memoryview(part).cast("B") for part in parts]
        size = sum(len(view) for view in views)
        total = 0
        if 1 < len(views) <= 16 and size < _MAX_WRITE:
            # One writev, not a write per part: ext4 zero-fills the rest of the page
            # cache folio a short first write (the one-byte object header) lands in,
            # then the payload's write copies over those zeroes (perf showed that memset
            # as a visible share of ingest CPU). A short writev (a full disk, a signal)
            # goes on below.
            written = os.writev(fd, views)
            if written == size:
                if durable:
                    os.fsync(fd)
                return size
            total = written
            parts = [memoryview(b"".join(views))[written:]]
        for part in parts:
            view = memoryview(part).cast("B")
            while view:
                written = os.write(fd, view[:_MAX_WRITE])
                total += written
                view = view[written:]
        if durable:
            os.fsync(fd)
        return total

    def _link(self, tmp: str, path: str, *, replace: bool) -> list[str]:
        """Give ``tmp``'s file the name ``path``; the directories made for it."""
        parent = os.path.dirname(path)
        made: list[str] = []
        if parent not in self._known_dirs:
            made += self._make_dirs(parent)
            self._known_dirs.add(parent)
        if replace:
            # Keep tmp's name alive for the caller's unlink: link a second name, then swap.
            swap = f"{tmp}.swap"
            os.link(tmp, swap)
            try:
                os.replace(swap, path)
            except FileNotFoundError:
                # the key's directory went (a repair after damage): make it again
                self._known_dirs.discard(parent)
                try:
                    made += self._make_dirs(parent)
                    os.replace(swap, path)
                except BaseException:
                    os.unlink(swap)
                    raise
            return made
        try:
            os.link(tmp, path)
        except FileNotFoundError:
            self._known_dirs.discard(parent)
            made += self._make_dirs(parent)
            os.link(tmp, path)
        return made

    def _fsync_entry(self, path: str, made: list[str]) -> None:
        """Make the name ``path`` durable (its file's bytes were fsynced before it was
        linked): fsync its directory and the directories made for it (``_fsync_made``)."""
        self._fsync_made(made, os.path.dirname(path))

    def _fsync_made(self, made: list[str], also: int | str) -> None:
        """fsync ``also`` (a descriptor or a directory) and the parent of each directory
        in ``made``, so a new key directory (a new artifact's ``snapshots/<name>/_v/``)
        survives a power loss too. Directories that already existed are not touched:
        each was made durable by whoever made it (a durable put, as here, or a commit's
        flush, which climbs to the root) before anything in it was published. (One a
        writer made and died before flushing is as before this change: on a journalling
        filesystem, ext4 or xfs, the fsync of the key's directory commits every earlier
        change of the tree with it.)

        One after another: issued at once from threads they did share journal commits,
        but on 2 busy cores the hand-offs cost more than that saved (measured with
        ``benchmarks/validate.py --pipeline-only``); replicas are written at once a
        layer up, which did pay."""
        parents = dict.fromkeys(os.path.dirname(d) for d in made)
        if isinstance(also, str):
            parents.pop(also, None)
            self._fsync_dir(also)
        else:
            os.fsync(also)
        for directory in parents:
            self._fsync_dir(directory)
        if made and self._durable_below(os.path.dirname(made[0])):
            self._durable_dirs.update(made)  # and so is every directory above them

    def _durable_below(self, directory: str) -> bool:
        """Whether names in ``directory`` are as durable as their directory's own: it
        is the root, or this store made its name (and so all above it) durable."""
        return directory in self._durable_dirs or directory == os.path.dirname(
            os.path.join(self.root, "x")
        )

    @staticmethod
    def _fsync_dir(directory: str) -> None:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            # os calls, not open(): reads and scrub fetch one object per chunk per
            # replica, and FileIO adds an lseek and an extra read to each.
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise NotFoundError(f"{key} is not on vault replica {self.root}") from None
        except PermissionError as exc:
            raise UnavailableError(f"vault replica {self.root}: cannot read {key}: {exc}") from None
        try:
            data = _read_whole(fd)
        except IsADirectoryError:
            raise NotFoundError(f"{key} is a directory on vault replica {self.root}") from None
        finally:
            os.close(fd)
        with self._lock:
            self._stats["gets"] += 1
            self._stats["get_bytes"] += len(data)
        return data

    def has(self, key: str) -> bool:
        return os.path.isfile(self._path(key))

    def size(self, key: str) -> int:
        try:
            return os.stat(self._path(key)).st_size
        except FileNotFoundError:
            raise NotFoundError(f"{key} is not on vault replica {self.root}") from None

    def age(self, key: str) -> float:
        # A value's file is created, written and linked once, so its mtime is its birth.
        try:
            return time.time() - os.stat(self._path(key)).st_mtime
        except FileNotFoundError:
            raise NotFoundError(f"{key} is not on vault replica {self.root}") from None

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix and not prefix.endswith("/"):
            raise InvalidNameError(f"store prefix {prefix!r} must end with '/'")
        if prefix:
            self._path(prefix.rstrip("/"))
        start = os.path.join(self.root, prefix) if prefix else str(self.root)
        yield from self._walk(start, prefix)

    def _walk(self, directory: str, prefix: str) -> Iterator[str]:
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if not prefix and entry.name == _TMP:
                continue
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(entry.path, f"{prefix}{entry.name}/")
            elif entry.is_file(follow_symlinks=False):
                yield f"{prefix}{entry.name}"

    def delete(self, key: str) -> bool:
        try:
            os.unlink(self._path(key))
        except FileNotFoundError:
            return False
        self._count("deletes")
        return True

    def sync(self, keys: Collection[str] | None = None) -> None:
        if keys is not None:
            self._sync_keys(keys)
            return
        try:
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            raise UnavailableError(f"vault replica {self.root} is missing") from None
        try:
            _syncfs(fd)
        finally:
            os.close(fd)

    def _sync_keys(self, keys: Collection[str]) -> None:
        """fsync each value of ``keys`` and every directory from each one's up to the
        root, so each is durable under its name (its bytes, its directory
        entry, and the entries of the directories above it, whoever made them: an
        object found in place may be another writer's, its bucket made and not yet
        flushed by it). A directory whose own name this store made durable before is
        not climbed past again (the root's is the replica's: made durable when it was
        made). Nothing orders these fsyncs among themselves: the values are linked
        already, and what must come after them (the snapshot document) waits for all.

        Why not ``syncfs``: that flushes every dirty page of the filesystem, other
        processes' writes included, so on a busy disk a one-file commit waited for the
        whole machine's writeback (tens to hundreds of ms). fsync waits only for these
        files (and a journal commit). A missing key
        raises (``NotFoundError``): the caller named a value that is not here."""
        root = os.path.dirname(os.path.join(self.root, "x"))  # as _path spells it
        files = [self._path(key) for key in keys]
        directories: set[str] = set()  # each holds a name that must last
        climbed: list[str] = []  # directories whose own names that makes durable
        for path in files:
            directory = os.path.dirname(path)
            directories.add(directory)
            # up to the root, stopping at a directory whose name this store made
            # durable already (in practice: the bucket alone, or it and objects/)
            while directory != root and directory not in self._durable_dirs:
                climbed.append(directory)
                directory = os.path.dirname(directory)
                directories.add(directory)
        for path in files:
            self._fsync_value(path)
        for directory in sorted(directories, key=len, reverse=True):  # deepest first
            self._fsync_dir(directory)
        self._durable_dirs.update(climbed)

    def _fsync_value(self, path: str) -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            key = os.path.relpath(path, self.root)
            raise NotFoundError(f"{key} is not on vault replica {self.root}") from None
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """``flock`` on ``tmp/<name>.lock``: every process on this machine (and, where the
        filesystem passes ``flock`` on, every host mounting it) takes the same lock."""
        if not _LOCK_NAME.match(name):
            raise InvalidNameError(f"lock name {name!r} must be lower-case letters and digits")
        tmp = os.path.join(self.root, _TMP)
        if not os.path.isdir(tmp):
            # Never recreate the replica itself: a missing root is an unmounted disk.
            raise UnavailableError(
                f"vault replica {self.root}: directory is missing (is the disk mounted?)"
            )
        fd = open_file(os.path.join(tmp, f"{name}.lock"), os.O_RDWR, self.permissions.files)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def cleanup(self) -> int:
        """Remove values killed writers left in ``tmp/``; return how many.

        Only files of writers that are gone (the pid in the name is not running) are
        removed, so a concurrent writer in another process keeps its value in progress,
        and lock files are left alone.
        """
        removed = 0
        try:
            entries = list(os.scandir(os.path.join(self.root, _TMP)))
        except FileNotFoundError:
            return 0
        for entry in entries:
            match = _LEFTOVER.match(entry.name)
            if match is None or pid_alive(int(match.group(1))):
                continue
            try:
                os.unlink(entry.path)
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def absorb_statistics(self, delta: StoreStatistics) -> None:
        with self._lock:
            for name in self._stats:
                self._stats[name] += getattr(delta, name)

    def statistics(self) -> StoreStatistics:
        with self._lock:
            return StoreStatistics(self.url, **self._stats)
