"""The local model replica: ``bastion model serve MODEL`` answers predictions over HTTP.

Owns: loading a verified model from the vault (``model/digits@latest``: ``model.json`` +
``model.safetensors``, both hash-checked and signature-verified by the vault), a numpy
forward pass of the MLP (no torch import, so a replica starts in well under a second and
a restarted one rejoins fast), and the routes: ``POST /v1/predict`` ``{"inputs": [[64
floats], ...]}``; ``POST /v1/embeddings`` (the hidden layer's activations for ``input``,
a list of 64-number vectors or comma-separated strings); ``POST /v1/chat/completions``
(the last user message holds 64 comma-separated pixel values; the reply is the digit,
plain or as an SSE stream); ``GET /v1/models``; ``GET /health`` (cheap: no forward pass).
``random_model`` makes the files of an untrained model in the same layout (the demo's and
the tests' stand-in when no trained model is at hand).

Must never: serve bytes the vault did not verify; answer 500 for a malformed input (it
answers 400 naming the field and the fix).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from bastion.aio import serve_forever
from bastion.serve import shapes

__all__ = ["Mlp", "load_dir", "load_vault", "main", "make_app", "random_model", "serve"]


@dataclass
class Mlp:
    """A ReLU MLP stored as safetensors keys ``<i>.weight`` / ``<i>.bias``."""

    weights: list[tuple[np.ndarray, np.ndarray]]
    input_scale: float
    labels: list[Any]
    name: str

    @classmethod
    def from_bytes(cls, tensors: bytes, meta_json: bytes, name: str) -> Mlp:
        from safetensors.numpy import load

        meta = json.loads(meta_json)
        arrays = load(tensors)
        layers = sorted({int(k.split(".")[0]) for k in arrays})
        weights = [
            (arrays[f"{i}.weight"].astype(np.float32), arrays[f"{i}.bias"].astype(np.float32))
            for i in layers
        ]
        return cls(
            weights,
            float(meta.get("input_scale", 1.0)),
            list(meta.get("labels", range(weights[-1][0].shape[0]))),
            name,
        )

    @property
    def n_inputs(self) -> int:
        return int(self.weights[0][0].shape[1])

    def hidden(self, x: np.ndarray) -> np.ndarray:
        h = x * self.input_scale
        for w, b in self.weights[:-1]:
            h = np.maximum(h @ w.T + b, 0.0)
        return h

    def logits(self, x: np.ndarray) -> np.ndarray:
        w, b = self.weights[-1]
        out: np.ndarray = self.hidden(x) @ w.T + b
        return out


def random_model(seed: int) -> dict[str, bytes]:
    """The files of an untrained 64-64-10 digits MLP with weights drawn from ``seed``:
    ``model.safetensors`` and ``model.json``, as a vault snapshot or a directory holds them."""
    from safetensors.numpy import save

    rng = np.random.default_rng(seed)
    tensors = {
        "0.weight": rng.normal(size=(64, 64)).astype(np.float32),
        "0.bias": np.zeros(64, np.float32),
        "2.weight": rng.normal(size=(10, 64)).astype(np.float32),
        "2.bias": np.zeros(10, np.float32),
    }
    meta = {
        "arch": "mlp",
        "layers": [64, 64, 10],
        "activation": "relu",
        "input_scale": 1 / 16,
        "labels": list(range(10)),
    }
    return {"model.safetensors": save(tensors), "model.json": json.dumps(meta).encode()}


def load_dir(directory: Path, name: str = "model") -> Mlp:
    """Load from a plain directory (development and tests; nothing is verified)."""
    return Mlp.from_bytes(
        (directory / "model.safetensors").read_bytes(),
        (directory / "model.json").read_bytes(),
        name,
    )


def load_vault(manifest_path: Path, ref: str) -> Mlp:
    """Load a signature-verified snapshot from the manifest's vault."""
    from bastion.manifest import load
    from bastion.vault import Vault

    vault = Vault.from_manifest(load(manifest_path))
    snap = vault.snapshot(ref)
    return Mlp.from_bytes(
        vault.read(snap, "model.safetensors"), vault.read(snap, "model.json"), ref
    )


