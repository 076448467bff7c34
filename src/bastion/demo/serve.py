"""Demo scene: the digits model behind the gateway with two replicas; one is killed with
SIGKILL under load, and the scene counts the client requests that failed (it should be 0).
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "Serving: a replica is killed under load, and no request fails"
MODEL = "model/digits@latest"


def _ensure_model(ctx: DemoContext) -> str:
    """The trained model if the train scene stored one; else a small random one (said so)."""
    import numpy as np
    from safetensors.numpy import save

    from bastion.errors import BastionError
    from bastion.vault import Vault

    vault = Vault.from_manifest(ctx.manifest())
    try:
        vault.snapshot(MODEL)
        return "the trained digits model from the vault"
    except BastionError:
        rng = np.random.default_rng(0)
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
        vault.commit(
            "model/digits",
            files={"model.safetensors": save(tensors), "model.json": json.dumps(meta).encode()},
        )
        return "an untrained stand-in model (no trained one was in the vault)"


def run(ctx: DemoContext) -> Scene:
    import aiohttp

    from bastion.demo import Scene
    from bastion.serve import (
        EventSink,
        Gateway,
        GatewayThread,
        UpstreamSpec,
        spawn_server,
        stop_server,
    )

    scene = Scene(TITLE)
    manifest = ctx.manifest()
    service_name, service = next(iter(manifest.services.items()))
    which = _ensure_model(ctx)
    argv = ["-m", "bastion.serve.replica", MODEL, "--manifest", str(ctx.manifest_path)]
    procs = [spawn_server(argv) for _ in range(2)]
    sink = EventSink(manifest.state_dir, segment=service.segment or "")
    gw = Gateway(service_name, service.policy, events=sink, probe_interval_s=0.2)
    for i, (_, port) in enumerate(procs):
        gw.add_upstream(
            UpstreamSpec(
                name=f"local-{i}",
                url=f"http://127.0.0.1:{port}",
                group="local",
                kind="local",
                probe_path="/health",
            )
        )
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    body = json.dumps({"inputs": [[8] * 64]}).encode()

    async def load(url: str) -> None:
        async with aiohttp.ClientSession() as session:

            async def worker() -> None:
                while not stop.is_set():
                    try:
                        async with session.post(
                            url + "/v1/predict",
                            data=body,
                            headers={"Content-Type": "application/json"},
                        ) as r:
                            await r.read()
                            counts["ok" if r.status == 200 else "failed"] += 1
                    except aiohttp.ClientError:
                        counts["failed"] += 1

            await asyncio.gather(*(worker() for _ in range(4)))

    try:
        with GatewayThread(gw) as thread:
            loader = threading.Thread(target=lambda: asyncio.run(load(thread.url)), daemon=True)
            loader.start()
            deadline = time.monotonic() + 20
            while counts["ok"] < 300 and time.monotonic() < deadline:
                time.sleep(0.05)
            before = counts["ok"]
            victim = procs[0][0]
            victim.send_signal(signal.SIGKILL)
            killed_at = time.monotonic()
            victim.wait()
            while counts["ok"] < before + 600 and time.monotonic() < deadline + 20:
                time.sleep(0.05)
            stop.set()
            loader.join(timeout=10)
            stats = thread.run(gw.statistics)
            after = time.monotonic() - killed_at
    finally:
        for proc, _ in procs:
            stop_server(proc)
        sink.close()
    dead = stats["pool"]["upstreams"][0]
    scene.findings.append(f"served {which} from 2 replicas behind the {service_name} gateway")
    scene.findings.append(
        f"killed replica local-0 (SIGKILL) under load of 4 concurrent clients; "
        f"{counts['ok']} requests answered, {counts['failed']} failed "
        f"(in the {after:.1f} s after the kill: {counts['ok'] - before} answered)"
    )
    scene.findings.append(
        f"local-0 ejected on its first refused connection (breaker {dead['breaker']['state']}, "
        f"reason: {dead['down_reason'] or 'n/a'}); retries used "
        f"{stats['retry_budget']['retries']} of the 20% budget"
    )
    scene.ok = counts["failed"] == 0 and counts["ok"] > before
    return scene
