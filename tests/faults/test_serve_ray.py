"""Replicas on Ray nodes (issue 18, item 2): a gateway whose local backend has
``placement: {backend: ray}`` runs each replica in a Ray actor on a node of a real
3-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, one CPU per node);
the replicas spread over the nodes, and removing a node that holds one under steady
load (aiohttp and the openai client) fails no request: the replica set notices the
actor's death, starts a replacement on a live node and returns to its count. An
unreachable Ray address is exit 2 naming the manifest place."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bastion.errors import BastionError
from bastion.events import EventLog, EventWriter
from bastion.manifest import Placement, load
from bastion.serve import Gateway, GatewayThread, ReplicaSet
from tests.faults.test_gateway_faults import Load
from tests.helpers import commit_model
from tests.ray_cluster import ray_cluster

ray = pytest.importorskip("ray")

MB = 1024 * 1024
BASTION = [sys.executable, "-m", "bastion"]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """The shared 3-node cluster (``tests/ray_cluster.py``): a head and two worker
    nodes, one CPU each, so a replica needing {CPU: 1} has one node to itself, with
    Ray's node health check shortened so a removed node is declared dead in seconds."""
    from bastion.supervise import _ray

    with ray_cluster() as c:
        try:
            yield c.cluster
        finally:
            _ray.leave()


def _wait(cond: Any, timeout: float = 90.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"{what}: not met in time"
        time.sleep(0.05)


def _place_on_ray(example: Path, address: str, replicas: int) -> Path:
    yaml = YAML()
    path = example / "bastion.yaml"
    doc = yaml.load(path)
    local = doc["services"]["digits"]["backends"][0]
    local["replicas"] = {"min": replicas, "max": replicas}
    local["placement"] = {"backend": "ray", "address": address}
    yaml.dump(doc, path)
    return path


@pytest.mark.slow
def test_a_lost_node_s_replica_is_replaced_on_a_live_node_with_no_failed_request(
    cluster: Any, example_copy: Path, seed: int, rng: random.Random
) -> None:
    commit_model(example_copy, seed)
    path = _place_on_ray(example_copy, cluster.address, replicas=2)
    manifest = load(path)
    service = manifest.services["digits"]
    local = service.backends[0]
    sink = EventWriter.in_state_dir(manifest.state_dir)
    gw = Gateway("digits", service.policy, events=sink, probe_interval_s=0.2)
    rs = ReplicaSet(gw, local, manifest_path=path, log_dir=manifest.state_dir / "serve")
    with GatewayThread(gw) as thread:
        thread.call(rs.start(), timeout=120)

        def healthy() -> list[str]:
            return thread.run(
                lambda: [
                    u.name
                    for u in gw.pool.upstreams.values()
                    if not u.needs_probe and u.breaker.state == "closed"
                ]
            )

        try:
            _wait(lambda: len(healthy()) == 2, what="2 replicas healthy")
            handles: dict[str, Any] = dict(rs.replicas)
            nodes = {n: h.placement()["node"] for n, h in handles.items()}
            assert len(set(nodes.values())) == 2, nodes  # spread: one replica a node
            # never the head (its GCS is the cluster) nor the node this driver joined
            keep = {cluster.head_node.node_id, ray.get_runtime_context().get_node_id()}
            candidates = sorted(n for n, node in nodes.items() if node not in keep)
            assert candidates, f"every replica is on the head or the driver's node: {nodes}"
            name = rng.choice(candidates)
            lost = nodes[name]
            victim = next(n for n in cluster.list_all_nodes() if n.node_id == lost)
            survivor = next(n for n in nodes if n != name)
            with Load(thread.url) as load_:
                load_.wait_for(100)
                removed_at = time.monotonic()
                cluster.remove_node(victim, allow_graceful=False)
                handle = handles[name]
                _wait(lambda: handle.statistics().restarts >= 1, what="replaced")
                noticed_s = time.monotonic() - removed_at
                _wait(
                    lambda: handle.placement()["node"] not in ("", lost),
                    what="placed on a live node",
                )
                _wait(lambda: name in healthy(), what="the replacement healthy")
                print(
                    f"node removed: loss noticed after {noticed_s:.1f} s "
                    f"({handle.statistics().reason}), replacement healthy after "
                    f"{time.monotonic() - removed_at:.1f} s, {load_.ok} requests ok so far"
                )
                up = thread.run(lambda: gw.pool.upstreams[name])
                sent_before = up.metrics.requests.value
                load_.wait_for(100)
                _wait(lambda: up.metrics.requests.value > sent_before, what="traffic on it")
            new_node = handle.placement()["node"]
            assert new_node != handles[survivor].placement()["node"]  # still spread
            assert len(rs.replicas) == 2
            assert len(healthy()) == 2
        finally:
            thread.call(rs.close(), timeout=60)
    sink.close()
    assert load_.ok > 0
    assert load_.failed == [], load_.failed[:5]
    with EventLog.in_state_dir(manifest.state_dir) as log:
        exited = [e for e in log.query(subject="digits") if e.kind == "serve.replica.exited"]
    assert any(e.data.get("replica") == name and e.data.get("node") == lost for e in exited)


@pytest.mark.slow
def test_an_unreachable_ray_address_is_exit_2_naming_the_manifest_place(
    example_copy: Path, seed: int
) -> None:
    commit_model(example_copy, seed)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    path = _place_on_ray(example_copy, dead, replicas=1)
    yaml = YAML()
    doc = yaml.load(path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        doc["services"]["digits"]["listen"] = f"127.0.0.1:{s.getsockname()[1]}"
    yaml.dump(doc, path)
    done = subprocess.run(
        [*BASTION, "serve", "digits", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "internal error" not in out
    assert "serving" not in out  # said before the gateway listens
    assert "services.digits.backends.local.placement.address" in out
    assert dead in out
    assert "ray start --head" in out


@pytest.mark.parametrize(
    ("fields", "says"),
    [
        ({"backend": "ray"}, "backend ray needs address"),
        ({"backend": "ray", "address": "ray://head:10001"}, "Ray Client's ray://"),
        ({"address": "10.0.0.5:6379"}, "address and resources are for backend ray"),
    ],
)
def test_a_bad_placement_is_refused_with_the_fix(fields: dict[str, Any], says: str) -> None:
    with pytest.raises((ValueError, BastionError), match=says):
        Placement(**fields)
