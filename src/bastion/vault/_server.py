"""The vault server (``bastion vault serve``): jobs and replicas hold a scoped token, the
server alone holds the vault's signing key.

Owns: the HTTP API (below), checking each request's capability token
(``bastion.segment``: signature chain, expiry by the server's clock, revocation, then
the segment, the name's prefix and the operation), spooling an upload and committing it
as the next version (the server signs the snapshot and stamps it with the time it
received it; retention and gc read only that), and mapping every refusal to a 4xx with
the thing, the reason and the fix.

Must never: accept a time from a client (a ``created`` or ``received`` in ``meta``, a
``X-Bastion-Created`` header: refused, never stored), delete or replace a version or a
label (no route does; that needs the admin key, on the vault's host), accept a
snapshot document (only files: the server makes and signs every document), write a
client's path on its disk (a spooled file is named by its index), echo or log a token,
or answer 500 for bad input.

API (``Authorization: Bearer bst1...`` on every route but ``/healthz``)::

    GET  /healthz                                        -> {"ok": true}
    GET  /v1/segments/{seg}/names?prefix=P              read   -> {"names": [...]}
    GET  /v1/segments/{seg}/snapshot?ref=NAME[@REV]     read   -> snapshot JSON
    GET  /v1/segments/{seg}/versions?name=NAME          read   -> {"versions": [...]}
    GET  /v1/segments/{seg}/file?ref=REF&path=PATH      read   -> the file's bytes
    POST /v1/segments/{seg}/snapshots?name=NAME         append -> snapshot JSON (201)

An upload's body: one line of JSON, ``{"files": [[path, size], ...], "meta": {...},
"lineage": [refs]}``, then each file's bytes in that order, back to back. Sizes are
declared first so an oversize upload is refused (413) before a byte of it is stored.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import secrets
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import StreamReader, web

from bastion import event_kinds as ek
from bastion.errors import (
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from bastion.events import NO_EVENTS, Emit
from bastion.names import parse_name, parse_ref
from bastion.segment._state import RevocationList, SegmentState
from bastion.segment._token import PREFIX, Scope, TokenError, TokenKey, TokenRefused, verify
from bastion.vault._snapshot import Snapshot, check_path
from bastion.vault._vault import FileSource, Vault
from bastion.vault._write import BATCH_BYTES, BATCH_COUNT, PROCESS_FILES, WHOLE_BELOW

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = ["DEFAULT_MAX_UPLOAD", "VaultServer", "from_manifest", "serve", "snapshot_json"]

#: the largest upload accepted by default (``--max-upload``): 8 GiB
DEFAULT_MAX_UPLOAD = 8 << 30
_MAX_HEADER = 1 << 20
_MAX_FILES = 100_000
_READ_CHUNK = 1 << 20
_RECV_SIZE = 4 << 20
#: the window of an upload's bytes received and not yet taken by its commit (the
#: transfer waits beyond it); a file bigger than this waits on the server's disk
_MEMORY_SPOOL = 256 << 20
#: meta keys a client may not set: the server records time itself (restic#22057: a
#: forged snapshot time lets the next prune delete real history)
_TIME_KEYS = frozenset({"created", "received", "time", "timestamp", "date", "mtime"})
_TIME_HEADERS = ("X-Bastion-Created", "X-Bastion-Time", "X-Bastion-Received")


def snapshot_json(snap: Snapshot) -> dict[str, Any]:
    """A snapshot as the server returns it."""
    return {
        "name": snap.name,
        "version": snap.version,
        "ref": snap.ref,
        "id": snap.id,
        "created": snap.created.isoformat(),
        "size": snap.size,
        "files": {p: {"size": e.size, "mode": e.mode} for p, e in sorted(snap.files.items())},
        "meta": dict(snap.meta),
        "lineage": list(snap.lineage),
        "labels": list(snap.labels),
    }


class _Refused(Exception):
    def __init__(self, status: int, message: str, *, reason: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class VaultServer:
    """The vault server's aiohttp app over ``vault`` (see the module).

    ``token_key``: the key block 0 of every token must be signed with (its public half is
    all the server needs). ``state``: the segments' state (revocations, quarantines).
    ``namespaces``: each segment's name prefixes; a name outside them is refused even
    to a token that names it. ``max_upload``: the largest upload, in bytes.
    ``clock``: the server's wall clock (token expiry; the vault's own clock stamps
    snapshots). ``spool_dir``: where an upload's files bigger than 256 MiB wait for
    their commit (smaller ones stream through a 256 MiB window in memory).
    ``max_uploads``: uploads committed at once (more wait their turn).
    ``stall_s``: an upload that sends nothing for this long is dropped (408), so a
    stalled client cannot hold a slot.
    """

    def __init__(
        self,
        vault: Vault,
        *,
        token_key: TokenKey,
        state: SegmentState,
        namespaces: Mapping[str, tuple[str, ...]],
        max_upload: int = DEFAULT_MAX_UPLOAD,
        clock: Callable[[], float] = time.time,
        spool_dir: Path | None = None,
        events: Emit = NO_EVENTS,
        max_uploads: int = 4,
        stall_s: float = 30.0,
    ) -> None:
        self.vault = vault
        if vault.ingest_processes is None:
            # Uploads are stored in threads, except one of PROCESS_FILES small files or
            # more (``_append``): those go whole to the vault's worker processes, their
            # received bytes through the workers' pipes, since Python's per-object work
            # on thousands of files in threads shares one GIL with the event loop that
            # receives them (1 GiB of the benchmark's data set, 2 cores: 0.57x of a
            # local commit in threads, 0.8-0.9x with processes; benchmarks/segments.py).
            vault.ingest_processes = False
        self.root = token_key.public
        self.state = state
        self.revocations = RevocationList(state)
        self.namespaces = {k: tuple(v) for k, v in namespaces.items()}
        self.max_upload = max_upload
        self.clock = clock
        self.spool_dir = spool_dir or (state.dir / "spool")
        self.events = events
        self.refused = 0
        self.commits = 0
        # Uploads in progress, each with its commit on its own thread (waiting for the
        # bytes as they arrive): a few at once, on a pool of their own, so slow uploads
        # never hold the threads reads use; more wait their turn before their body is read.
        self._uploads = asyncio.Semaphore(max_uploads)
        self._commit_pool = ThreadPoolExecutor(max_uploads, thread_name_prefix="vault-commit")
        self.stall_s = stall_s
        self.app = web.Application(client_max_size=_MAX_HEADER, middlewares=[self._errors])
        self.app.on_cleanup.append(self._close)
        r = self.app.router
        r.add_get("/healthz", self._healthz)
        r.add_get("/v1/segments/{segment}/names", self._names)
        r.add_get("/v1/segments/{segment}/snapshot", self._snapshot)
        r.add_get("/v1/segments/{segment}/versions", self._versions)
        r.add_get("/v1/segments/{segment}/file", self._file)
        r.add_post("/v1/segments/{segment}/snapshots", self._append)
        for method in ("PUT", "DELETE", "PATCH"):
            r.add_route(method, "/{tail:.*}", self._append_only)

    # ----------------------------------------------------------------- plumbing

    async def _close(self, _app: web.Application) -> None:
        self._commit_pool.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def _errors(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        try:
            return await handler(request)
        except _Refused as exc:
            return self._refuse(request, exc.status, str(exc), exc.reason)
        except TokenError as exc:
            return self._refuse(request, 401, str(exc), "token")
        except TokenRefused as exc:
            return self._refuse(request, 403, str(exc), "scope")
        except InvalidNameError as exc:
            return self._refuse(request, 400, str(exc), "name")
        except NotFoundError as exc:
            return _json({"error": str(exc)}, 404)
        except IntegrityError as exc:
            return self._refuse(
                request, 422, f"{exc} (not served: it fails verification)", "integrity"
            )
        except UsageError as exc:
            return self._refuse(request, 400, str(exc), "usage")
        except UnavailableError as exc:
            return _json({"error": f"{exc} (try again later)"}, 503)
        except web.HTTPException as exc:
            if exc.status >= 400:
                return _json(
                    {"error": f"{exc.reason}: {request.method} {request.path}"}, exc.status
                )
            raise

    def _refuse(self, request: web.Request, status: int, message: str, reason: str) -> web.Response:
        self.refused += 1
        self.events.emit(
            ek.VAULT_SERVER_REFUSED,
            "vault-server",
            status=status,
            reason=reason,
            segment=request.match_info.get("segment", ""),
            method=request.method,
            route=request.path,
        )
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'} if status == 401 else None
        return _json({"error": message, "reason": reason}, status, headers=headers)

    def _scope(self, request: web.Request) -> Scope:
        header = request.headers.get("Authorization")
        if header is None:
            elsewhere = [
                h
                for h, v in request.headers.items()
                if PREFIX in v and h.lower() != "authorization"
            ]
            if "token" in request.query or "access_token" in request.query:
                elsewhere.append("the query string")
            if elsewhere:
                raise _Refused(
                    401,
                    f"the token came in {', '.join(elsewhere)}; send it as "
                    "Authorization: Bearer <token> (nowhere else: headers and query strings "
                    "end up in logs)",
                    reason="token-header",
                )
            raise _Refused(
                401,
                "this vault server needs a token: send Authorization: Bearer <token> "
                "(mint one with `bastion segment token SEGMENT`)",
                reason="no-token",
            )
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _Refused(
                401,
                "Authorization must be 'Bearer <token>' (the scheme was "
                f"{scheme[:16]!r}{'' if value else ', with no token'})",
                reason="token-header",
            )
        return verify(value.strip(), self.root, now=self.clock(), revoked=self.revocations.why)

    def _segment(self, request: web.Request) -> str:
        segment = request.match_info["segment"]
        if segment not in self.namespaces:
            raise _Refused(
                404,
                f"no segment {segment!r} on this vault server (segments: "
                f"{', '.join(sorted(self.namespaces)) or 'none declared'})",
                reason="segment",
            )
        return segment

    def _authorize(self, request: web.Request, op: str, name: str) -> Scope:
        segment = self._segment(request)
        scope = self._scope(request)
        scope.require(op, segment, name)
        if not any(name.startswith(p) for p in self.namespaces[segment]):
            raise TokenRefused(
                f"{name!r} is outside the namespace of segment {segment!r} "
                f"({', '.join(self.namespaces[segment])})"
            )
        return scope

    @staticmethod
    def _query(request: web.Request, key: str) -> str:
        value = request.query.get(key)
        if not value:
            raise UsageError(f"{request.path}: give ?{key}=")
        return value

    # ------------------------------------------------------------------- routes

    async def _healthz(self, _request: web.Request) -> web.Response:
        return _json({"ok": True})

    async def _append_only(self, request: web.Request) -> web.Response:
        raise _Refused(
            403,
            f"{request.method} is refused: this vault server is append-only (tokens read "
            "and append; deleting or replacing a version needs the vault's admin key: run "
            "`bastion vault gc` on the vault's host)",
            reason="append-only",
        )

    async def _names(self, request: web.Request) -> web.Response:
        prefix = request.query.get("prefix", "")
        scope = self._authorize(request, "read", prefix) if prefix else None
        if scope is None:
            segment = self._segment(request)
            scope = self._scope(request)
            scope.require("read", segment, scope.prefixes[0])
        names = await asyncio.to_thread(self.vault.names, prefix)
        space = self.namespaces[request.match_info["segment"]]
        visible = [
            n
            for n in names
            if any(n.startswith(p) for p in scope.prefixes) and any(n.startswith(p) for p in space)
        ]
        return _json({"names": visible})

    async def _snapshot(self, request: web.Request) -> web.Response:
        ref = self._query(request, "ref")
        parsed = parse_ref(ref)
        self._authorize(request, "read", parsed.name)
        snap = await asyncio.to_thread(self.vault.snapshot, ref)
        return _json(snapshot_json(snap))

    async def _versions(self, request: web.Request) -> web.Response:
        name = parse_name(self._query(request, "name"))
        self._authorize(request, "read", name)
        snaps = await asyncio.to_thread(self.vault.versions, name)
        return _json({"versions": [snapshot_json(s) for s in snaps]})

    async def _file(self, request: web.Request) -> web.Response:
        ref = self._query(request, "ref")
        path = self._query(request, "path")
        parsed = parse_ref(ref)
        self._authorize(request, "read", parsed.name)
        check_path(path)
        data = await asyncio.to_thread(self.vault.read, ref, path)
        return web.Response(body=data, content_type="application/octet-stream")

    async def _append(self, request: web.Request) -> web.Response:
        received = self.clock()
        name = parse_name(self._query(request, "name"))
        self._authorize(request, "append", name)
        for header in _TIME_HEADERS:
            if header in request.headers:
                raise _Refused(
                    400,
                    f"{header} is refused: the server records when it received a snapshot; "
                    "a client's time is never stored (drop the header)",
                    reason="client-time",
                )
        if request.content_type in ("application/vnd.bastion.snapshot+json",):
            raise _Refused(
                400,
                "a snapshot document is refused: send files, and the server makes and signs "
                "the snapshot (it holds the only signing key)",
                reason="document",
            )
        files, meta, lineage, options = await self._header(request)
        total = sum(size for _, size in files)
        if sum(1 for _, size in files if size < WHOLE_BELOW) >= PROCESS_FILES:
            options["processes"] = True  # see __init__
        if request.content_length is not None and request.content_length > (
            self.max_upload + _MAX_HEADER
        ):
            raise _Refused(413, self._too_big(request.content_length), reason="oversize")
        if total > self.max_upload:
            raise _Refused(413, self._too_big(total), reason="oversize")
        spool = self.spool_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        meta = {**meta, "bastion.received": _iso(received)}
        # The commit starts now and takes each file as it arrives (``_Arriving`` blocks
        # its reader until then), so chunking, hashing and writing overlap the transfer.
        loop = asyncio.get_running_loop()
        arriving = _Arriving([p for p, _ in files], loop)
        async with self._uploads:
            commit = loop.run_in_executor(
                self._commit_pool,
                functools.partial(
                    self.vault.commit, name, arriving, meta=meta, lineage=lineage, **options
                ),
            )
            try:
                try:
                    await self._spool(request, files, spool, arriving)
                except BaseException as exc:
                    arriving.abort(exc)
                    with contextlib.suppress(BaseException):
                        await commit  # it stops at the first file that will never come
                    raise
                snap = await commit
            finally:
                await asyncio.to_thread(shutil.rmtree, spool, True)
        self.commits += 1
        return _json(snapshot_json(snap), 201)

    def _too_big(self, size: int) -> str:
        return (
            f"upload of {size} bytes is over this server's limit of {self.max_upload} bytes "
            "(split it into several snapshots, or raise `bastion vault serve --max-upload`)"
        )

    async def _header(
        self, request: web.Request
    ) -> tuple[list[tuple[str, int]], dict[str, Any], list[str], dict[str, Any]]:
        try:
            line = await request.content.readuntil(b"\n")
        except ValueError:
            raise _Refused(
                400, f"the upload's header line is over {_MAX_HEADER} bytes", reason="header"
            ) from None
        except asyncio.IncompleteReadError:
            raise _Refused(400, "the upload has no header line", reason="header") from None
        if not line.endswith(b"\n"):
            raise _Refused(400, "the upload has no header line", reason="header")
        try:
            head = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            raise _Refused(400, "the upload's header line is not JSON", reason="header") from None
        if not isinstance(head, dict):
            raise _Refused(400, "the upload's header is not a JSON object", reason="header")
        raw_files = head.get("files")
        if not isinstance(raw_files, list) or not 0 < len(raw_files) <= _MAX_FILES:
            raise _Refused(
                400, f"header.files must list 1 to {_MAX_FILES} [path, size]", reason="header"
            )
        files: list[tuple[str, int]] = []
        seen: set[str] = set()
        for item in raw_files:
            if (
                not isinstance(item, list)
                or len(item) != 2
                or not isinstance(item[0], str)
                or type(item[1]) is not int
                or item[1] < 0
            ):
                raise _Refused(400, "header.files: each is [path, size]", reason="header")
            check_path(item[0])
            if item[0] in seen:
                raise _Refused(400, f"header.files: {item[0]!r} twice", reason="header")
            if files and item[0] < files[-1][0]:
                raise _Refused(
                    400,
                    f"header.files: {item[0]!r} after {files[-1][0]!r}; list (and send) the "
                    "files in sorted order, as VaultClient does",
                    reason="header",
                )
            seen.add(item[0])
            files.append((item[0], item[1]))
        meta = head.get("meta", {})
        if not isinstance(meta, dict):
            raise _Refused(400, "header.meta must be an object", reason="header")
        forged = sorted(k for k in meta if str(k).lower() in _TIME_KEYS or k.startswith("bastion."))
        if forged:
            raise _Refused(
                400,
                f"meta.{forged[0]} is refused: the server records when it received a "
                "snapshot and retention uses only that (drop the key)",
                reason="client-time",
            )
        lineage = head.get("lineage", [])
        if not isinstance(lineage, list) or not all(isinstance(x, str) for x in lineage):
            raise _Refused(400, "header.lineage must be a list of refs", reason="header")
        for ref in lineage:
            parse_ref(ref)
        options: dict[str, Any] = {}
        if "compress" in head:
            if not isinstance(head["compress"], bool):
                raise _Refused(400, "header.compress must be true or false", reason="header")
            options["compress"] = head["compress"]
        if "chunk_size" in head:
            size = head["chunk_size"]
            if type(size) is not int or size % 4096 or not 64 << 10 <= size <= 64 << 20:
                raise _Refused(
                    400,
                    "header.chunk_size must be a multiple of 4096 from 64 KiB to 64 MiB",
                    reason="header",
                )
            options["chunk_size"] = size
        return files, meta, lineage, options

    async def _spool(
        self,
        request: web.Request,
        files: list[tuple[str, int]],
        spool: Path,
        out: _Arriving,
    ) -> None:
        content = request.content
        transport = request.transport
        if transport is not None and isinstance(getattr(transport, "max_size", None), int):
            # asyncio's socket transport reads 256 KiB per recv; each recv gives the GIL up
            # and waits to take it back from the commit's threads, so bigger reads (what the
            # socket holds, up to 4 MiB) halve the event loop's time in an upload. An
            # attribute of asyncio's selector transport; other transports keep their own.
            transport.max_size = max(transport.max_size, _RECV_SIZE)  # type: ignore[attr-defined]
        # The last file is handed over only once the body is known to end there: until
        # then the commit cannot finish, so an upload longer than declared publishes
        # nothing.
        pending: tuple[str, FileSource, int] | None = None
        for index, (path, size) in enumerate(files):
            if pending is not None:
                out.arrived(*pending)
                pending = None
            if size <= _MEMORY_SPOOL:
                # a window of received bytes the commit has not taken yet: the transfer
                # waits for the commit, so memory stays bounded whatever the upload's size
                await out.room(size, _MEMORY_SPOOL)
                buf = bytearray(size)
                view = memoryview(buf)
                got = 0
                while got < size:
                    chunk = await self._read(content, min(_READ_CHUNK, size - got))
                    if not chunk:
                        raise self._short(path, size, got)
                    view[got : got + len(chunk)] = chunk
                    got += len(chunk)
                pending = (path, buf, size)
                continue
            # a file bigger than the window waits on the server's disk
            os.makedirs(spool, mode=0o700, exist_ok=True)  # noqa: PTH103 (ASYNC240 bans Path I/O)
            target = spool / str(index)  # never the client's path: no traversal on disk
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                got = 0
                while got < size:
                    chunk = await self._read(content, min(_READ_CHUNK, size - got))
                    if not chunk:
                        raise self._short(path, size, got)
                    view = memoryview(chunk)
                    while view:
                        view = view[os.write(fd, view) :]
                    got += len(chunk)
            finally:
                os.close(fd)
            pending = (path, target, 0)
        if await self._read(content, 1):
            raise _Refused(
                400,
                "the upload is longer than its header declares (each file's bytes, in order, "
                "then nothing)",
                reason="body",
            )
        if pending is not None:
            out.arrived(*pending)

    async def _read(self, content: StreamReader, n: int) -> bytes:
        try:
            async with asyncio.timeout(self.stall_s):  # no task per read, as wait_for makes
                return await content.read(n)
        except TimeoutError:
            raise _Refused(
                408,
                f"the upload sent nothing for {self.stall_s:g} s; send it again",
                reason="stalled",
            ) from None

    @staticmethod
    def _short(path: str, size: int, got: int) -> _Refused:
        return _Refused(
            400, f"the upload ended inside {path!r} ({got} of {size} bytes)", reason="body"
        )


class _Arriving(Mapping[str, FileSource]):
    """An upload's files as the commit reads them: every declared path is a key at once,
    and reading one waits until the server has received it (or the upload failed). The
    commit reads each file once, in sorted order (the upload's order); the reference is
    dropped then, so the bytes go as soon as the commit has stored them, and ``room``
    lets the transfer wait while too many received bytes are not taken yet."""

    def __init__(self, paths: list[str], loop: asyncio.AbstractEventLoop) -> None:
        self._paths = list(paths)
        self._known = frozenset(paths)
        self._got: dict[str, tuple[FileSource, int]] = {}
        self._taken: set[str] = set()
        self._kept: dict[str, FileSource] = {}
        self._kept_bytes = 0
        self._failed: BaseException | None = None
        self._cond = threading.Condition()
        self._loop = loop
        self._freed = asyncio.Event()
        # whether the transfer waits in ``room``: only then does the commit wake the loop
        # (a wake-up per file cost the commit's thread a GIL hand-off each, about a third
        # of a 256 MiB upload's time under load: py-spy, benchmarks/segments.py)
        self._waiting = False
        self.held = 0  # bytes received in memory and not taken by the commit yet

    def arrived(self, path: str, source: FileSource, size: int) -> None:
        with self._cond:
            self._got[path] = (source, size)
            self.held += size
            self._cond.notify_all()

    def abort(self, exc: BaseException) -> None:
        with self._cond:
            self._failed = exc
            self._cond.notify_all()

    async def room(self, size: int, window: int) -> None:
        """Wait until ``size`` more bytes fit in ``window`` (at once when none are held:
        one file may fill the window alone)."""
        while True:
            with self._cond:
                if self.held == 0 or self.held + size <= window:
                    return
                self._freed.clear()
                self._waiting = True
            await self._freed.wait()

    def __getitem__(self, path: str) -> FileSource:
        with self._cond:
            if path not in self._known:
                raise KeyError(path)
            if path in self._kept:
                return self._kept[path]
            if path in self._taken:
                raise RuntimeError(f"the commit read {path!r} twice (the server hands it once)")
            while path not in self._got:
                if self._failed is not None:
                    raise UsageError(f"the upload stopped before {path!r} arrived")
                self._cond.wait()
            source, size = self._got.pop(path)
            self._taken.add(path)
            self.held -= size
            # The vault looks at a commit's first files twice when they may make one
            # small batch (``_write._one_batch``: up to BATCH_COUNT files, BATCH_BYTES):
            # those are kept for the second look; every later file is handed over once.
            if len(self._kept) < BATCH_COUNT and self._kept_bytes <= BATCH_BYTES:
                self._kept[path] = source
                self._kept_bytes += size
            wake, self._waiting = self._waiting, False
        if wake:
            self._loop.call_soon_threadsafe(self._freed.set)
        return source

    def __contains__(self, path: object) -> bool:
        return path in self._known  # never wait for the bytes to answer this

    def __iter__(self) -> Iterator[str]:
        return iter(self._paths)

    def __len__(self) -> int:
        return len(self._paths)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat()


def _json(
    body: dict[str, Any], status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


def from_manifest(
    manifest: Manifest,
    *,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    events: Emit | None = None,
) -> VaultServer:
    """The vault server of ``manifest``: its vault (with the signing key), its token key
    (``<state_dir>/keys/token.key``, made the first time), its segments' namespaces and
    state."""
    from bastion.segment import namespaces, token_key_path

    vault = Vault.from_manifest(manifest)
    return VaultServer(
        vault,
        token_key=TokenKey.load_or_make(token_key_path(manifest)),
        state=SegmentState(Path(manifest.state_dir)),
        namespaces=namespaces(manifest),
        max_upload=max_upload,
        events=events if events is not None else NO_EVENTS,
    )


async def serve(
    manifest: Manifest,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    max_upload: int = DEFAULT_MAX_UPLOAD,
    ready: Callable[[int], None] | None = None,
) -> None:
    """Run the manifest's vault server on ``host:port`` until cancelled; ``ready(port)``
    once it listens."""
    from bastion.aio import serve_app
    from bastion.events import EventWriter

    sink = EventWriter.in_state_dir(manifest.state_dir)
    server = await asyncio.to_thread(from_manifest, manifest, max_upload=max_upload, events=sink)
    runner, bound = await serve_app(server.app, host, port, backlog=1024)
    try:
        if ready is not None:
            ready(bound)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        sink.close()
