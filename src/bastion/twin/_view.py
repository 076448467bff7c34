"""A twin's vault replica: a copy-on-write view of one production replica.

Owns: how a production replica becomes a twin replica. Per key of the layout
(``bastion.vault._layout``):

- ``objects/..``: immutable, content-addressed, write-once. Shared, never copied: a
  reflink (``ioctl FICLONE``: the filesystem shares the extents and copies on write) where
  the filesystem has them (btrfs, xfs, bcachefs), else a hard link to the same read-only
  file. Production never writes an object in place (keys are write-once; repair and gc
  replace or remove the directory entry, never the bytes), so a link is a stable view;
  the twin's side is guarded by its fault scope's copy-up (``Scope.copy_up``), which gives
  a linked file its own copy before a fault writes into it.
- ``snapshots/..`` (snapshot documents and label records): small. Each is verified with
  production's key (a twin only ever starts from genuine production history) and signed
  again with the twin's own key into a file of the twin's. The body, and so the
  snapshot id every label names, is unchanged; the twin trusts only its own key, and
  production never trusts the twin's, so nothing the twin signs can reach production.
- ``config/admin.pub``: the twin's own admin key (a twin's gc and deletes are its own).
- ``tmp/``: made empty (locks and half-written values are per replica).

Must never: open a production file for writing, or copy an object's bytes (a twin costs
metadata: one link per object).
"""

# One link per object on the hot path of `twin up`: os calls on str paths.
# ruff: noqa: PTH102, PTH103, PTH108, PTH116, PTH118

from __future__ import annotations

import errno
import fcntl
import os
from dataclasses import dataclass
from pathlib import Path

from bastion.errors import IntegrityError, UsageError
from bastion.store._access import AccessMode, permissions
from bastion.vault._keys import Signer, Verifier
from bastion.vault._layout import ADMIN_PIN, OBJECTS, SNAPSHOTS
from bastion.vault._snapshot import decode_document, encode_document

__all__ = ["ViewStatistics", "make_view"]

_FICLONE = 0x40049409  # _IOW(0x94, 9, int): share src's extents with dst


@dataclass(frozen=True)
class ViewStatistics:
    """What making one view did: objects reflinked or hard-linked, documents re-signed,
    and the bytes the shared objects hold (shared, not copied)."""

    production: str
    twin: str
    reflinked: int
    linked: int
    resigned: int
    shared_bytes: int


class _Sharer:
    """Reflink when the filesystem can, else hard link; decided on the first object."""

    def __init__(self) -> None:
        self.reflink: bool | None = None  # None: not tried yet (threads may try at once)

    def share(self, src: str, dst: str, mode: int) -> bool:
        """Share ``src`` as ``dst``; True if by reflink, False if by hard link."""
        if self.reflink is not False:
            try:
                self._clone(src, dst, mode)
                self.reflink = True
                return True
            except OSError as exc:
                if exc.errno not in (errno.EOPNOTSUPP, errno.ENOTTY, errno.EXDEV, errno.EINVAL):
                    raise
                self.reflink = False
        os.link(src, dst)
        return False

    def _clone(self, src: str, dst: str, mode: int) -> None:
        sfd = os.open(src, os.O_RDONLY | os.O_CLOEXEC)
        try:
            dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.ioctl(dfd, _FICLONE, sfd)
                os.fchmod(dfd, mode)
            except BaseException:
                os.close(dfd)
                os.unlink(dst)
                raise
            os.close(dfd)
        finally:
            os.close(sfd)


