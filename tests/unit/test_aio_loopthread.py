"""LoopThread: the one way Bastion runs an async server from sync code."""

from __future__ import annotations

import asyncio

import pytest

from bastion.aio import LoopThread


def test_setup_call_and_cleanup_run_on_the_loop() -> None:
    seen: list[str] = []

    async def setup() -> int:
        seen.append("setup")
        return 7

    async def cleanup() -> None:
        seen.append("cleanup")

    worker = LoopThread("t")
    assert worker.start(setup()) == 7
    assert worker.running
    assert worker.call(asyncio.sleep(0, result="x")) == "x"
    worker.stop(cleanup())
    assert seen == ["setup", "cleanup"]
    assert not worker.running
    assert worker.loop.is_closed()


def test_failed_setup_raises_in_caller_and_stops_the_loop() -> None:
    async def broken() -> None:
        raise OSError("port taken")

    worker = LoopThread("t")
    with pytest.raises(OSError, match="port taken"):
        worker.start(broken())
    assert not worker.running
    assert worker.loop.is_closed()


def test_stop_without_start_closes_cleanup_coroutine() -> None:
    async def cleanup() -> None:
        raise AssertionError("must not run")

    worker = LoopThread("t")
    worker.stop(cleanup())
    assert not worker.running
