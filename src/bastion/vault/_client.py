"""The vault server's client: what a job or a replica holds instead of the signing key.

Owns: ``VaultClient`` (``commit``, ``snapshot``, ``versions``, ``names``, ``read``, the
calls ``Vault`` has for them, over ``http.client`` on one kept-alive connection per
thread), streaming an upload in the server's framing (a JSON header line, then each
file's bytes) with no copy of a file, and turning the server's 4xx answers back into
Bastion's errors (401/403 ``UsageError`` subclasses from ``bastion.segment``, 404
``NotFoundError``, 413/400 ``UsageError``, 422 ``IntegrityError``).

``from_env()``: ``BASTION_VAULT_URL`` and either ``BASTION_VAULT_TOKEN_FILE`` (what a
supervised job gets: a 0600 file its supervisor replaces with a fresh token before the
old one expires; the client re-reads it when it changes, so a job outlives its
tokens without a restart) or ``BASTION_VAULT_TOKEN`` (a token minted by hand). The token
names its segment.

Must never: put the token anywhere but the ``Authorization`` header, or into an error.
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from bastion.errors import IntegrityError, NotFoundError, UnavailableError, UsageError
from bastion.segment._token import TokenError, TokenRefused, inspect_token
from bastion.vault._ingest import FileSource

__all__ = ["ENV_TOKEN", "ENV_TOKEN_FILE", "ENV_URL", "VaultClient", "read_token_file"]


def read_token_file(path: Path) -> str:
    """The token in ``path`` (written whole by a rename, so never half a token)."""
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UsageError(
            f"{ENV_TOKEN_FILE} {path}: {exc.strerror or exc}; the job's supervisor writes "
            "it (is the supervisor running?)"
        ) from None
    if not token:
        raise UsageError(f"{ENV_TOKEN_FILE} {path} is empty")
    return token


ENV_URL = "BASTION_VAULT_URL"
ENV_TOKEN = "BASTION_VAULT_TOKEN"  # noqa: S105 (a variable name, not a secret)
ENV_TOKEN_FILE = "BASTION_VAULT_TOKEN_FILE"  # noqa: S105 (a variable name, not a secret)
_SEND = 1 << 20


class VaultClient:
    """A client of one vault server, acting in ``segment`` with ``token``.

    ``segment``: by default the one the token names. ``timeout_s``: per socket op.
    ``token_file``: read the token from this file instead (``token`` is then ignored),
    again whenever the file changes (a refreshed token).
    """

    def __init__(
        self,
        url: str,
        token: str = "",
        *,
        segment: str | None = None,
        timeout_s: float = 60.0,
        token_file: Path | None = None,
    ) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme != "http" or not parsed.hostname:
            raise UsageError(f"vault server URL {url!r}: expected http://HOST:PORT")
        self.url = url.rstrip("/")
        self.host = parsed.hostname
        self.port = parsed.port or 80
        self._token_file = token_file
        self._token_stat: tuple[int, int] | None = None
        self._token_lock = threading.Lock()
        if token_file is not None:
            token = self._reread()
        self._token = token
        if segment is None:
            try:
                segment = str(inspect_token(token)[-1]["seg"])
            except TokenError as exc:
                raise UsageError(f"{ENV_TOKEN}: {exc}") from None
        self.segment = segment
        self.timeout_s = timeout_s
        self._local = threading.local()
        self._conns: list[http.client.HTTPConnection] = []
        self._conns_lock = threading.Lock()

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> VaultClient:
        env = os.environ if environ is None else environ
        url, token, file = env.get(ENV_URL), env.get(ENV_TOKEN), env.get(ENV_TOKEN_FILE)
        if not url or not (token or file):
            raise UsageError(
                f"set {ENV_URL} (http://127.0.0.1:PORT of `bastion vault serve`) and "
                f"{ENV_TOKEN} (from `bastion segment token`) or {ENV_TOKEN_FILE}"
            )
        if file:
            return cls(url, token_file=Path(file))
        return cls(url, str(token))

    def _reread(self) -> str:
        assert self._token_file is not None
        token = read_token_file(self._token_file)
        st = self._token_file.stat()
        self._token_stat = (st.st_mtime_ns, st.st_ino)
        return token

    def token(self) -> str:
        """The token to send now: the token file's, re-read when it was replaced (one
        stat per request)."""
        if self._token_file is None:
            return self._token
        with self._token_lock:
            try:
                st = self._token_file.stat()
            except OSError:
                return self._token  # being replaced: the last one read
            if (st.st_mtime_ns, st.st_ino) != self._token_stat:
                self._token = self._reread()
            return self._token

    def __repr__(self) -> str:  # never the token
        return f"VaultClient({self.url!r}, segment={self.segment!r})"

    # ----------------------------------------------------------------- plumbing

    def _conn(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def close(self) -> None:
        """Close every thread's connection."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            conn.close()
        self._local = threading.local()

    def __enter__(self) -> VaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, route: str, **query: str) -> str:
        seg = urllib.parse.quote(self.segment, safe="")
        return f"/v1/segments/{seg}/{route}?{urllib.parse.urlencode(query)}"

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Iterator[bytes | memoryview] | bytes | None = None,
        headers: Mapping[str, str] | None = None,
        length: int | None = None,
    ) -> tuple[int, bytes]:
        """One request; the status and body (raw; ``_check`` maps errors)."""
        sent = {"Authorization": f"Bearer {self.token()}", **(headers or {})}
        if length is not None:
            sent["Content-Length"] = str(length)
        for attempt in (0, 1):
            conn = self._conn()
            try:
                conn.putrequest(method, path, skip_accept_encoding=True)
                for k, v in sent.items():
                    conn.putheader(k, v)
                if body is None:
                    conn.putheader("Content-Length", "0")
                elif isinstance(body, bytes):
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders()
                if isinstance(body, bytes):
                    conn.send(body)
                elif body is not None:
                    for piece in body:
                        conn.send(piece)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (ConnectionError, http.client.HTTPException, OSError) as exc:
                self._drop()
                # a kept-alive connection the server closed: once more, only for a body
                # we can send again (an upload iterator is spent)
                if attempt == 0 and not isinstance(body, Iterator):
                    continue
                raise UnavailableError(f"vault server {self.url}: {exc}") from exc
        raise AssertionError("unreachable")

    @staticmethod
    def _check(status: int, data: bytes) -> Any:
        try:
            doc = json.loads(data) if data else {}
        except ValueError:
            doc = {"error": data[:200].decode(errors="replace")}
        if status < 400:
            return doc
        message = f"vault server: {doc.get('error', status)} (HTTP {status})"
        if status == 401:
            raise TokenError(message)
        if status == 403:
            raise TokenRefused(message)
        if status == 404:
            raise NotFoundError(message)
        if status == 422:
            raise IntegrityError(message)
        if status >= 500:
            raise UnavailableError(message)
        raise UsageError(message)

    # -------------------------------------------------------------------- calls

    def commit(
        self,
        name: str,
        files: Mapping[str, FileSource],
        *,
        meta: Mapping[str, Any] | None = None,
        lineage: Sequence[str] = (),
        compress: bool = True,
        chunk_size: int | None = None,
    ) -> dict[str, Any]:
        """Append ``files`` as the next version of ``name``; the server's snapshot JSON
        (``version``, ``ref``, ``created``: the server's time). ``compress`` and
        ``chunk_size`` as ``Vault.commit``'s."""
        paths = sorted(files)
        sizes = [_size(files[p]) for p in paths]
        header: dict[str, Any] = {
            "files": [[p, s] for p, s in zip(paths, sizes, strict=True)],
            "meta": dict(meta or {}),
            "lineage": list(lineage),
        }
        if not compress:
            header["compress"] = False
        if chunk_size is not None:
            header["chunk_size"] = chunk_size
        head = json.dumps(header).encode() + b"\n"

        def body() -> Iterator[bytes | memoryview]:
            yield head
            for p in paths:
                yield from _pieces(files[p])

        status, data = self.request(
            "POST",
            self._path("snapshots", name=name),
            body=body(),
            length=len(head) + sum(sizes),
            headers={"Content-Type": "application/octet-stream"},
        )
        return dict(self._check(status, data))

    def snapshot(self, ref: str) -> dict[str, Any]:
        return dict(self._check(*self.request("GET", self._path("snapshot", ref=ref))))

    def versions(self, name: str) -> list[dict[str, Any]]:
        return list(
            self._check(*self.request("GET", self._path("versions", name=name)))["versions"]
        )

    def names(self, prefix: str = "") -> list[str]:
        return list(self._check(*self.request("GET", self._path("names", prefix=prefix)))["names"])

    def read(self, ref: str, path: str) -> bytes:
        status, data = self.request("GET", self._path("file", ref=ref, path=path))
        if status >= 400:
            self._check(status, data)
        return data


def _size(source: FileSource) -> int:
    if isinstance(source, Path):
        return source.stat().st_size
    return memoryview(source).nbytes


def _pieces(source: FileSource) -> Iterator[bytes | memoryview]:
    if isinstance(source, Path):
        with source.open("rb", buffering=0) as f:
            while piece := f.read(_SEND):
                yield piece
        return
    view = memoryview(source).cast("B")
    for at in range(0, len(view), _SEND):
        yield view[at : at + _SEND]
