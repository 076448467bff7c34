"""A vendor stand-in: a small OpenAI-compatible server on a real socket, for tests, the
demo and the benchmark.

Owns: ``/v1/chat/completions`` (plain and SSE stream), ``/v1/embeddings``, ``/v1/models``
and ``/health``, answering instantly with fixed content: the healthy, trivial backend the
benchmark and the gateway's own tests need. Faults are not its job: vendor-fault tests use
the drill capability's fault-injecting upstream (``bastion.drill.faults.http``).

Run: ``python -m bastion.serve.standin --port 0`` prints ``PORT <n>`` once listening.

Must never: listen beyond 127.0.0.1 by default, or call anything else.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

from bastion.aio import serve_forever
from bastion.serve import shapes

__all__ = ["main", "make_app"]


def make_app(*, name: str = "standin") -> web.Application:
    served = {"n": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        served["n"] += 1
        body = await request.json()
        model = str(body.get("model", name))
        if not body.get("stream"):
            return web.json_response(shapes.chat_completion(model, "ok", id="chatcmpl-standin"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("o", "k", " from ", name):
            await resp.write(shapes.sse(shapes.chat_chunk(model, {"content": word})))
        await resp.write(shapes.sse(shapes.chat_chunk(model, {"content": ""}, "stop")))
        await resp.write(shapes.SSE_DONE)
        await resp.write_eof()
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        served["n"] += 1
        body = await request.json()
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        vectors = [[0.1, 0.2, 0.3]] * len(items)
        return web.json_response(shapes.embeddings(vectors, str(body.get("model", name))))

    async def models(request: web.Request) -> web.Response:
        return web.json_response(shapes.model_list([name], owned_by="standin"))

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "served": served["n"]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="standin")
    args = parser.parse_args(argv)
    asyncio.run(serve_forever(make_app(name=args.name), args.host, args.port))


if __name__ == "__main__":
    main()
