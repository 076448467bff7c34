"""The one append-only event log: every part records what happened here.

Owns: the ``Event`` record, appending, querying and following, and the choice of backend
(``_sqlite``: ``<state_dir>/events.db`` in WAL mode, the embedded default; ``_postgres``:
the database the manifest's ``events: postgresql://...`` names, shared by several hosts).
Reports, SLOs, drills and playbooks are views over this log, so an event carries every
number a report will need.

Must never: rewrite or delete an event; store a secret (values under secret-looking
keys are redacted before they are written); lose an event because another process was
writing at the same time (writers wait on SQLite's lock, or PostgreSQL's advisory lock,
they do not drop); acknowledge (return) an event before it committed.

``mono_ns`` is ``time.monotonic_ns()``: CLOCK_MONOTONIC on Linux is one clock for every
process on the machine, so durations (RTO, detection time) may be taken across processes
of one host. In a PostgreSQL log several hosts share, each event also names its ``host``,
and a difference of ``mono_ns`` holds only between events of the same host; across hosts
only ``ts`` (wall clock) compares. ``mono_ns`` is the one "when" of an event: an emitter
that learns of a thing later than it happened (a writer thread, a fault whose injection
took a while) passes ``at_ns=`` and the row carries that time (and a wall-clock ``ts``
moved back by the same amount). No event keeps a second monotonic time in its data.

Everything that records events takes an ``Emit``: the ``EventLog`` itself, an
``EventWriter`` (a writer thread, for callers that must never wait on the database, such
as the gateway's event loop), or ``NO_EVENTS``. Kinds are the constants of
``bastion.event_kinds``.
"""

from __future__ import annotations

import json
import os
import queue
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from bastion.errors import UsageError

__all__ = [
    "NO_EVENTS",
    "Emit",
    "Event",
    "EventLog",
    "EventWriter",
    "Relay",
    "add_secret",
    "parse_since",
    "redact",
    "url_of",
    "use_postgres",
]


class Emit(Protocol):
    """Anything that records events. ``at_ns`` is when it happened
    (``time.monotonic_ns()``), if not now; ``segment`` defaults to the emitter's own."""

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> object: ...


