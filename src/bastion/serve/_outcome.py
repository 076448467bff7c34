"""How one attempt on a backend ended: the gateway's one outcome classifier.

Owns: the outcome kinds (``Outcome`` constants such as ``OK``, ``CONNECTION``,
``TIMEOUT``, ``STALLED``), each saying once what it means
- for the backend: what its breaker records (``health``: a success, a soft failure such
  as a 5xx, a hard failure such as a refused connection, a hold for a 429, or nothing)
  and what its concurrency limit and latency estimate learn (``latency``, ``dropped``);
- for the request: whether another attempt may follow (``retry``: ``requeue`` needs no
  budget token, ``budget`` needs one, ``never`` once bytes reached the client, ``answer``
  when the answer goes to the client as it is);
- for the client: the status it gets if this was the last attempt;

and the classifier, ``classify_error`` / ``classify_status``, which turns what the HTTP
client saw (an exception, a status, a body) into an outcome the same way for a whole
answer, a stream's first byte and the relay of a stream. ``Failure`` is the exception an
attempt raises with its outcome.

Must never: do I/O, or change a backend's state (``Pool.finish`` applies an outcome).
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Literal

import aiohttp

__all__ = [
    "ABANDONED",
    "CANCELLED",
    "CLIENT_ERROR",
    "CLIENT_GONE",
    "CONNECTION",
    "CUT",
    "DEADLINE",
    "EMPTY",
    "MALFORMED",
    "OK",
    "RATE_LIMITED",
    "STALLED",
    "STATUS",
    "TIMEOUT",
    "TTFT_TIMEOUT",
    "UNFINISHED",
    "VIOLATION",
    "Failure",
    "Outcome",
    "Phase",
    "classify_answer",
    "classify_error",
    "classify_status",
    "looks_like_json",
]

Health = Literal["success", "soft", "hard", "hold", "none"]
Latency = Literal["sample", "bound", "penalty", "none"]
Retry = Literal["answer", "requeue", "budget", "never"]
Phase = Literal["answer", "first_byte", "relay"]
"""Where an attempt was: waiting for a whole answer, for a stream's first bytes, or
relaying a stream whose bytes already reached the client."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """One kind of attempt ending.

    Attributes:
        kind: its name in messages and events (``timeout``, ``status`` ...).
        health: what the backend's breaker records: ``success``, a ``soft`` failure
            (counts toward ejection within the ejection cap), a ``hard`` failure (ejects at
            once until a health probe passes), a ``hold`` (a 429: out for Retry-After), or
            ``none`` (not the backend's doing).
        latency: what the elapsed time is to the backend's latency estimate: a ``sample``,
            a lower ``bound`` (a cancelled attempt took at least this long), a ``penalty``
            (a fast failure must not look like a fast backend) or nothing.
        dropped: the concurrency limit counts it as a drop (timeouts, refusals, cuts).
        retry: ``answer`` (pass this answer on), ``requeue`` (try elsewhere, no retry
            budget token needed: the backend is gone, not overloaded), ``budget`` (try
            elsewhere if the retry budget has a token) or ``never`` (bytes were sent).
        status: the HTTP status the client gets when this was the last attempt.
    """

    kind: str
    health: Health
    latency: Latency
    dropped: bool
    retry: Retry
    status: int


OK = Outcome("ok", "success", "sample", False, "answer", 200)
CLIENT_ERROR = Outcome("client_error", "success", "none", False, "answer", 400)
"""A 4xx other than 408 and 429: the client's own mistake, passed through; the backend is
fine."""
CONNECTION = Outcome("connection", "hard", "penalty", True, "requeue", 502)
"""Refused or reset before an answer: the process is gone."""
TIMEOUT = Outcome("timeout", "hard", "penalty", True, "budget", 504)
TTFT_TIMEOUT = Outcome("ttft timeout", "hard", "penalty", True, "budget", 504)
"""A stream's first byte did not come in time."""
STATUS = Outcome("status", "soft", "penalty", False, "budget", 502)
"""A 5xx or 408."""
RATE_LIMITED = Outcome("rate_limited", "hold", "none", False, "budget", 429)
MALFORMED = Outcome("malformed", "soft", "penalty", False, "budget", 502)
"""A 2xx that breaks the protocol before anything reached the client: a body that is not
whole JSON or not the route's shape, a wrong content type, a stream whose first events
are not SSE or which ends without its finish (``_protocol`` says how)."""
EMPTY = Outcome("empty stream", "soft", "penalty", False, "budget", 502)
"""A stream that ended before its first byte."""
CUT = Outcome("cut", "soft", "penalty", True, "never", 502)
"""The backend's connection broke in the middle of a stream."""
STALLED = Outcome("stalled", "hard", "penalty", True, "never", 502)
"""A stream that sent nothing for the stall timeout."""
UNFINISHED = Outcome("unfinished", "soft", "penalty", True, "never", 502)
"""A stream that ended without ``data: [DONE]``."""
VIOLATION = Outcome("protocol violation", "soft", "penalty", False, "never", 502)
"""A stream that broke the protocol after bytes reached the client (a malformed event)."""
DEADLINE = Outcome("deadline", "soft", "penalty", True, "never", 504)
"""A stream still going when the request's deadline passed. Soft: the backend is alive
and sending, only slower than this request allows."""
CANCELLED = Outcome("cancelled", "none", "bound", False, "never", 499)
"""Lost a hedge race, or the client left while waiting for an answer."""
CLIENT_GONE = Outcome("client gone", "none", "none", False, "never", 499)
"""The client stopped reading a stream."""
ABANDONED = Outcome("abandoned", "none", "none", False, "never", 502)
"""An exception nobody classified (a bug): the attempt is closed and the error raised."""


class Failure(Exception):
    """An attempt failed with ``outcome``; ``reason`` says how, for people."""

    __slots__ = ("outcome", "reason", "retry_after")

    def __init__(self, outcome: Outcome, reason: str, *, retry_after: float | None = None):
        super().__init__(reason)
        self.outcome = outcome
        self.reason = reason
        self.retry_after = retry_after


_ON_TIMEOUT = {"answer": TIMEOUT, "first_byte": TTFT_TIMEOUT, "relay": STALLED}


def classify_error(exc: BaseException, phase: Phase, *, expired: bool = False) -> Outcome:
    """The outcome of an attempt that raised ``exc`` while reading from the backend.
    ``expired``: the request's deadline had passed when it happened."""
    if isinstance(exc, TimeoutError):
        if phase == "relay" and expired:
            return DEADLINE
        return _ON_TIMEOUT[phase]
    if isinstance(exc, aiohttp.ClientError | OSError):
        return CUT if phase == "relay" else CONNECTION
    if isinstance(exc, asyncio.CancelledError):
        return CANCELLED
    return ABANDONED


def classify_status(status: int) -> Outcome:
    """The outcome of an answer with this HTTP status (its body not looked at)."""
    if status < 400:
        return OK
    if status == 429:
        return RATE_LIMITED
    if status >= 500 or status == 408:
        return STATUS
    return CLIENT_ERROR


def classify_answer(status: int, content_type: str, body: bytes) -> Outcome:
    """The outcome of a whole answer: its status, and for a JSON 2xx whether it is whole."""
    outcome = classify_status(status)
    if outcome is OK and content_type == "application/json" and not looks_like_json(body):
        return MALFORMED
    return outcome


_FULL_CHECK = 64 * 1024


def looks_like_json(data: bytes) -> bool:
    """Is a backend's JSON answer whole? Small bodies are parsed (a few microseconds);
    big ones (embeddings) only checked for a closing bracket, which is what a truncated
    or cut body lacks, so a large answer is not decoded just to be passed on."""
    if len(data) <= _FULL_CHECK:
        try:
            json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return False
        return True
    end = data.rstrip()[-1:]
    return data.lstrip()[:1] in (b"{", b"[") and end in (b"}", b"]")
