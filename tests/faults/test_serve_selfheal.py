"""Self-healing replicas: `bastion.serve.replica` processes loaded from a real vault, run by
`bastion.supervise` through `ReplicaSet`; one is SIGKILLed under load, is restarted, and
rejoins only after its health probe passes, with no client request failing."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

from bastion.events import EventWriter
from bastion.manifest import load
from bastion.serve import Gateway, GatewayThread, ReplicaSet
from tests.faults.test_gateway_faults import Load
from tests.helpers import commit_model


def _wait(cond: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_killed_replica_is_restarted_and_rejoins_after_probe(
    example_copy: Path, seed: int, rng: random.Random
) -> None:
    commit_model(example_copy, seed)
    manifest = load(example_copy / "bastion.yaml")
    service = manifest.services["digits"]
    local = next(b for b in service.backends if b.model is not None)
    sink = EventWriter.in_state_dir(manifest.state_dir)
    gw = Gateway("digits", service.policy, events=sink, probe_interval_s=0.2)
    rs = ReplicaSet(
        gw, local, manifest_path=example_copy / "bastion.yaml", log_dir=manifest.state_dir / "serve"
    )
    with GatewayThread(gw) as thread:
        thread.call(rs.start())

        def healthy() -> list[str]:
            return thread.run(
                lambda: [
                    u.name
                    for u in gw.pool.upstreams.values()
                    if not u.needs_probe and u.breaker.state == "closed"
                ]
            )

        try:
            _wait(lambda: len(healthy()) == 2)
            with Load(thread.url) as load_:
                load_.wait_for(100)
                name = rng.choice(sorted(rs.replicas))
                sup = rs.replicas[name]
                assert sup.child is not None
                old_pid = sup.child.pid
                import os

                os.kill(old_pid, signal.SIGKILL)
                _wait(lambda: sup.statistics().restarts >= 1)
                _wait(lambda: name in healthy())
                up = gw.pool.upstreams[name]
                sent_before = up.metrics.requests.value
                load_.wait_for(100)
                _wait(lambda: up.metrics.requests.value > sent_before)
        finally:
            thread.call(rs.close())
    sink.close()
    assert load_.failed == [], load_.failed[:5]
    assert sup.child is None or sup.child.pid != old_pid
    from bastion.events import EventLog

    with EventLog.in_state_dir(manifest.state_dir) as log:
        kinds = [e.kind for e in log.query(subject="digits")]
    assert "serve.replica.exited" in kinds
    assert "serve.backend.ejected" in kinds
    restored = [k for k in kinds if k == "serve.backend.restored"]
    assert restored  # it came back through its probe
