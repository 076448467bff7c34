"""Bastion's Chaos Toolkit probes: what a steady-state hypothesis or an abort condition reads.

Owns: small, side-effect-free checks (``process_alive``, ``http_ok``, ``tcp_ok``,
``file_exists``, ``count_files``, ``event_count``, ``load_failures``) and the file
baseline pair ``snapshot_files`` / ``files_lost`` whose count is the RPO of a storage or
ransomware drill (emitted as ``drill.files.checked`` with ``files_lost``).

Must never: change the system it observes (``snapshot_files`` only reads), or read a
path outside the drill's scope.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import time
import urllib.parse
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.drill.context import current
from bastion.errors import UsageError

__all__ = [
    "chat_ok",
    "count_files",
    "event_count",
    "file_exists",
    "files_lost",
    "http_ok",
    "load_failures",
    "process_alive",
    "recent_event",
    "snapshot_files",
    "tcp_ok",
    "wait_for_event",
]


def process_alive(name: str) -> bool:
    """True while the process the drill started as ``name`` runs (not stopped by SIGSTOP
    counts as running: a hang is for the supervisor's heartbeat to find)."""
    return current().process(name).poll() is None


def http_ok(url: str, timeout_s: float = 1.0, expect_status: int = 200) -> bool:
    """True when ``GET url`` (on 127.0.0.1) answers ``expect_status`` within ``timeout_s``."""
    target = urllib.parse.urlsplit(url)
    if target.hostname not in ("127.0.0.1", "localhost"):
        raise UsageError(f"http_ok: {url} is not on 127.0.0.1")
    conn = http.client.HTTPConnection("127.0.0.1", target.port or 80, timeout=timeout_s)
    try:
        conn.request("GET", target.path or "/")
        status = conn.getresponse().status
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()
    return status == expect_status


def chat_ok(
    url: str,
    timeout_s: float = 2.0,
    model: str = "any",
    content: str = "steady?",
    messages: list[dict[str, Any]] | None = None,
) -> bool:
    """True when an OpenAI-compatible ``POST {url}/v1/chat/completions`` answers 200 with a
    parseable completion within ``timeout_s`` (a gateway's or a vendor's steady state).

    ``content`` is the user message sent (or ``messages``, the whole conversation): give
    one the model behind ``url`` accepts. The example's digits model, for one, reads 64
    comma-separated pixel values and refuses anything else with a 400, which counts as
    not steady."""
    target = urllib.parse.urlsplit(url)
    if target.hostname not in ("127.0.0.1", "localhost"):
        raise UsageError(f"chat_ok: {url} is not on 127.0.0.1")
    conversation = messages if messages is not None else [{"role": "user", "content": content}]
    body = json.dumps({"model": model, "messages": conversation})
    path = target.path.rstrip("/") + "/v1/chat/completions"
    conn = http.client.HTTPConnection("127.0.0.1", target.port or 80, timeout=timeout_s)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        payload = resp.read()
        if resp.status != 200:
            return False
        return bool(json.loads(payload)["choices"][0]["message"]["content"] is not None)
    except (OSError, http.client.HTTPException, ValueError, KeyError, IndexError, TypeError):
        return False
    finally:
        conn.close()


def tcp_ok(port: int, timeout_s: float = 1.0, payload: str = "ping\n") -> bool:
    """True when a TCP round trip (send ``payload``, read an answer) to the port works."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(payload.encode())
            return bool(sock.recv(1024))
    except OSError:
        return False


def file_exists(path: str) -> bool:
    ctx = current()
    return ctx.scope.check_path(ctx.resolve(path), fault="probe").exists()


def count_files(root: str, pattern: str = "**/*") -> int:
    """How many files under ``root`` match ``pattern`` (e.g. ``**/*.locked``)."""
    ctx = current()
    base = ctx.scope.check_path(ctx.resolve(root), fault="probe")
    return sum(1 for p in base.glob(pattern) if p.is_file())


def event_count(kind: str) -> int:
    """Events of ``kind`` (``vault.*`` globs work) since this drill started."""
    ctx = current()
    return len(ctx.events.query(kind=kind, after_id=ctx.started_event_id))


def recent_event(kind: str, within_s: float = 5.0) -> bool:
    """True when an event of ``kind`` was recorded in the last ``within_s`` seconds: the
    steady state of something that should keep reporting (training's checkpoints, a
    heartbeat)."""
    ctx = current()
    latest = ctx.events.query(kind=kind, after_id=ctx.started_event_id)
    return bool(latest) and (time.monotonic_ns() - latest[-1].mono_ns) / 1e9 <= within_s


def wait_for_event(kind: str, timeout_s: float = 30.0) -> bool:
    """Wait (polling the log, with a deadline) for an event of ``kind`` after the latest
    fault injection (or the drill's start); True if it came. For a method step that
    waits on the system's own response (``train.restored``, ``vault.guard.restored``)."""
    ctx = current()
    injected = ctx.events.query(kind="drill.fault.injected", after_id=ctx.started_event_id)
    after = injected[-1].id if injected else ctx.started_event_id
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not ctx.stop.is_set():
        if ctx.events.query(kind=kind, after_id=after):
            return True
        ctx.stop.wait(0.05)
    return bool(ctx.events.query(kind=kind, after_id=after))


def load_failures(name: str = "load") -> int:
    """Failed requests so far of the background load called ``name``."""
    stats = current().load.get(name)
    return 0 if stats is None else int(stats["requests_failed"])


def _digests(root: Path, pattern: str) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.blake2b(p.read_bytes(), digest_size=16).hexdigest()
        for p in sorted(root.glob(pattern))
        if p.is_file()
    }


def snapshot_files(root: str, name: str = "files", pattern: str = "**/*") -> int:
    """Record the hash of every file under ``root``, for ``files_lost`` to compare with."""
    ctx = current()
    base = ctx.scope.check_path(ctx.resolve(root), fault="probe")
    ctx.baselines[name] = _digests(base, pattern)
    ctx.baselines[name]["\0root"] = str(base)
    ctx.baselines[name]["\0pattern"] = pattern
    return len(ctx.baselines[name]) - 2


def files_lost(name: str = "files") -> int:
    """Files in the ``snapshot_files`` baseline that are now missing or changed. Emits
    ``drill.files.checked`` (``files_lost``, ``files``) so the RPO is read from events."""
    ctx = current()
    if name not in ctx.baselines:
        raise UsageError(f"files_lost: no snapshot named {name!r}; call snapshot_files first")
    baseline = dict(ctx.baselines[name])
    root, pattern = Path(baseline.pop("\0root")), baseline.pop("\0pattern")
    now = _digests(root, pattern)
    lost = sum(1 for rel, digest in baseline.items() if now.get(rel) != digest)
    ctx.events.emit(
        ek.DRILL_FILES_CHECKED, subject=name, files_lost=lost, files=len(baseline), root=str(root)
    )
    return lost
