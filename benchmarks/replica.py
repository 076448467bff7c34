"""Model replica overhead, side by side: Bastion's replica and a bare aiohttp server that
runs the same model with no checks, in the same run.

For each format (the example's numpy ``mlp``, and an ``onnx`` graph exported with
``torch.onnx`` from a 64-256-256-10 MLP), both servers run in this process on 127.0.0.1
and a keep-alive ``http.client`` connection to each sends ``--requests`` sequential
``POST /v1/predict`` (alternating between the two) of a batch of 1 and of 64 rows. The
bare server parses the JSON, makes a float32 array, runs the model and answers the
argmax: what a replica does minus the input checks (shape and dtype from the model,
finite numbers, types), the error JSON, the worker thread (onnx) and the metrics.
Printed: p50 and p99 latency of each and their ratio.

Run: ``.venv/bin/python benchmarks/replica.py [--requests 2000]``.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from aiohttp import web

from bastion.aio import LoopThread, serve_app
from bastion.serve.replica import load_dir, make_app, random_model


def _onnx_dir(root: Path) -> Path:
    import torch

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    ).eval()
    d = root / "onnx"
    d.mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.zeros(1, 64),),
            str(d / "model.onnx"),
            dynamo=False,
            input_names=["x"],
            output_names=["logits"],
            dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
        )
    (d / "model.json").write_text(json.dumps({"format": "onnx", "labels": list(range(10))}))
    return d


def _mlp_dir(root: Path) -> Path:
    d = root / "mlp"
    d.mkdir()
    for name, data in random_model(0).items():
        (d / name).write_bytes(data)
    return d


def _bare_app(fmt: str, directory: Path) -> web.Application:
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(
            str(directory / "model.onnx"), providers=["CPUExecutionProvider"]
        )

        def forward(x: np.ndarray) -> Any:
            return session.run(None, {"x": x})[0]
    else:
        model = load_dir(directory)

        def forward(x: np.ndarray) -> Any:
            return model.logits(x)  # type: ignore[attr-defined]

    async def predict(request: web.Request) -> web.Response:
        x = np.asarray((await request.json())["inputs"], dtype=np.float32)
        return web.json_response({"predictions": forward(x).argmax(axis=1).tolist()})

    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/v1/predict", predict)
    return app


def _measure(ports: tuple[int, int], body: bytes, n: int) -> tuple[list[float], list[float]]:
    """Alternate requests between the two servers, so a busy moment hits both alike."""
    conns = [http.client.HTTPConnection("127.0.0.1", p, timeout=30) for p in ports]
    headers = {"Content-Type": "application/json"}
    out: tuple[list[float], list[float]] = ([], [])
    for i in range(n + 50):
        for conn, times in zip(conns, out, strict=True):
            t0 = time.perf_counter()
            conn.request("POST", "/v1/predict", body=body, headers=headers)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, resp.status
            if i >= 50:  # warm-up
                times.append(time.perf_counter() - t0)
    for conn in conns:
        conn.close()
    return out


def _p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        dirs = {"mlp": _mlp_dir(root), "onnx": _onnx_dir(root)}
        thread = LoopThread("bench")
        thread.start()
        try:
            head = f"{'format':6} {'batch':>5}  {'bastion p50/p99 ms':>19}"
            print(f"{head}  {'bare p50/p99 ms':>16}  ratio p50")
            for fmt, d in dirs.items():
                bastion_runner, bastion_port = thread.call(serve_app(make_app(load_dir(d))))
                bare_runner, bare_port = thread.call(serve_app(_bare_app(fmt, d)))
                for batch in (1, 64):
                    x = rng.uniform(0, 16, size=(batch, 64)).round(3).tolist()
                    body = json.dumps({"inputs": x}).encode()
                    ours, bare = _measure((bastion_port, bare_port), body, args.requests)
                    print(
                        f"{fmt:6} {batch:5}  {_p(ours, 50):8.3f} / {_p(ours, 99):7.3f}  "
                        f"{_p(bare, 50):7.3f} / {_p(bare, 99):6.3f}  "
                        f"{_p(ours, 50) / _p(bare, 50):6.2f}x"
                    )
                thread.call(bastion_runner.cleanup())
                thread.call(bare_runner.cleanup())
        finally:
            thread.stop()


if __name__ == "__main__":
    main()
