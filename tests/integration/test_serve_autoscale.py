"""The replica autoscaler end to end: load above one replica's target concurrency makes the
replica set grow (through bastion.supervise), the new replica joins only after its probe,
then serves; the scaling is recorded as an event. Lowered bounds scale it in under the
same load without failing a request (the replica leaves routing and drains before it
stops), and a drained set stops scaling (a replica it started then would take traffic
just before the set is stopped)."""

from __future__ import annotations

import time
from pathlib import Path

from bastion.events import EventLog, EventWriter
from bastion.manifest import load
from bastion.serve import Autoscaler, Gateway, GatewayThread, ReplicaSet
from tests.faults.test_gateway_faults import Load
from tests.helpers import commit_model


def test_load_scales_replicas_up_and_the_new_one_serves(example_copy: Path, seed: int) -> None:
    commit_model(example_copy, seed)
    manifest = load(example_copy / "bastion.yaml")
    service = manifest.services["digits"]
    local = next(b for b in service.backends if b.model is not None)
    sink = EventWriter.in_state_dir(manifest.state_dir)
    # a 5 s attempt timeout, not the example's 1 s: after the scale-in one replica takes
    # the 4 clients, and under the suite's load an answer may take over a second, which
    # is not what this test is about
    policy = service.policy.model_copy(update={"timeout_ms": 5000})
    gw = Gateway("digits", policy, events=sink, probe_interval_s=0.2)
    scaler = Autoscaler(
        min_replicas=1, max_replicas=2, target_per_replica=0.5, cooldown_s=600, up_cooldown_s=0
    )
    rs = ReplicaSet(
        gw,
        local,
        manifest_path=example_copy / "bastion.yaml",
        log_dir=manifest.state_dir / "serve",
        autoscaler=scaler,
    )
    with GatewayThread(gw) as thread:
        thread.call(rs.start())
        try:
            deadline = time.monotonic() + 40
            while not thread.run(
                lambda: any(not u.needs_probe for u in gw.pool.upstreams.values())
            ):
                assert time.monotonic() < deadline, "the first replica never became ready"
                time.sleep(0.05)
            assert len(rs.replicas) == 1
            with Load(thread.url, http_concurrency=4) as load_:
                while True:
                    ready = thread.run(
                        lambda: [u for u in gw.pool.upstreams.values() if not u.needs_probe]
                    )
                    served = [u for u in ready if u.metrics.requests.value > 0]
                    if len(served) == 2:
                        break
                    assert time.monotonic() < deadline, f"never scaled: {rs.statistics()}"
                    time.sleep(0.05)
                # lower the bounds under the same load: one replica drains, then stops
                scaler.max_replicas, scaler.cooldown_s = 1, 0
                deadline = time.monotonic() + 40
                while thread.run(lambda: len(rs.replicas)) > 1:
                    assert time.monotonic() < deadline, f"never scaled in: {rs.statistics()}"
                    time.sleep(0.05)
                done = load_.ok
                while load_.ok < done + 50:  # the one left serves on
                    assert time.monotonic() < deadline, "no answers after the scale-in"
                    time.sleep(0.05)
            scaler.max_replicas = 3  # a set that would grow, were it not draining
            thread.call(rs.drain(1.0))
            assert not thread.run(lambda: rs.scaling), "drain() left the set scaling"
            arms = thread.run(lambda: {gw.pool.upstreams[n].arm for n in rs.replicas})
            assert arms == {"draining"}, arms
        finally:
            thread.call(rs.close())
    sink.close()
    assert load_.failed == [], load_.failed[:5]
    with EventLog.in_state_dir(manifest.state_dir) as log:
        scaled = log.query(kind="serve.scaled")
    assert scaled
    assert scaled[0].data["replicas"] == 2, [(e.kind, e.data) for e in scaled]
