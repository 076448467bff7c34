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
import json
import sys
import time

from aiohttp import web

__all__ = ["main", "make_app"]


def _completion(model: str) -> bytes:
    return json.dumps(
        {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "ok"},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    ).encode()


def _chunk(model: str, text: str, finish: str | None = None) -> bytes:
    body = {
        "id": "chatcmpl-standin",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return f"data: {json.dumps(body)}\n\n".encode()


def make_app(*, name: str = "standin") -> web.Application:
    served = {"n": 0}

    async def chat(request: web.Request) -> web.StreamResponse:
        served["n"] += 1
        body = await request.json()
        model = str(body.get("model", name))
        if not body.get("stream"):
            return web.Response(body=_completion(model), content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for word in ("o", "k", " from ", name):
            await resp.write(_chunk(model, word))
        await resp.write(_chunk(model, "", "stop"))
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def embeddings(request: web.Request) -> web.Response:
        served["n"] += 1
        body = await request.json()
        inputs = body.get("input", "")
        items = inputs if isinstance(inputs, list) else [inputs]
        data = [
            {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
            for i in range(len(items))
        ]
        return web.json_response(
            {
                "object": "list",
                "data": data,
                "model": body.get("model", name),
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": name, "object": "model", "created": 0, "owned_by": "standin"}],
            }
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "served": served["n"]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


async def _serve(host: str, port: int, name: str) -> None:
    runner = web.AppRunner(make_app(name=name), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, backlog=1024)
    await site.start()
    bound = runner.addresses[0][1]
    sys.stdout.write(f"PORT {bound}\n")
    sys.stdout.flush()
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--name", default="standin")
    args = parser.parse_args(argv)
    asyncio.run(_serve(args.host, args.port, args.name))


if __name__ == "__main__":
    main()
