"""Where checkpoints live: a small ``CheckpointStore`` interface, the vault behind it, and
a replicated directory store for when no vault is configured.

Owns: the checkpoint naming (``ckpt/<job>/step-000400``), visibility only once complete
and verified, restore-side verification with repair of a damaged replica, and
retention (``keep``).

Must never: expose a partly written checkpoint (writes go to a temporary directory that
is fsynced and renamed into place), or return bytes whose hash does not match.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import blake3

from bastion.errors import IntegrityError, NotFoundError
from bastion.names import parse_name
from bastion.store import buffer_address, write_direct

__all__ = [
    "CheckpointStore",
    "DirStore",
    "EventSink",
    "VaultStore",
    "checkpoint_name",
    "open_store",
    "parse_step",
]

EventSink = Callable[[str, dict[str, Any]], None]
_MANIFEST = "MANIFEST.json"
_CHUNK = 8 << 20
_ALIGN = 4096  # O_DIRECT wants block-aligned addresses, offsets and lengths
_DIRECT_MIN = 4 << 20  # below this the page cache is as fast and simpler


def checkpoint_name(job: str, step: int) -> str:
    return parse_name(f"ckpt/{job}/step-{step:06d}")


def parse_step(name: str) -> int:
    return int(name.rsplit("step-", 1)[-1])


class CheckpointStore(Protocol):
    """The four things the checkpointer needs from storage."""

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        """Store atomically; return the ref. Visible to ``checkpoints`` only when done."""
        ...

    def checkpoints(self, job: str) -> list[str]:
        """Names of complete checkpoints of ``job``, newest (highest step) first."""
        ...

    def read(self, name: str, path: str) -> bytes:
        """Verified bytes; ``IntegrityError`` if no replica holds a good copy."""
        ...

    def prune(self, job: str, keep: int) -> list[str]:
        """Drop all but the newest ``keep`` checkpoints; return the dropped names."""
        ...


def _hash(data: bytes | memoryview) -> str:
    # One thread: at 4.5 GB/s it keeps up with the disk, and it leaves the other core to
    # the training loop (the step-rate overhead goal).
    h = blake3.blake3()
    h.update(data)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, view: memoryview) -> None:
    for start in range(0, len(view), _CHUNK):
        chunk = view[start : start + _CHUNK]
        written = 0
        while written < len(chunk):
            written += os.write(fd, chunk[written:])


def _write_file(path: Path, data: bytes | memoryview) -> None:
    """Write and fsync. A large, page-aligned buffer goes through O_DIRECT (the store's
    ``write_direct``): the disk DMAs straight from the staging buffer, with no copy into
    the page cache and no writeback later, which is both faster (2.65 vs 0.55-0.88 GB/s
    on the issue's machine) and leaves the CPU to the training loop. Anything else, or a
    filesystem that refuses O_DIRECT (tmpfs), is written through the page cache."""
    view = memoryview(data).cast("B")
    address = buffer_address(view) if len(view) >= _DIRECT_MIN else None
    direct = getattr(os, "O_DIRECT", 0)
    if direct and address is not None and address % _ALIGN == 0:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o600)
        except OSError:
            fd = -1  # refused at open (tmpfs): written plainly below
        if fd >= 0:
            try:
                write_direct(fd, [view], len(view), durable=True)
                return
            except OSError as exc:
                if exc.errno != errno.EINVAL:
                    raise
                # refused at write time: written plainly below
            finally:
                os.close(fd)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        _write_all(fd, view)
        os.fsync(fd)
    finally:
        os.close(fd)


class DirStore:
    """Checkpoints replicated across local directories, one verified manifest each.

    Used when the manifest configures no vault (and by the benchmark). Every file's
    BLAKE3 hash is recorded once and checked on every read; a replica whose copy fails
    is repaired from one that verifies (event ``repaired``).
    """

    def __init__(self, replicas: Sequence[str | Path], *, on_event: EventSink | None = None):
        if not replicas:
            raise ValueError("DirStore needs at least one replica directory")
        self.replicas = [Path(r) for r in replicas]
        self.on_event = on_event
        self._lock = threading.Lock()

    def _emit(self, kind: str, **data: Any) -> None:
        if self.on_event is not None:
            self.on_event(kind, data)

    def _dir(self, replica: Path, name: str) -> Path:
        return replica / parse_name(name)

    def _stage_replica(self, replica: Path, files: Mapping[str, bytes | memoryview]) -> Path:
        tmp = replica / ".tmp" / f"{uuid.uuid4().hex}"
        tmp.mkdir(parents=True, exist_ok=True)
        for path, data in files.items():
            _write_file(tmp / path, data)
        return tmp

    def _publish_replica(self, replica: Path, tmp: Path, name: str, manifest: bytes) -> None:
        _write_file(tmp / _MANIFEST, manifest)
        _fsync_dir(tmp)
        final = self._dir(replica, name)
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.exists():  # an earlier attempt at the same step (after a crash): replace
            shutil.rmtree(final)
        tmp.rename(final)
        _fsync_dir(final.parent)

    def _write_replica(
        self, replica: Path, name: str, files: Mapping[str, bytes | memoryview], manifest: bytes
    ) -> None:
        self._publish_replica(replica, self._stage_replica(replica, files), name, manifest)

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        """Hash and write every replica at once (BLAKE3 and os.write release the GIL, so
        the passes overlap), then publish each replica: manifest, fsync, rename."""
        parse_name(name)
        hashes: dict[str, str] = {}
        staged: dict[Path, Path] = {}
        errors: list[BaseException] = []

        def hash_all() -> None:
            for p, d in files.items():
                hashes[p] = _hash(d)

        def stage(replica: Path) -> None:
            try:
                staged[replica] = self._stage_replica(replica, files)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=hash_all)]
        threads += [threading.Thread(target=stage, args=(r,)) for r in self.replicas]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            for tmp in staged.values():
                shutil.rmtree(tmp, ignore_errors=True)
            raise errors[0]
        entries = {p: {"blake3": hashes[p], "size": memoryview(d).nbytes} for p, d in files.items()}
        manifest = json.dumps(
            {"name": name, "files": entries, "meta": dict(meta), "lineage": list(lineage)},
            sort_keys=True,
        ).encode()
        for replica in self.replicas:
            self._publish_replica(replica, staged[replica], name, manifest)
        return name

    def checkpoints(self, job: str) -> list[str]:
        found: set[str] = set()
        for replica in self.replicas:
            base = replica / "ckpt" / job
            if base.is_dir():
                found.update(
                    f"ckpt/{job}/{d.name}"
                    for d in base.iterdir()
                    if d.name.startswith("step-") and (d / _MANIFEST).exists()
                )
        return sorted(found, key=parse_step, reverse=True)

    def _manifest(self, replica: Path, name: str) -> dict[str, Any] | None:
        try:
            return dict(json.loads((self._dir(replica, name) / _MANIFEST).read_bytes()))
        except (OSError, ValueError):
            return None

    def read(self, name: str, path: str) -> bytes:
        bad: list[Path] = []
        good: bytes | None = None
        source: Path | None = None
        for replica in self.replicas:
            manifest = self._manifest(replica, name)
            if manifest is None or path not in manifest.get("files", {}):
                if manifest is not None or self._dir(replica, name).exists():
                    bad.append(replica)
                continue
            try:
                data = (self._dir(replica, name) / path).read_bytes()
            except OSError:
                bad.append(replica)
                continue
            if _hash(data) != manifest["files"][path]["blake3"]:
                bad.append(replica)
                continue
            good, source = data, replica
            break
        if good is None or source is None:
            if not bad:
                raise NotFoundError(f"checkpoint {name}: no replica holds {path}")
            raise IntegrityError(
                f"checkpoint {name}: {path} fails its BLAKE3 check on every replica "
                f"({', '.join(map(str, bad))}); an earlier checkpoint will be used"
            )
        for replica in bad:
            with contextlib.suppress(OSError):
                self._repair(source, replica, name)
                self._emit("repaired", name=name, path=path, replica=str(replica))
        return good

    def _repair(self, source: Path, target: Path, name: str) -> None:
        src = self._dir(source, name)
        files = {p.name: p.read_bytes() for p in src.iterdir() if p.name != _MANIFEST}
        self._write_replica(target, name, files, (src / _MANIFEST).read_bytes())

    def prune(self, job: str, keep: int) -> list[str]:
        dropped = self.checkpoints(job)[keep:]
        for name in dropped:
            for replica in self.replicas:
                shutil.rmtree(self._dir(replica, name), ignore_errors=True)
        return dropped


CHECKPOINT_CHUNK = 16 << 20


class VaultStore:
    """The vault (``bastion.vault``) behind the ``CheckpointStore`` interface."""

    def __init__(self, vault: Any) -> None:
        self.vault = vault
        self.replicas = list(getattr(vault, "stores", ()))

    def commit(
        self,
        name: str,
        files: Mapping[str, bytes | memoryview],
        *,
        meta: Mapping[str, Any],
        lineage: Sequence[str],
    ) -> str:
        # compress=False: float weights and Adam moments barely compress, and zstd would
        # cut persist throughput several-fold on 2 cores. Fixed 16 MiB chunks, not CDC:
        # the tensor layout is fixed and nearly every byte changes between steps (CDC
        # finds nothing, unchanged tensors still dedup at the same offsets), and chunks
        # of the page-aligned staging buffer stay aligned, so the vault writes them with
        # O_DIRECT straight from the buffer: no CDC pass and no copy on the writer's path.
        snap = self.vault.commit(
            name,
            dict(files),
            meta=dict(meta),
            lineage=tuple(lineage),
            labels=("latest",),
            compress=False,
            chunk_size=CHECKPOINT_CHUNK,
        )
        return str(getattr(snap, "ref", name))

    def checkpoints(self, job: str) -> list[str]:
        names: list[str] = list(self.vault.names(prefix=f"ckpt/{job}/"))
        return sorted(
            (n for n in names if n.rsplit("/", 1)[-1].startswith("step-")),
            key=parse_step,
            reverse=True,
        )

    def read(self, name: str, path: str) -> bytes:
        return bytes(self.vault.read(self.vault.snapshot(f"{name}@latest"), path))

    def prune(self, job: str, keep: int) -> list[str]:
        # Retention of vault snapshots is the vault's (manifest vault.retention, gc).
        return []


def open_store(
    manifest: Any, *, on_event: EventSink | None = None, prefer_vault: bool = True
) -> CheckpointStore:
    """The vault from ``manifest`` if it has a signing key, else a ``DirStore`` on the
    vault's replica directories (or ``<state_dir>/checkpoints`` without a vault section):
    checkpoints still verify and replicate, they are just not signed snapshots."""
    config = getattr(manifest, "vault", None)
    key = None
    if config is not None:
        key = Path(config.key or Path(manifest.state_dir) / "keys" / "signing.key")
    if prefer_vault and config is not None and key is not None and key.exists():
        import importlib

        try:
            vault_cls = importlib.import_module("bastion.vault").Vault
        except (ImportError, AttributeError):
            pass  # the vault is optional for training; fall back to replicated dirs
        else:
            return VaultStore(vault_cls.from_manifest(manifest))
    if getattr(manifest, "vault", None) is not None:
        roots = [Path(r) / "_checkpoints" for r in manifest.vault.replicas if "://" not in r]
    else:
        roots = [Path(manifest.state_dir) / "checkpoints"]
    return DirStore(roots, on_event=on_event)
