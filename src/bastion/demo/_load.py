"""What the demo's serving scenes share: client load (a few workers post one
``/v1/predict`` body until told to stop, and count what came back and, given the expected
answer, the wrong answers, which a golden-probe scene must show as zero), and waiting for
a state with a deadline."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable

__all__ = ["predict_load", "wait_for"]


async def predict_load(
    url: str,
    body: bytes,
    stop: threading.Event,
    counts: dict[str, int],
    *,
    expected: str | None = None,
    workers: int = 4,
    users: int = 0,
    backends: dict[str, int] | None = None,
    failures: list[tuple[float, str]] | None = None,
) -> None:
    """Post ``body`` to ``url``/v1/predict from ``workers`` clients until ``stop`` is set,
    adding to ``counts``: ``ok`` and ``failed``, and ``wrong`` when ``expected`` is given.
    ``users``: send ``x-bastion-user`` naming one of that many users in turn (a rollout's
    canary share is by user). ``backends``: count the answers by the backend that gave
    them (the gateway's ``x-bastion-backend``). ``failures``: append each failure's
    ``time.monotonic()`` and why (the status and the start of the body, or the error), so
    a scene can say when and why a request failed."""
    import aiohttp

    sent = 0
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            nonlocal sent
            while not stop.is_set():
                headers = {"Content-Type": "application/json"}
                if users:
                    headers["x-bastion-user"] = f"user-{sent % users}"
                    sent += 1
                try:
                    async with session.post(url + "/v1/predict", data=body, headers=headers) as r:
                        answer = await r.read()
                    if backends is not None:
                        name = r.headers.get("x-bastion-backend", "")
                        backends[name] = backends.get(name, 0) + 1
                    if r.status != 200:
                        counts["failed"] += 1
                        if failures is not None:
                            text = answer[:160].decode(errors="replace")
                            failures.append((time.monotonic(), f"{r.status}: {text}"))
                        continue
                    counts["ok"] += 1
                    if expected is not None:
                        got = json.loads(answer)["predictions"][0]
                        counts["wrong"] += str(got) != expected
                except (aiohttp.ClientError, ValueError, KeyError, IndexError) as exc:
                    counts["failed"] += 1
                    if failures is not None:
                        failures.append((time.monotonic(), f"{type(exc).__name__}: {exc}"))

        await asyncio.gather(*(worker() for _ in range(workers)))


def wait_for(cond: Callable[[], bool], seconds: float) -> bool:
    """Poll ``cond`` until it holds (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True
