"""An asyncio event loop in a daemon thread, for async servers driven from sync code.

Owns: starting the loop, running coroutines on it from other threads, and stopping it
after an optional clean-up coroutine. The gateway's ``GatewayThread``, the fault
library's HTTP upstream, TCP fault proxy and Toxiproxy API all run their servers this way.

Must never: leave a loop running after ``stop()``, or swallow an error raised while
starting (``call`` re-raises it in the caller's thread).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["LoopThread"]

T = TypeVar("T")


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
