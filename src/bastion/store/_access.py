"""Who may reach a replica's files on disk: the owner alone, or the owner's group too.

Owns: the two access modes (``vault.mode`` in bastion.yaml) and the permission bits each
gives what the vault writes on a local disk (replica directories, the write-once values
in them, lock files, and the state-dir files the vault keeps), making directories and
writable files with exactly those bits whatever the process's umask, and reading the
umask without changing it.

``private`` (the default): directories 0700, values 0400, lock and state files 0600.
Nobody but the owner (and root) can list a replica or read a byte of it, whatever the
modes of the files that were put in it: a vault of ``/etc/shadow`` is as closed as the
file was.

``group``: directories 2770 (setgid, so what anyone in the group creates belongs to the
directory's group), values 0440, lock and state files 0660. Users of one group share the
vault (read, commit, scrub); others get nothing. Give the replica directory to that group
once (``chgrp GROUP <replica>``); an existing tree needs ``chgrp -R`` and
``chmod -R g+rwX`` as well.

Must never: widen access beyond the mode asked for (never a bit for "other"), or change
the mode of anything but what the caller names.
"""

# make_dirs takes LocalStore's plain str paths (its hot path builds no Path per object).
# ruff: noqa: PTH101, PTH102, PTH112, PTH120

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from bastion.errors import UsageError

__all__ = [
    "ACCESS_MODES",
    "AccessMode",
    "Permissions",
    "make_dirs",
    "open_file",
    "permissions",
    "umask",
    "write_file",
]

AccessMode = Literal["private", "group"]
ACCESS_MODES: tuple[AccessMode, ...] = ("private", "group")


@dataclass(frozen=True, slots=True)
class Permissions:
    """The permission bits of one access mode.

    Attributes:
        mode: its name (``private`` or ``group``).
        dirs: every directory the vault makes (a replica, its key directories, the
            state directory).
        values: write-once values (objects, snapshot documents, label records, the
            admin pin): read-only from the moment they are linked in.
        files: files rewritten in place (lock files, the scrub cursor, the guard's list).
    """

    mode: AccessMode
    dirs: int
    values: int
    files: int


_PERMISSIONS: dict[str, Permissions] = {
    "private": Permissions("private", dirs=0o700, values=0o400, files=0o600),
    "group": Permissions("group", dirs=0o2770, values=0o440, files=0o660),
}


def permissions(mode: str) -> Permissions:
    """The bits of access mode ``mode`` (``UsageError`` naming the choices otherwise)."""
    found = _PERMISSIONS.get(mode)
    if found is None:
        raise UsageError(
            f"vault mode {mode!r} is not one of {', '.join(ACCESS_MODES)} "
            "(private: the owner alone; group: the owner's group too)"
        )
    return found


def umask() -> int:
    """This process's umask, read without changing it (``os.umask`` sets it, which would
    race other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    return 0o777  # unknown: every caller then sets the bits explicitly


def make_dirs(path: str | Path, mode: int, *, stop: str | Path | None = None) -> list[str]:
    """Make ``path`` and each missing parent with exactly ``mode`` (``os.makedirs`` gives
    parents the umask's default, and the umask strips bits from ``mode`` itself).
    Directories that exist are left as they are. ``stop``: never make this directory
    or anything above it (a replica's root: a missing root is an unmounted disk).

    Returns the directories this call made, outermost first (not one another thread or
    process made first): a caller that must make them durable fsyncs the parent of
    each, and nothing else."""
    missing: list[str] = []
    current = os.fspath(path)
    limit = os.fspath(stop) if stop is not None else None
    while not os.path.isdir(current):
        if current == limit:
            raise FileNotFoundError(f"{current} is missing")
        missing.append(current)
        parent = os.path.dirname(current)
        if parent == current:
            break
        current = parent
    made: list[str] = []
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            continue  # another thread or process made it: theirs has the same bits
        os.chmod(directory, mode)
        made.append(directory)
    return made


def open_file(path: str | Path, flags: int, mode: int) -> int:
    """``os.open(path, flags | O_CREAT)`` with exactly ``mode``, whether the file is new
    (the umask strips bits) or was left with other bits (by an older version)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, mode)
    try:
        if os.fstat(fd).st_mode & 0o7777 != mode:
            # another user's file (a group vault's lock): theirs to set
            with contextlib.suppress(PermissionError):
                os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_file(path: str | Path, data: bytes, *, mode: int, dir_mode: int) -> None:
    """Replace ``path`` with ``data`` whole (a reader sees the old file or the new one),
    the file with exactly ``mode``; a missing parent is made with ``dir_mode``."""
    target = Path(path)
    make_dirs(target.parent, dir_mode)
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    fd = open_file(tmp, os.O_WRONLY | os.O_TRUNC, mode)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    tmp.replace(target)
