"""Gateway overhead, side by side: direct call, bare aiohttp proxy, Bastion, LiteLLM proxy.

Every target fronts the same trivial OpenAI-compatible backend (``bastion.serve.standin``)
and runs in its own process, so its CPU time can be read per request. Measured:
- latency added over a direct call, p50 and p99, sequential (one keep-alive client);
- maximum throughput with ``wrk -t2 -c32`` (when /usr/bin/wrk exists);
- gateway CPU per request (user+sys of the gateway process / requests it served).

LiteLLM runs from its own venv (``benchmarks/.litellm-venv``, gitignored; create it with
``python -m venv benchmarks/.litellm-venv && benchmarks/.litellm-venv/bin/pip install
'litellm[proxy]'``); it is skipped, and says so, when that venv is missing.

Run: ``.venv/bin/python benchmarks/gateway.py [--requests 3000] [--seconds 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
BODY = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()

BARE = """
import sys
import aiohttp
from aiohttp import web

UPSTREAM = sys.argv[1]


async def handle(request):
    body = await request.read()
    async with request.app["s"].post(
        UPSTREAM + request.path, data=body, headers={"Content-Type": "application/json"}
    ) as r:
        data = await r.read()
        return web.Response(status=r.status, body=data, content_type=r.content_type)


async def start(app):
    app["s"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


async def stop(app):
    await app["s"].close()


app = web.Application()
app.on_startup.append(start)
app.on_cleanup.append(stop)
app.router.add_post("/v1/chat/completions", handle)
print("PORT", sys.argv[2], flush=True)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), access_log=None, print=None)
"""

BASTION = """
import asyncio, sys
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, UpstreamSpec


async def main():
    gw = Gateway("bench", GatewayPolicy(timeout_ms=5000, hedge="p95", retry_budget=0.2,
                                        max_queue=256), port=int(sys.argv[2]))
    gw.add_upstream(UpstreamSpec(name="b0", url=sys.argv[1], initial_limit=256))
    await gw.start()
    print("PORT", gw.port, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str]) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("PORT"):
            return proc, int(line.split()[1])
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"could not start {argv[:3]}")


def wait_http(port: int, path: str = "/v1/chat/completions", timeout: float = 120) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}{path}",
                data=BODY,
                headers={"Content-Type": "application/json", "Authorization": "Bearer sk-x"},
            )
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"port {port} never answered 200")


async def sequential(port: int, n: int) -> list[float]:
    import aiohttp

    url = f"http://127.0.0.1:{port}/v1/chat/completions"
    headers = {"Content-Type": "application/json", "Authorization": "Bearer sk-x"}
    out = []
    async with aiohttp.ClientSession() as s:
        for i in range(n + 50):
            t0 = time.perf_counter()
            async with s.post(url, data=BODY, headers=headers) as r:
                await r.read()
                assert r.status == 200, r.status
            if i >= 50:
                out.append(time.perf_counter() - t0)
    return sorted(out)


def wrk(port: int, seconds: int) -> float | None:
    if not shutil.which("wrk"):
        return None
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(
            'wrk.method = "POST"\nwrk.body = ' + json.dumps(BODY.decode()) + "\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
            'wrk.headers["Authorization"] = "Bearer sk-x"\n'
        )
        script = f.name
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c32",
            f"-d{seconds}s",
            "-s",
            script,
            f"http://127.0.0.1:{port}/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script).unlink()
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    return None


def cpu_s(proc: subprocess.Popen[str]) -> float:
    p = psutil.Process(proc.pid)
    total = 0.0
    for q in [p, *p.children(recursive=True)]:
        t = q.cpu_times()
        total += t.user + t.system
    return total


def measure(
    name: str,
    *,
    port: int,
    proc: subprocess.Popen[str] | None,
    n: int,
    seconds: int,
    base: list[float] | None,
) -> dict[str, float | str | None]:
    asyncio.run(sequential(port, 100))  # warm
    c0 = cpu_s(proc) if proc else 0.0
    lat = asyncio.run(sequential(port, n))
    c1 = cpu_s(proc) if proc else 0.0
    rps = wrk(port, seconds)
    p50, p99 = lat[len(lat) // 2], lat[int(len(lat) * 0.99)]
    row: dict[str, float | str | None] = {
        "target": name,
        "p50_ms": p50 * 1e3,
        "p99_ms": p99 * 1e3,
        "rps": rps,
        "cpu_ms_per_req": (c1 - c0) / n * 1e3 if proc else None,
    }
    if base is not None:
        row["added_p50_ms"] = (p50 - base[len(base) // 2]) * 1e3
        row["added_p99_ms"] = (p99 - base[int(len(base) * 0.99)]) * 1e3
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--seconds", type=int, default=5)
    ap.add_argument("--skip-litellm", action="store_true")
    args = ap.parse_args()
    py = sys.executable
    procs = []
    try:
        backend, bport = start([py, "-m", "bastion.serve.standin", "--name", "backend"])
        procs.append(backend)
        upstream = f"http://127.0.0.1:{bport}"
        base = asyncio.run(sequential(bport, args.requests))
        rows = [
            measure(
                "direct", port=bport, proc=None, n=args.requests, seconds=args.seconds, base=None
            )
        ]
        rows[0]["added_p50_ms"] = rows[0]["added_p99_ms"] = 0.0
        for name, code in (("bare proxy", BARE), ("bastion", BASTION)):
            proc, port = start([py, "-c", code, upstream, str(free_port())])
            procs.append(proc)
            wait_http(port)
            rows.append(
                measure(
                    name, port=port, proc=proc, n=args.requests, seconds=args.seconds, base=base
                )
            )
        venv = HERE / ".litellm-venv" / "bin" / "litellm"
        if args.skip_litellm or not venv.exists():
            print(f"litellm: skipped ({venv} missing; see this file's docstring)")
        else:
            cfg = Path(tempfile.mkdtemp()) / "config.yaml"
            cfg.write_text(
                "model_list:\n  - model_name: m\n    litellm_params:\n"
                f"      model: openai/m\n      api_base: {upstream}/v1\n      api_key: sk-x\n"
            )
            port = free_port()
            proc = subprocess.Popen(
                [str(venv), "--config", str(cfg), "--port", str(port), "--num_workers", "1"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            procs.append(proc)  # type: ignore[arg-type]
            wait_http(port)
            rows.append(
                measure(
                    "litellm",
                    port=port,
                    proc=proc,  # type: ignore[arg-type]
                    n=max(300, args.requests // 10),
                    seconds=args.seconds,
                    base=base,
                )
            )
    finally:
        for p in procs:
            p.kill()
            p.wait()
    print(json.dumps(rows, indent=1))
    bare = next(r for r in rows if r["target"] == "bare proxy")
    ours = next(r for r in rows if r["target"] == "bastion")
    print(
        f"bastion added latency p50 {ours['added_p50_ms']:.3f} ms (goal <= 0.5), "
        f"p99 {ours['added_p99_ms']:.3f} ms (goal <= 2)"
    )
    if bare["cpu_ms_per_req"] and ours["cpu_ms_per_req"]:
        print(
            f"bastion CPU/request {ours['cpu_ms_per_req']:.3f} ms = "
            f"{ours['cpu_ms_per_req'] / bare['cpu_ms_per_req']:.2f}x bare (goal <= 1.5x)"
        )
    if bare["rps"] and ours["rps"]:
        print(
            f"bastion throughput {ours['rps']:.0f} req/s = "
            f"{ours['rps'] / bare['rps']:.2f}x bare (goal >= 0.67x)"
        )


if __name__ == "__main__":
    main()
