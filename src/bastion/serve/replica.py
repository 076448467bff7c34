"""The local model replica: ``bastion model serve MODEL`` answers predictions over HTTP.

Owns: loading a verified model from the vault (``load_vault``: the snapshot's signature
and every chunk's hash are checked by the vault; ``_formats`` picks the format its
``model.json`` names: the example's numpy ``mlp``, ``onnx`` through onnxruntime, or a
user's ``handler`` class; docs/serving.md) and the routes, each answering errors as
OpenAI error JSON:

- ``POST /v1/predict`` ``{"inputs": ...}`` (one input or a list): ``{"model",
  "predictions"}``;
- ``POST /v1/embeddings`` ``{"input": ...}``: an OpenAI embeddings list;
- ``POST /v1/chat/completions``: the last message's content is one input; the reply is
  the prediction as text, plain or as an SSE stream;
- ``POST /v1/completions``: each ``prompt`` is one input, one choice per prompt;
- ``GET /v1/models``, ``GET /v1/models/{id}``, ``GET /health`` (cheap: no forward pass),
  ``GET /metrics`` (Prometheus, in a registry of this app's own: requests and latency
  per route and status, in the exposition format the scraper's ``Accept`` asks for).

Must never: serve bytes the vault did not verify; answer 500 for a malformed input (it
answers 400 naming the field and the fix), nor 200 for a NaN or an infinity.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector

from bastion.aio import serve_forever
from bastion.errors import BastionError
from bastion.serve import shapes
from bastion.serve._formats import BadInput, ModelError, ModelFiles, ServedModel, load_model
from bastion.serve._mlp import Mlp, random_model
from bastion.serve._tensor import MAX_BATCH, finite_json

__all__ = [
    "Mlp",
    "ServedModel",
    "load_dir",
    "load_vault",
    "main",
    "make_app",
    "random_model",
    "serve",
]

_log = logging.getLogger(__name__)
_T = TypeVar("_T")
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
_ERROR_TYPES = {
    400: "invalid_request_error",
    404: "not_found_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    500: "server_error",
}


def load_dir(directory: Path, name: str = "model") -> ServedModel:
    """Load from a plain directory (development and tests; nothing is verified)."""
    return load_model(ModelFiles.from_dir(directory, name))


def load_vault(manifest_path: Path, ref: str) -> ServedModel:
    """Load a signature-verified snapshot from the manifest's vault."""
    from bastion.manifest import load
    from bastion.vault import Vault

    vault = Vault.from_manifest(load(manifest_path))
    return load_model(ModelFiles.from_vault(vault, vault.snapshot(ref)))


def _error(status: int, message: str) -> web.Response:
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return web.json_response(shapes.error(message, kind, status), status=status)


def _content(messages: Any) -> str:
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise BadInput("messages: give a list of messages whose last one holds the input")
    content = messages[-1].get("content")
    if isinstance(content, list):  # content parts: the text ones, joined
        content = "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    if not isinstance(content, str) or not content.strip():
        raise BadInput("messages[-1].content: give the model's input as text")
    return content


def _one_choice(obj: dict[str, Any]) -> None:
    n = obj.get("n", 1)
    if n is not None and n != 1:
        raise BadInput(
            f"n: {n!r}: this model is deterministic and answers one choice; send n=1 "
            "(or leave it out)"
        )