class _BadInput(Exception):
    pass


def _matrix(value: Any, n: int, field: str) -> np.ndarray:
    rows = (
        value if isinstance(value, list) and value and isinstance(value[0], list | str) else [value]
    )
    out = []
    for item in rows:
        row = item
        if isinstance(item, str):
            try:
                row = [float(v) for v in item.replace(" ", "").split(",") if v]
            except ValueError:
                raise _BadInput(f"{field}: {item[:40]!r} is not comma-separated numbers") from None
        if (
            not isinstance(row, list)
            or len(row) != n
            or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in row)
        ):
            raise _BadInput(f"{field}: each input must be {n} numbers (8x8 pixels, 0..16)")
        out.append(row)
    if len(out) > 1024:
        raise _BadInput(f"{field}: at most 1024 inputs per request")
    try:
        return np.asarray(out, dtype=np.float32)
    except (OverflowError, ValueError):
        raise _BadInput(f"{field}: a value is out of range for a pixel (0..16)") from None


def _last_content(messages: Any) -> str:
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        raise _BadInput("messages: give a list whose last item holds 64 pixel values")
    return str(messages[-1].get("content", ""))


def _bad(message: str) -> web.Response:
    return web.json_response(shapes.error(message, "invalid_request_error", 400), status=400)


def make_app(model: Mlp) -> web.Application:
    n = model.n_inputs
    started = time.time()

    async def body_of(request: web.Request) -> dict[str, Any]:
        try:
            obj = await request.json()
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise _BadInput("the body is not valid JSON") from None
        if not isinstance(obj, dict):
            raise _BadInput("the body must be a JSON object")
        return obj

    async def predict(request: web.Request) -> web.Response:
        try:
            x = _matrix((await body_of(request)).get("inputs"), n, "inputs")
        except _BadInput as exc:
            return _bad(str(exc))
        logits = model.logits(x)
        top = logits.argmax(axis=1)
        return web.json_response(
            {"model": model.name, "predictions": [model.labels[int(i)] for i in top]}
        )

    async def embeddings(request: web.Request) -> web.Response:
        try:
            x = _matrix((await body_of(request)).get("input"), n, "input")
        except _BadInput as exc:
            return _bad(str(exc))
        return web.json_response(shapes.embeddings(model.hidden(x).tolist(), model.name))

    async def chat(request: web.Request) -> web.StreamResponse:
        try:
            obj = await body_of(request)
            x = _matrix(_last_content(obj.get("messages")), n, "messages[-1].content")
        except _BadInput as exc:
            return _bad(str(exc))
        digit = str(model.labels[int(model.logits(x)[0].argmax())])
        created = int(time.time())
        if obj.get("stream") is not True:
            return web.json_response(
                shapes.chat_completion(model.name, digit, created=created, prompt_tokens=n)
            )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for delta, finish in (({"role": "assistant", "content": digit}, None), ({}, "stop")):
            await resp.write(
                shapes.sse(shapes.chat_chunk(model.name, delta, finish, created=created))
            )
        await resp.write(shapes.SSE_DONE)
        await resp.write_eof()
        return resp

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            shapes.model_list([model.name], owned_by="bastion", created=int(started))
        )

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "model": model.name, "pid": os.getpid()})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/predict", predict)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    app.router.add_get("/health", health)
    return app


async def serve(model: Mlp, host: str, port: int) -> None:
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
    model = (
        load_dir(args.dir, args.model)
        if args.dir is not None
        else load_vault(args.manifest, args.model)
    )
    asyncio.run(serve(model, args.host, args.port))


if __name__ == "__main__":
    main()
