"""Demo scene: the digits model behind the gateway with two replicas; one is killed with
SIGKILL under load, and the scene counts the client requests that failed (it should be 0).
"""

from __future__ import annotations

import asyncio
import json
import os
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
    from bastion.errors import BastionError
    from bastion.serve.replica import random_model
    from bastion.vault import Vault

    vault = Vault.from_manifest(ctx.manifest())
    try:
        vault.snapshot(MODEL)
        return "the trained digits model from the vault"
    except BastionError:
        vault.commit("model/digits", files=random_model(0))
        return "an untrained stand-in model (no trained one was in the vault)"


def run(ctx: DemoContext) -> Scene:
    from bastion.demo import Scene
    from bastion.demo._load import predict_load
    from bastion.demo._load import wait_for as wait
    from bastion.events import EventWriter
    from bastion.serve import Gateway, GatewayThread, ReplicaSet

    scene = Scene(TITLE)
    manifest = ctx.manifest()
    service_name, service = next(iter(manifest.services.items()))
    local = next(b for b in service.backends if b.model is not None)
    which = _ensure_model(ctx)
    sink = EventWriter.in_state_dir(manifest.state_dir, segment=service.segment or "")
    gw = Gateway(service_name, service.policy, events=sink, probe_interval_s=0.2)
    replicas = ReplicaSet(
        gw,
        local,
        manifest_path=ctx.manifest_path,
        log_dir=manifest.state_dir / "serve" / service_name,
    )
    counts = {"ok": 0, "failed": 0}
    stop = threading.Event()
    body = json.dumps({"inputs": [[8] * 64]}).encode()

    def sent(name: str) -> float:
        labels = {"service": service_name, "backend": name}
        value = gw.metrics.registry.get_sample_value(
            "bastion_gateway_backend_requests_total", labels
        )
        return value or 0.0

    rejoined_s: float | None = None
    served_again = False
    last_routed_ms = 0.0
    with GatewayThread(gw) as thread:
        thread.call(replicas.start())
        try:

            def ready() -> list[str]:
                return thread.run(
                    lambda: [u.name for u in gw.pool.upstreams.values() if not u.needs_probe]
                )

            if not wait(lambda: len(ready()) >= 2, 30):
                scene.findings.append("the replicas did not become ready within 30 s")
                scene.ok = False
                return scene
            names = sorted(replicas.replicas)
            loader = threading.Thread(
                target=lambda: asyncio.run(predict_load(thread.url, body, stop, counts)),
                daemon=True,
            )
            loader.start()
            wait(lambda: counts["ok"] >= 300, 20)
            before = counts["ok"]
            victim = names[0]
            sup = replicas.replicas[victim]
            assert sup.child is not None
            os.kill(sup.child.pid, signal.SIGKILL)
            killed_at = time.monotonic()
            wait(lambda: counts["ok"] >= before + 600, 20)
            wait(lambda: sup.statistics().restarts >= 1, 30)
            up = thread.run(lambda: gw.pool.upstreams[victim])
            last_routed_ms = max(0.0, (up.last_sent - killed_at) * 1000)
            if wait(lambda: victim in ready(), 30):
                rejoined_s = time.monotonic() - killed_at
            served_before = sent(victim)
            served_again = wait(lambda: sent(victim) > served_before, 20)
            stop.set()
            loader.join(timeout=10)
            stats = thread.run(gw.statistics)
        finally:
            stop.set()
            thread.call(replicas.close())
    sink.close()
    scene.findings.append(
        f"served {which} from {len(names)} supervised replicas behind the {service_name} gateway"
    )
    scene.findings.append(
        f"killed replica {victim} (SIGKILL) under load of 4 concurrent clients: "
        f"{counts['ok']} requests answered, {counts['failed']} failed"
    )
    scene.findings.append(
        f"{victim} was ejected on its first failed connection; the last request routed "
        f"to it left {last_routed_ms:.0f} ms after the kill signal; "
        f"{stats.attempts.requeues} in-flight requests moved to the other replica (requeues), "
        f"{stats.retry_budget.retries} budgeted retries/hedges"
    )
    if rejoined_s is not None:
        scene.findings.append(
            f"bastion.supervise restarted {victim}; it rejoined after passing its health probe "
            f"{rejoined_s:.2f} s after the kill"
            + (", and served again" if served_again else ", but got no traffic afterwards")
        )
    else:
        scene.findings.append(f"{victim} did not rejoin within 30 s")
    scene.ok = (
        counts["failed"] == 0 and counts["ok"] > before and rejoined_s is not None and served_again
    )
    return scene
