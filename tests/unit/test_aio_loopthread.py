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


def test_a_request_the_http_parser_refuses_is_answered_in_json() -> None:
    import asyncio

    import aiohttp
    from aiohttp import web

    from bastion.aio import serve_app

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def main() -> None:
        app = web.Application()
        app.router.add_get("/x", ok)
        runner, port = await serve_app(app)
        try:
            long = f"http://127.0.0.1:{port}/x?q=" + "a" * 9000
            async with aiohttp.ClientSession() as s, s.get(long) as r:
                assert r.status == 400
                assert r.content_type == "application/json"
                body = await r.json()
                assert body["error"]["status"] == 400
                assert "8190" in body["error"]["message"]
            async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/x") as r:
                assert (r.status, await r.json()) == (200, {"ok": True})
        finally:
            await runner.cleanup()

    asyncio.run(main())