_SECRET_KEY = re.compile(
    r"(pass(word|wd)?|secret|token|api[_-]?key|authorization|credential|private[_-]?key)",
    re.IGNORECASE,
)
_REDACTED = "***"
# Values that are secrets whatever key they sit under (a command line, a URL, free text):
# known key shapes, credentials in URLs, and the value after a secret-looking flag.
_SECRET_SHAPES = re.compile(
    r"sk-[A-Za-z0-9_-]{16,}"  # OpenAI-style API keys
    r"|\bAKIA[0-9A-Z]{16}\b"  # AWS access key ids
    r"|\bgh[pousr]_[A-Za-z0-9]{20,}"  # GitHub tokens
    r"|\bxox[abprs]-[A-Za-z0-9-]{10,}"  # Slack tokens
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"  # JWTs
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----"
    r"|(?i:bearer)\s+[A-Za-z0-9._~+/=-]{8,}"
)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)[^/\s:@]+:[^/\s@]+@", re.I)
# A flag whose last word names a secret: --api-key, --token, --db-password (not --max-tokens).
_FLAG_WORDS = (
    r"--?(?:[A-Za-z0-9]+[-_])*"
    r"(?:pass(?:word|wd)?|secret|token|api[-_]?key|key|credentials?|private[-_]?key|auth)"
)
_SECRET_FLAG_NAME = re.compile(rf"^{_FLAG_WORDS}$", re.IGNORECASE)
# the same flag inside one string, its value after "=" or spaces: "run --token abc"
_SECRET_FLAG_IN_TEXT = re.compile(
    rf"(?<![\w-])(?P<flag>{_FLAG_WORDS})(?P<sep>=|\s+)(?!-)[^\s\"']+", re.IGNORECASE
)
_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Treat ``value`` as a secret wherever it appears from now on in this process (the
    manifest registers the values of every ``*_env`` variable it names)."""
    if value and len(value) >= 4:
        with _known_lock:
            _known_secrets.add(value)


def _secret_env_values() -> None:
    for name, value in os.environ.items():
        if _SECRET_KEY.search(name):
            add_secret(value)


def _scrub_text(text: str) -> str:
    text = _SECRET_SHAPES.sub(_REDACTED, text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{_REDACTED}@", text)
    text = _SECRET_FLAG_IN_TEXT.sub(lambda m: f"{m.group('flag')}{m.group('sep')}{_REDACTED}", text)
    with _known_lock:
        known = sorted(_known_secrets, key=len, reverse=True)
    for secret in known:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def _redact_list(values: list[Any] | tuple[Any, ...]) -> list[Any]:
    out: list[Any] = []
    hide_next = False
    for v in values:
        if hide_next and isinstance(v, str):
            out.append(_REDACTED)
            hide_next = False
            continue
        hide_next = isinstance(v, str) and bool(_SECRET_FLAG_NAME.match(v))
        out.append(redact(v))
    return out


def redact(value: Any) -> Any:
    """Return ``value`` with secrets replaced by ``***``: every entry under a
    secret-looking key, the argument after a secret-looking flag in a list
    (``["--api-key", "..."]``) or after ``=`` in one string, credentials in URLs, known
    key shapes (``sk-...``, ``AKIA...``, JWTs, PEM private keys, bearer tokens), the values
    of secret-looking environment variables, and every value given to ``add_secret``."""
    if isinstance(value, Mapping):
        return {
            str(k): (_REDACTED if _SECRET_KEY.search(str(k)) else redact(v))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return _redact_list(value)
    if isinstance(value, str):
        return _scrub_text(value)
    return value


_secret_env_values()


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened. ``kind`` is a dotted name such as ``vault.repaired``."""

    kind: str
    subject: str = ""
    segment: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    ts: float = 0.0
    mono_ns: int = 0
    id: int = 0
    host: str = ""
    """The machine that wrote it, in a log several hosts share (PostgreSQL); "" in SQLite,
    whose writers are all on one machine. ``mono_ns`` compares only within one host."""

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts, tz=UTC)

    def to_dict(self) -> dict[str, Any]:
        """Its fields as JSON-able values, ``ts`` in seconds (what the control API sends);
        ``host`` only when a shared log named one."""
        out = {
            "id": self.id,
            "ts": self.ts,
            "mono_ns": self.mono_ns,
            "kind": self.kind,
            "subject": self.subject,
            "segment": self.segment,
            "data": self.data,
        }
        if self.host:
            out["host"] = self.host
        return out

    def to_json(self) -> dict[str, Any]:
        """As ``to_dict``, with ``ts`` an ISO 8601 time (what ``bastion events --json``
        prints)."""
        return {**self.to_dict(), "ts": self.time.isoformat(timespec="microseconds")}


