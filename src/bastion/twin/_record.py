"""Recorded load: production's requests written down by shape and time, replayed on a twin.

Owns: ``Recorder``, a recording reverse proxy put in front of a gateway (``bastion twin
record``), the load file it writes, ``read_recording``, and ``replay_recorded`` (``bastion
twin load --replay FILE [--speed N]``), which sends the same requests, in the same order, at
the recorded pace (or ``speed`` times faster), open loop, to the twin's gateway.

The file is JSON lines: a header ``{"format": "bastion.load/1", ...}``, then one row per
request: ``t`` (seconds since the recording began), ``method``, ``path`` (never the query
string), ``bytes`` (the request body's size), and what the body's shape says: ``model``,
``stream``, ``messages`` (how many), ``inputs`` (how many numbers a ``/v1/predict``
carried); and the answer's ``status`` and ``ms``. No header is ever recorded (the
client's key is in one). Bodies are recorded only when asked (``bodies=True``), and then
passed through ``bastion.events.redact`` (keys, tokens, credentials); they still hold what
users wrote, so ask only where that may be kept. Without bodies, replay makes a body of
the recorded shape and size (seeded filler text and numbers).

A proxy of our own rather than a hook in the gateway: it needs no change to the serving
path, it records any HTTP service, and it is some forty lines of aiohttp (mitmproxy does
far more and would be a heavy dependency for this).

Must never: record a header, a query string or (unless asked) a body; change a request
or an answer it forwards.
"""

from __future__ import annotations

import json
import random
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import UsageError

__all__ = ["FORMAT", "Recorder", "Recording", "read_recording", "replay_recorded", "shape_of"]

FORMAT = "bastion.load/1"
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailers",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}


def shape_of(path: str, body: bytes) -> dict[str, Any]:
    """What a request body's shape says, never its content: model, stream, how many
    messages, how many inputs."""
    out: dict[str, Any] = {"bytes": len(body)}
    try:
        doc = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError):
        return out
    if not isinstance(doc, dict):
        return out
    if isinstance(doc.get("model"), str):
        out["model"] = doc["model"]
    if isinstance(doc.get("stream"), bool):
        out["stream"] = doc["stream"]
    if isinstance(doc.get("messages"), list):
        out["messages"] = len(doc["messages"])
    if isinstance(doc.get("inputs"), list):
        out["inputs"] = len(doc["inputs"])
    return out


class Recorder:
    """A recording reverse proxy: every request to ``listen`` goes to ``upstream``
    (``http://host:port``) unchanged, and one row per request is appended to ``path``."""

    def __init__(self, upstream: str, path: str | Path, *, bodies: bool = False) -> None:
        if not upstream.startswith(("http://", "https://")):
            upstream = "http://" + upstream
        self.upstream = upstream.rstrip("/")
        self.path = Path(path)
        self.bodies = bodies
        self.rows = 0
        self._lock = threading.Lock()
        self._start = time.monotonic()
        self._out: Any = None
        self._thread: Any = None
        self._runner: Any = None
        self._session: Any = None
        self.url = ""

    def _write(self, row: dict[str, Any]) -> None:
        with self._lock:
            self._out.write(json.dumps(row, sort_keys=True) + "\n")
            self._out.flush()
            self.rows += 1

    async def _proxy(self, request: Any) -> Any:
        import aiohttp
        from aiohttp import web

        from bastion.events import redact

        at = time.monotonic() - self._start
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        row: dict[str, Any] = {"t": round(at, 6), "method": request.method, "path": request.path}
        row.update(shape_of(request.path, body))
        if self.bodies and body:
            try:
                row["body"] = redact(json.loads(body))
            except (ValueError, UnicodeDecodeError):
                row["body_note"] = "not JSON: not recorded"
        t0 = time.perf_counter()
        try:
            async with self._session.request(
                request.method,
                self.upstream + request.rel_url.path_qs,
                data=body or None,
                headers=headers,
                allow_redirects=False,
            ) as answer:
                payload = await answer.read()
                status = answer.status
                keep = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP}
        except (aiohttp.ClientError, TimeoutError) as exc:
            row.update(status=502, ms=round((time.perf_counter() - t0) * 1000, 3))
            self._write(row)
            return web.json_response(
                {"error": {"message": f"recorder: upstream {self.upstream}: {exc}"}}, status=502
            )
        row.update(status=status, ms=round((time.perf_counter() - t0) * 1000, 3))
        self._write(row)
        return web.Response(body=payload, status=status, headers=keep)

    def start(self, listen: str = "127.0.0.1:0") -> Recorder:
        """Listen (``host:port``; port 0 takes a free one, see ``url``) and record."""
        import aiohttp
        from aiohttp import web

        from bastion.aio import LoopThread, serve_app

        host, _, port = listen.rpartition(":")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._out = self.path.open("w", encoding="utf-8")
        self.path.chmod(0o600)
        header = {
            "format": FORMAT,
            "upstream": self.upstream,
            "bodies": self.bodies,
            "recorded_at": time.time(),
        }
        self._out.write(json.dumps(header, sort_keys=True) + "\n")
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._proxy)

        async def setup() -> Any:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=300), auto_decompress=False
            )
            return await serve_app(app, host or "127.0.0.1", int(port or 0))

        self._thread = LoopThread("bastion-recorder")
        started = self._thread.start(setup())
        assert started is not None
        self._runner, bound = started
        self.url = f"http://{host or '127.0.0.1'}:{bound}"
        self._start = time.monotonic()
        return self

    def stop(self) -> None:
        if self._thread is None:
            return

        async def cleanup() -> None:
            await self._runner.cleanup()
            await self._session.close()

        self._thread.stop(cleanup())
        self._thread = None
        self._out.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(frozen=True)
