"""Asyncio plumbing shared by every server Bastion runs: a loop in a daemon thread, and
starting an aiohttp app on a port.

Owns: ``LoopThread`` (starting the loop, running coroutines on it from other threads, and
stopping it after an optional clean-up coroutine: the gateway's ``GatewayThread``, the
fault library's HTTP upstream, TCP fault proxy and Toxiproxy API all run their servers
this way); ``serve_app`` (start an aiohttp app on host:port, 0 meaning any free port, and
learn the port it got); ``serve_forever`` (the same, then print ``PORT <n>``, the line
``bastion.serve.spawn_server`` waits for, and serve until killed).

Must never: leave a loop running after ``stop()``; swallow an error raised while starting
(``call`` re-raises it in the caller's thread); log every request (access logs are off).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["LoopThread", "serve_app", "serve_forever"]

T = TypeVar("T")


async def serve_app(
    app: web.Application,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    backlog: int = 128,
    shutdown_timeout: float = 60.0,
) -> tuple[web.AppRunner, int]:
    """Start ``app`` on ``host:port`` and return its runner (``await runner.cleanup()``
    stops it) and the port it is bound to, which is the one the OS chose when ``port`` is 0."""
    from aiohttp import web

    runner = web.AppRunner(
        app, access_log=None, handle_signals=False, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port, backlog=backlog).start()
    except BaseException:
        await runner.cleanup()
        raise
    # AppRunner.addresses lists each bound socket's (host, port, ...).
    return runner, int(runner.addresses[0][1])


async def serve_forever(app: web.Application, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve ``app`` until the process is killed, after printing ``PORT <n>`` on stdout."""
    runner, bound = await serve_app(app, host, port, backlog=1024)
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


class LoopThread:
    """A private event loop running in a daemon thread named ``name``."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def start(self, setup: Coroutine[Any, Any, T] | None = None, timeout: float = 30.0) -> T | None:
        """Start the loop and, if given, run ``setup`` on it; a failed setup stops the loop."""
        self._thread.start()
        if setup is None:
            return None
        try:
            return self.call(setup, timeout)
        except BaseException:
            self.stop()
            raise

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        """Run ``coro`` on the loop and wait for its result (or its exception)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, cleanup: Coroutine[Any, Any, Any] | None = None, timeout: float = 10.0) -> None:
        """Run ``cleanup`` (if the loop still runs), stop the loop and close it."""
        if self._thread.is_alive():
            try:
                if cleanup is not None:
                    self.call(cleanup, timeout)
            finally:
                self.loop.call_soon_threadsafe(self.loop.stop)
                self._thread.join(timeout)
        elif cleanup is not None:
            cleanup.close()
        if not self._thread.is_alive() and not self.loop.is_closed():
            self.loop.close()