class _Metrics:
    """The replica's own registry: per route and status, a count and a latency
    histogram; the model's name and format; the process's own ``process_*``."""

    def __init__(self, model: ServedModel) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "bastion_replica_requests",
            "Requests answered by this model replica, by route and HTTP status.",
            ["route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "bastion_replica_request_duration_seconds",
            "Time from a request's arrival to its last byte, by route and HTTP status.",
            ["route", "status"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        info = Gauge(
            "bastion_replica_model_info",
            "The model this replica serves (always 1).",
            ["model", "format"],
            registry=self.registry,
        )
        info.labels(model.name, model.format).set(1)
        ProcessCollector(registry=self.registry)

    def observe(self, route: str, status: int, seconds: float) -> None:
        self.requests.labels(route, str(status)).inc()
        self.latency.labels(route, str(status)).observe(seconds)

    def scrape(self, accept: str) -> web.Response:
        encoder, content_type = choose_encoder(accept)
        return web.Response(body=encoder(self.registry), headers={"Content-Type": content_type})


_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_app(model: ServedModel) -> web.Application:
    started = time.time()
    metrics = _Metrics(model)
    # A format that may take long per request (onnx, a handler) runs in one worker thread
    # of its own, so /health and /metrics still answer while it works, and the gateway's
    # probe does not eject a replica for being busy. The numpy MLP is quicker than the hop.
    worker = (
        ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{model.format}")
        if model.offload
        else None
    )

    async def run(fn: Callable[..., _T], *args: Any) -> _T:
        if worker is None:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(worker, fn, *args)

    async def stop_worker(app: web.Application) -> None:
        if worker is not None:
            worker.shutdown(wait=False, cancel_futures=True)

    @web.middleware
    async def answers(request: web.Request, handler: _Handler) -> web.StreamResponse:
        t0 = time.perf_counter()
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        try:
            response = await handler(request)
        except BadInput as exc:
            response = _error(400, str(exc))
        except ModelError as exc:
            _log.warning("%s %s: %s", request.method, request.path, exc)
            response = _error(500, str(exc))
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            reason = exc.text if exc.status == 413 else exc.reason
            if exc.status == 404:
                reason = f"no route {request.path} on this model replica"
            elif exc.status == 405:
                reason = f"{request.method} is not allowed on {request.path}"
            response = _error(exc.status, reason or "request refused")
            if exc.status == 405 and "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except ConnectionError:
            raise  # the client went away: there is no one to answer
        except Exception as exc:  # a bug: its traceback to the log, JSON to the client
            _log.exception("%s %s failed", request.method, request.path)
            response = _error(500, f"the replica failed on this request: {exc!r}")
        metrics.observe(route, response.status, time.perf_counter() - t0)
        return response

    async def body_of(request: web.Request) -> dict[str, Any]:
        try:
            obj = finite_json(await request.text())
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise BadInput("the body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise BadInput("the body must be a JSON object")
        return obj

    async def predict(request: web.Request) -> web.Response:
        predictions = await run(model.predict, (await body_of(request)).get("inputs"), "inputs")
        return web.json_response({"model": model.name, "predictions": predictions})

    async def embeddings(request: web.Request) -> web.Response:
        vectors = await run(model.embed, (await body_of(request)).get("input"), "input")
        return web.json_response(shapes.embeddings(vectors, model.name))

    async def sse(request: web.Request, events: list[dict[str, Any]]) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for event in events:
            await resp.write(shapes.sse(event))
        await resp.write(shapes.SSE_DONE)
        await resp.write_eof()
        return resp

    async def chat(request: web.Request) -> web.StreamResponse:
        obj = await body_of(request)
        _one_choice(obj)
        text = await run(model.reply, _content(obj.get("messages")), "messages[-1].content")
        created = int(time.time())
        if obj.get("stream") is not True:
            return web.json_response(shapes.chat_completion(model.name, text, created=created))
        return await sse(
            request,
            [
                shapes.chat_chunk(model.name, delta, finish, created=created)
                for delta, finish in (({"role": "assistant", "content": text}, None), ({}, "stop"))
            ],
        )

    async def completions(request: web.Request) -> web.StreamResponse:
        obj = await body_of(request)
        _one_choice(obj)
        prompt = obj.get("prompt")
        prompts = (
            prompt
            if isinstance(prompt, list) and all(isinstance(p, str) for p in prompt)
            else [prompt]
        )
        if not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
            raise BadInput("prompt: give the model's input as text, or a list of such texts")
        if len(prompts) > MAX_BATCH:
            raise BadInput(f"prompt: at most {MAX_BATCH} prompts per request")
        texts = [
            await run(model.reply, p, f"prompt[{i}]" if len(prompts) > 1 else "prompt")
            for i, p in enumerate(prompts)
        ]
        created = int(time.time())
        if obj.get("stream") is not True:
            return web.json_response(
                shapes.completion(model.name, texts, created=created, prompt_tokens=len(texts))
            )
        events = []
        for i, text in enumerate(texts):
            events.append(shapes.completion_chunk(model.name, text, index=i, created=created))
            events.append(shapes.completion_chunk(model.name, "", "stop", index=i, created=created))
        return await sse(request, events)

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            shapes.model_list([model.name], owned_by="bastion", created=int(started))
        )

    async def one_model(request: web.Request) -> web.Response:
        wanted = request.match_info["id"]
        if wanted != model.name:
            return _error(
                404, f"model {wanted!r} is not served here (this replica serves {model.name!r})"
            )
        return web.json_response(
            shapes.model_list([model.name], owned_by="bastion", created=int(started))["data"][0]
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"ok": True, "model": model.name, "format": model.format, "pid": os.getpid()}
        )

    async def scrape(request: web.Request) -> web.Response:
        return metrics.scrape(request.headers.get("Accept", ""))

    app = web.Application(client_max_size=4 * 1024 * 1024, middlewares=[answers])
    app.on_cleanup.append(stop_worker)
    app.router.add_post("/v1/predict", predict)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/v1/models/{id:.+}", one_model)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", scrape)
    return app


async def serve(model: ServedModel, host: str, port: int) -> None:
    """Serve ``model`` until killed (``PORT <n>`` on stdout once listening)."""
    await serve_forever(make_app(model), host, port)


def main(argv: list[str] | None = None) -> None:
    """``python -m bastion.serve.replica`` (what the gateway's replica manager runs)."""
    parser = argparse.ArgumentParser(prog="python -m bastion.serve.replica")
    parser.add_argument("model", help="a vault ref such as model/digits@latest")
    parser.add_argument("--manifest", type=Path, default=Path("bastion.yaml"))
    parser.add_argument("--dir", type=Path, default=None, help="load from a plain directory")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        model = (
            load_dir(args.dir, args.model)
            if args.dir is not None
            else load_vault(args.manifest, args.model)
        )
    except BastionError as exc:  # one line in the replica's log, not a traceback
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(exc.exit_code) from None
    asyncio.run(serve(model, args.host, args.port))


if __name__ == "__main__":
    main()