class Recording:
    """A load file read back: its header and its rows, in the order they arrived."""

    header: dict[str, Any]
    rows: tuple[dict[str, Any], ...]


def read_recording(path: str | Path) -> Recording:
    """The load file at ``path``; a located ``UsageError`` if it is not one."""
    where = Path(path)
    try:
        lines = where.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(
            f"twin load: cannot read the recording {where}: {exc.strerror} "
            "(make one with `bastion twin record`)"
        ) from None
    rows: list[dict[str, Any]] = []
    header: dict[str, Any] = {}
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            raise UsageError(f"twin load: {where}:{number}: not JSON") from None
        if number == 1:
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise UsageError(
                    f"twin load: {where}:1: not a load recording (its first line must be "
                    f'{{"format": "{FORMAT}", ...}}; make one with `bastion twin record`)'
                )
            header = doc
            continue
        ok = (
            isinstance(doc, dict)
            and isinstance(doc.get("t"), int | float)
            and isinstance(doc.get("method"), str)
            and isinstance(doc.get("path"), str)
            and str(doc["path"]).startswith("/")
        )
        if not ok:
            raise UsageError(
                f"twin load: {where}:{number}: a row needs t (seconds), method and path "
                "(starting with /)"
            )
        rows.append(doc)
    if not header:
        raise UsageError(f"twin load: {where} is empty (make one with `bastion twin record`)")
    return Recording(header, tuple(rows))


def _filler(rng: random.Random, n: int) -> str:
    words = ("alpha", "bravo", "delta", "echo", "kilo", "lima", "oscar", "sierra", "tango")
    out: list[str] = []
    size = 0
    while size < n:
        word = rng.choice(words)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)[:n]


def body_for(row: dict[str, Any], rng: random.Random) -> bytes:
    """The body to replay for ``row``: the recorded one, else one of its shape and size."""
    if isinstance(row.get("body"), dict | list):
        return json.dumps(row["body"]).encode()
    size = int(row.get("bytes") or 0)
    if row.get("method", "POST").upper() in ("GET", "HEAD", "DELETE") and not size:
        return b""
    doc: dict[str, Any] = {}
    if "model" in row:
        doc["model"] = row["model"]
    if "stream" in row:
        doc["stream"] = row["stream"]
    if "inputs" in row:
        doc["inputs"] = [round(rng.random() * 16, 3) for _ in range(int(row["inputs"]))]
        return json.dumps(doc).encode()
    if "messages" in row:
        doc["messages"] = [{"role": "user", "content": ""} for _ in range(int(row["messages"]))]
    elif str(row["path"]).endswith("/embeddings"):
        doc["input"] = ""
    else:
        doc["prompt"] = ""
    room = size - len(json.dumps(doc).encode())
    if room > 0:
        text = _filler(rng, room)
        if doc.get("messages"):
            doc["messages"][-1]["content"] = text
        elif "input" in doc:
            doc["input"] = text
        elif "prompt" in doc:
            doc["prompt"] = text
    return json.dumps(doc).encode()


def replay_recorded(
    listen: str,
    recording: Recording | str | Path,
    *,
    speed: float = 1.0,
    seed: int = 0,
    timeout_s: float = 10.0,
    workers: int | None = None,
) -> Any:
    """Send the recording's requests to ``listen`` (``host:port``), in order, each at its
    recorded time divided by ``speed`` (open loop; ``workers=1`` keeps their order
    strictly). Returns ``LoadStatistics``."""
    from bastion.twin._load import Planned, open_loop

    if speed <= 0:
        raise UsageError("twin load: --speed must be positive (1 is the recorded pace)")
    if not isinstance(recording, Recording):
        recording = read_recording(recording)
    if not recording.rows:
        raise UsageError("twin load: the recording has no requests to replay")
    rng = random.Random(seed)
    first = float(recording.rows[0]["t"])
    plan = [
        Planned(
            due_s=(float(row["t"]) - first) / speed,
            method=str(row["method"]).upper(),
            path=str(row["path"]),
            body=body_for(row, rng),
        )
        for row in recording.rows
    ]
    rate = len(plan) / max(plan[-1].due_s, 1e-3)
    return open_loop(listen, plan, rate=rate, timeout_s=timeout_s, workers=workers)