def make_view(
    production: Path,
    twin: Path,
    *,
    verifier: Verifier | None,
    signer: Signer,
    admin_pub: bytes,
    mode: AccessMode = "private",
) -> ViewStatistics:
    """Make ``twin`` (which must not exist) a view of the replica at ``production``.
    ``verifier``: production's key, to verify each snapshot document before the twin
    signs it (None only for a replica with no documents)."""
    if not production.is_dir():
        raise UsageError(
            f"twin: vault replica {production} does not exist (is the disk mounted? "
            "run `bastion vault put` first, or fix vault.replicas)"
        )
    bits = permissions(mode)
    os.makedirs(twin, mode=bits.dirs)
    os.mkdir(os.path.join(twin, "tmp"), bits.dirs)
    sharer = _Sharer()
    prod = str(production)
    work: list[tuple[str, str, list[str]]] = []
    for dirpath, dirnames, filenames in os.walk(prod):
        rel = os.path.relpath(dirpath, prod)
        rel = "" if rel == "." else rel + "/"
        if not rel:  # tmp/ holds production's locks and half-written values: not the twin's
            dirnames[:] = [d for d in dirnames if d != "tmp"]
        work.append((rel, dirpath, filenames))

    def one_dir(rel: str, dirpath: str, filenames: list[str]) -> tuple[int, int, int, int]:
        """Make one directory of the view; (reflinked, linked, resigned, shared bytes)."""
        target_dir = os.path.join(twin, rel)
        if rel:  # os.walk is top-down: the parent is made already
            os.mkdir(target_dir, bits.dirs)
        if filenames and rel.startswith(OBJECTS) and sharer.reflink is False:
            linked, shared = _link_all(dirpath, target_dir, filenames)
            return 0, linked, 0, shared
        reflinked = linked = resigned = shared = 0
        for filename in filenames:
            key = rel + filename
            src = os.path.join(dirpath, filename)
            dst = os.path.join(target_dir, filename)
            if key.startswith(OBJECTS):
                if sharer.share(src, dst, bits.values):
                    reflinked += 1
                else:
                    linked += 1
                shared += os.stat(src).st_size
            elif key.startswith(SNAPSHOTS):
                with open(src, "rb") as fh:  # noqa: PTH123
                    stored = fh.read()
                if verifier is None:
                    raise UsageError(
                        f"twin: {production}/{key} needs production's signing key to be "
                        "verified, and there is none (set vault.key in the manifest)"
                    )
                try:
                    body, _ = decode_document(stored, verifier, f"{production}/{key}")
                except IntegrityError as exc:
                    raise IntegrityError(
                        f"twin: production's {exc}; run `bastion vault verify` and repair "
                        "production before making a twin of it"
                    ) from None
                document, _ = encode_document(body, signer)
                _write(dst, document, bits.values)
                resigned += 1
            elif key == ADMIN_PIN:
                _write(dst, admin_pub, bits.values)
            else:  # nothing else is in the layout today; a small file, copied whole
                with open(src, "rb") as fh:  # noqa: PTH123
                    _write(dst, fh.read(), bits.values)
        return reflinked, linked, resigned, shared

    # One thread: threads only add GIL hand-offs to these syscalls (a link is ~5 us; a
    # mkdir, 0.1-0.3 ms on ext4 here, serialises on its parent directory's lock). Measured
    # with the 1 GB benchmark vault (2 x 891 files, 260 directories each): 36-42 ms in one
    # thread, 100-150 ms with 8 threads per replica (benchmarks/twin.py, docs/twin.md).
    totals = [one_dir(*w) for w in work]
    # No pin in production yet: the twin's first commit pins the twin's admin key.
    return ViewStatistics(
        str(production),
        str(twin),
        sum(t[0] for t in totals),
        sum(t[1] for t in totals),
        sum(t[2] for t in totals),
        sum(t[3] for t in totals),
    )


def _link_all(src_dir: str, dst_dir: str, names: list[str]) -> tuple[int, int]:
    """Hard-link every file of ``names`` from ``src_dir`` into ``dst_dir``: (files, bytes).
    By directory descriptors, so the kernel resolves each name in one directory instead
    of walking the whole path again (the objects are most of a view's files)."""
    src = os.open(src_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        dst = os.open(dst_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            size = 0
            for name in names:
                os.link(name, name, src_dir_fd=src, dst_dir_fd=dst)
                size += os.stat(name, dir_fd=dst).st_size
        finally:
            os.close(dst)
    finally:
        os.close(src)
    return len(names), size


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        os.fchmod(out.fileno(), mode)