_KIND = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*$")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_since(text: str, *, now: float | None = None) -> float:
    """Parse ``--since``: a relative age (``90s``, ``10m``, ``2h``, ``1d``) or an ISO time."""
    text = text.strip()
    match = _RELATIVE.match(text)
    if match:
        now = time.time() if now is None else now
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(
            f"--since: {text!r} is neither an age (e.g. 10m, 2h, 1d) "
            "nor an ISO time (e.g. 2026-11-27T10:00:00)"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


_URLS_ENV = "BASTION_EVENTS_URLS"
"""The environment entry that carries ``use_postgres`` to child processes (a JSON object,
state directory -> URL without credentials): a training worker or a gateway started by
``bastion up`` writes to the log its parent's manifest names."""


def _key(state_dir: str | Path) -> str:
    return str(Path(state_dir).resolve())


def use_postgres(state_dir: str | Path, url: str | None) -> None:
    """From now on (in this process and its children), the log of ``state_dir`` is the
    PostgreSQL database at ``url`` (None: back to ``<state_dir>/events.db``). The manifest's
    ``events:`` calls this when it is loaded."""
    try:
        urls = json.loads(os.environ.get(_URLS_ENV, "{}"))
    except ValueError:
        urls = {}
    if url is None:
        urls.pop(_key(state_dir), None)
    else:
        urls[_key(state_dir)] = url
    if urls:
        os.environ[_URLS_ENV] = json.dumps(urls, sort_keys=True)
    else:
        os.environ.pop(_URLS_ENV, None)


def url_of(state_dir: str | Path) -> str | None:
    """The PostgreSQL URL the log of ``state_dir`` lives at, or None for SQLite."""
    try:
        urls = json.loads(os.environ.get(_URLS_ENV, "{}"))
    except ValueError:
        return None
    url = urls.get(_key(state_dir)) if isinstance(urls, dict) else None
    return url if isinstance(url, str) else None


def _is_url(where: str | Path) -> bool:
    return isinstance(where, str) and where.startswith(("postgresql://", "postgres://"))


class EventLog:
    """The append-only event log, shared safely by many processes: ``<state_dir>/events.db``
    (SQLite, one machine) or a PostgreSQL database (``postgresql://...``, many hosts).

    Each ``emit`` is its own short transaction, acknowledged (returned) only after it
    committed. SQLite writers wait for its lock rather than fail; PostgreSQL writers
    reconnect across a lost connection for ``retry_s`` and then raise
    ``UnavailableError`` naming the server. Either way none is lost or written twice.
    """

    def __init__(self, path: str | Path, *, retry_s: float = 30.0) -> None:
        self._backend: Any
        if _is_url(path):
            from bastion.events._postgres import PostgresBackend

            self.url: str | None = str(path)
            self.path = Path()
            self._backend = PostgresBackend(str(path), retry_s=retry_s)
        else:
            from bastion.events._sqlite import SqliteBackend

            self.url = None
            self.path = Path(path)
            self._backend = SqliteBackend(self.path)

    @classmethod
    def in_state_dir(cls, state_dir: str | Path, **kwargs: Any) -> EventLog:
        """The log of ``state_dir``: the PostgreSQL database the manifest's ``events:``
        names (``use_postgres``), else ``<state_dir>/events.db``."""
        url = url_of(state_dir)
        return cls(url if url is not None else Path(state_dir) / "events.db", **kwargs)

    @property
    def backend(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self._backend.name)

    @property
    def where(self) -> str:
        """The file, or the server's URL without credentials (for messages)."""
        return str(self._backend.where)

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> Event:
        """Append one event and return it (with its id and both clocks filled in).

        ``at_ns`` (``time.monotonic_ns()``) is when it happened, if not now."""
        if not _KIND.match(kind):
            raise UsageError(
                f"event kind {kind!r} must be dotted lower-case words, e.g. vault.repaired"
            )
        payload = redact(data)
        body = json.dumps(payload, default=str, sort_keys=True)
        ts, mono = time.time(), time.monotonic_ns()
        if at_ns is not None:
            ts -= max(0, mono - at_ns) / 1e9
            mono = at_ns
        segment = segment or ""
        row_id = self._backend.insert(
            ts=ts,
            mono=mono,
            kind=kind,
            subject=subject,
            segment=segment,
            body=body,
            uid=uuid.uuid4().hex,
        )
        host = getattr(self._backend, "host", "")
        return Event(kind, subject, segment, payload, ts, mono, row_id, host)

    def query(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        segment: str | None = None,
        since: float | None = None,
        after_id: int = 0,
        before: int | None = None,
        newest_first: bool = False,
        limit: int | None = None,
    ) -> list[Event]:
        """Events in order (of id; or newest first, by time then id). ``kind`` matches
        exactly, or by prefix when it ends in ``.*`` (``vault.*``) or is a glob
        (``serve.*.ejected``). ``before``: only events older than that one (a page's
        cursor, with ``newest_first``; nothing when it does not exist)."""
        rows = self._backend.select(
            after_id=after_id,
            kind=kind,
            glob=bool(kind) and any(c in str(kind) for c in "*?["),
            subject=subject,
            segment=segment,
            since=since,
            before=before,
            newest_first=newest_first,
            limit=limit,
        )
        return [
            Event(kind=k, subject=s, segment=g, data=json.loads(d), ts=t, mono_ns=m, id=i, host=h)
            for (i, t, m, k, s, g, d, h) in rows
        ]

    def follow(
        self,
        *,
        kind: str | None = None,
        subject: str | None = None,
        since: float | None = None,
        poll_s: float = 0.2,
        stop: threading.Event | None = None,
        after_id: int = 0,
    ) -> Iterator[Event]:
        """Yield matching events as they are appended, until ``stop`` is set.

        SQLite is polled every ``poll_s``; PostgreSQL wakes the follower with NOTIFY (and
        ``poll_s`` bounds the wait, so a lost notification costs latency, not events).
        ``since`` holds for every poll, not only the first: when nothing recent matched at
        first, the next poll must not start again from event #1. ``after_id``: start
        after that event (a follower resuming from its cursor)."""
        listen = getattr(self._backend, "listen", None)
        if listen is not None:
            listen()
        last = after_id
        while stop is None or not stop.is_set():
            batch = self.query(kind=kind, subject=subject, since=since, after_id=last)
            for event in batch:
                last = event.id
                yield event
            if not batch:
                self._backend.wait(poll_s, stop)

    def last_id(self) -> int:
        """The id of the newest event (0 for an empty log)."""
        return int(self._backend.last_id())

    def count(self, kind: str | None = None) -> int:
        return len(self.query(kind=kind))

    def close(self) -> None:
        self._backend.close()

    def __enter__(self) -> EventLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Discard:
    """The emitter that records nothing (a library used without a state directory)."""

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> None:
        return None

    def __repr__(self) -> str:
        return "NO_EVENTS"


NO_EVENTS: Emit = _Discard()


class Relay:
    """An emitter that hands each event to a function, for a caller that acts on events
    (the training supervisor maps a child's exit to its own state; the gateway marks a
    replica down) before it records them."""

    def __init__(self, handle: Callable[[str, str, int | None, dict[str, Any]], None]) -> None:
        self._handle = handle

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> None:
        self._handle(kind, subject, at_ns, data)


_STOP = object()


class EventWriter:
    """Hands events to a writer thread, so the caller (an event loop) never waits on SQLite.

    Owns one daemon thread and an unbounded-by-design queue of *rare* events (ejections,
    restarts, scaling, first use of a backend): per-request facts belong in counters.
    Each event keeps the time it was emitted (``at_ns``), not the time the thread got to
    it. ``close`` drains the queue, so no event is dropped on shutdown; an event the log
    cannot take (a full disk; a PostgreSQL server gone longer than the log's ``retry_s``,
    during which later events wait in the queue) is counted in ``failed``, said once on
    stderr, and never stops the caller.
    """

    def __init__(self, log: EventLog | None, *, segment: str = "") -> None:
        self.segment = segment
        self.emitted = 0
        self.failed = 0
        self._failing = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._log = log
        self._thread: threading.Thread | None = None
        if log is not None:
            self._thread = threading.Thread(target=self._drain, name="bastion-events", daemon=True)
            self._thread.start()

    @classmethod
    def in_state_dir(cls, state_dir: str | Path | None, *, segment: str = "") -> EventWriter:
        """A writer over the log of ``state_dir``, or one that records nothing for None.
        A PostgreSQL server that does not answer at start raises ``UnavailableError``."""
        log = EventLog.in_state_dir(state_dir) if state_dir is not None else None
        return cls(log, segment=segment)

    def emit(
        self,
        kind: str,
        subject: str = "",
        *,
        segment: str | None = None,
        at_ns: int | None = None,
        **data: Any,
    ) -> None:
        self.emitted += 1
        if self._log is not None:
            when = time.monotonic_ns() if at_ns is None else at_ns
            self._queue.put((kind, subject, segment or self.segment, when, data))

    def _drain(self) -> None:
        assert self._log is not None
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, subject, segment, at_ns, data = item
            try:
                self._log.emit(kind, subject, segment=segment, at_ns=at_ns, **data)
            except Exception as exc:
                # the database is gone past the log's own retries (PostgreSQL stopped, a
                # full disk): the caller must keep serving, so the event is dropped,
                # counted, and said once per outage on stderr (not per event)
                self.failed += 1
                if not self._failing:
                    self._failing = True
                    print(
                        f"bastion: event log unavailable, dropping events ({self.failed} so "
                        f"far): {redact(str(exc))}",
                        file=sys.stderr,
                        flush=True,
                    )
            else:
                if self._failing:
                    self._failing = False
                    print(
                        f"bastion: event log back; {self.failed} event(s) were dropped",
                        file=sys.stderr,
                        flush=True,
                    )

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(_STOP)
            self._thread.join(timeout=10)
            self._thread = None
        if self._log is not None:
            self._log.close()
            self._log = None
