"""Training slots and replicas on ONE real 3-node Ray cluster on this machine
(``tests/ray_cluster.py``: a head and two worker nodes, one CPU each), started once for
this module, so ``--dist loadfile`` runs every Ray test on one worker and pays the
cluster's start (about 10 s, 20-30 s under load) once.

- Training (issue 18, item 1): the Ray driver (``bastion train run``) is SIGKILLed and
  started again, and the node running the worker is removed mid-training. Each run's
  final weights and optimizer state must hash the same as one uninterrupted local run
  of the example (bit-exact resume).
- Replicas (item 2): a gateway whose local backend has ``placement: {backend: ray}``
  runs each replica in a Ray actor; the replicas spread over the nodes, and removing a
  node that holds one under steady load (aiohttp and the openai client) fails no
  request: the replica set notices the actor's death, starts a replacement on a live
  node and returns to its count. An unreachable Ray address is exit 2 naming the
  manifest place.

Order (pytest runs a file top to bottom): the tests that need no cluster, then the
driver SIGKILL (it removes no node), then the two node-loss tests. A removed node is
gone for good, so each test that needs two worker nodes calls
``cluster.ensure_workers(2)`` first, which adds one back only when one is missing (the
second node-loss test pays one node start; no test pays one it does not need). The
step each fault aims at, and the node lost, come from the ``rng`` fixture (seed
printed).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from bastion.errors import BastionError
from bastion.events import EventLog, EventWriter
from bastion.manifest import Placement, load
from bastion.serve import Gateway, GatewayThread, ReplicaSet
from bastion.supervise import heartbeat_progress
from bastion.train import JobResult, JobSupervisor
from bastion.train._ray import RayChild
from bastion.vault import make_key
from tests.conftest import EXAMPLE
from tests.faults.test_gateway_faults import Load
from tests.helpers import commit_model
from tests.ray_cluster import RayCluster, ray_cluster

ray = pytest.importorskip("ray")

STEPS = 300
JOB = "train-digits"
BASTION = [sys.executable, "-m", "bastion"]


class Baseline:
    """The final state hash of one uninterrupted local run of the example, started in
    the background when the module asks for it, so it trains while the cluster starts."""

    def __init__(self, work: Path) -> None:
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
        make_key(work / ".bastion/keys/signing.key")
        make_key(work / ".bastion/keys/admin.key")
        self.out = work / "hash"
        self.proc = subprocess.Popen(
            [sys.executable, "train.py", "--steps", str(STEPS), "--hash-out", str(self.out)],
            cwd=work,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._hash: str | None = None

    def hash(self) -> str:
        if self._hash is None:
            out, _ = self.proc.communicate(timeout=180)
            assert self.proc.returncode == 0, out.decode(errors="replace")
            self._hash = self.out.read_text()
        return self._hash

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(30)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Baseline]:
    b = Baseline(tmp_path_factory.mktemp("baseline") / "digits")
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    """The module's cluster; Ray's node health check is shortened (``FAST_HEALTH``) so
    a node removed without draining is declared dead in about 2 s."""
    from bastion.supervise import _ray

    with ray_cluster() as c:
        try:
            yield c
        finally:
            _ray.leave()


def _wait_for(cond: Callable[[], Any], timeout: float = 120.0, what: str = "condition") -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"{what}: not met within {timeout} s")


# --- no cluster needed -------------------------------------------------------------


def _place_on_ray(example: Path, address: str, replicas: int) -> Path:
    yaml = YAML()
    path = example / "bastion.yaml"
    doc = yaml.load(path)
    local = doc["services"]["digits"]["backends"][0]
    local["replicas"] = {"min": replicas, "max": replicas}
    local["placement"] = {"backend": "ray", "address": address}
    yaml.dump(doc, path)
    return path


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


# --- training on the cluster ---------------------------------------------------------


def _prepare(target: Path, address: str, *, step_ms: int = 15) -> Path:
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    make_key(target / ".bastion/keys/signing.key")
    make_key(target / ".bastion/keys/admin.key")
    text = (target / "bastion.yaml").read_text()
    old = '    command: [python, train.py, --steps, "400"]\n'
    assert old in text
    new = (
        f'    command: [python, train.py, --steps, "{STEPS}", --step-ms, "{step_ms}", '
        "--hash-out, final-hash]\n"
        "    slots:\n"
        f"      - {{name: ray, backend: ray, address: '{address}', resources: {{trainer: 1}}}}\n"
    )
    (target / "bastion.yaml").write_text(text.replace(old, new))
    return target


@pytest.mark.slow
def test_driver_sigkill_then_restart_resumes_from_newest_checkpoint(
    baseline: Baseline, cluster: RayCluster, tmp_path: Path, rng: random.Random
) -> None:
    # The orphan must still be training when the new driver comes up and stops it: the
    # kill comes by step 100 at 40 ms a step, so it has 200 steps (8 s) to do so, and it
    # takes about 3 s on an idle machine (the test prints the steps to spare). Every step
    # of the run is paid once (the orphan's emergency checkpoint is the one restored),
    # so the step time sets the test's length: 300 x 40 ms = 12 s.
    work = _prepare(tmp_path / "digits", cluster.address, step_ms=40)
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    heartbeat = Path(manifest.state_dir) / "train" / JOB / "heartbeat"
    cmd = [*BASTION, "train", "run", "-f", str(work / "bastion.yaml"), JOB]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "driver-1.log").open("wb")
    driver = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    target = rng.randrange(60, 100)  # after the checkpoint of step 50
    try:
        _wait_for(
            lambda: (
                (heartbeat_progress(heartbeat) or 0) >= target
                and events.query(kind="train.checkpoint.saved", subject=JOB)
            ),
            what=f"step {target} and a checkpoint",
        )
    finally:
        driver.send_signal(signal.SIGKILL)
        driver.wait(30)
        log.close()
    saved_before = max(
        e.data["step"] for e in events.query(kind="train.checkpoint.saved", subject=JOB)
    )
    done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, timeout=300, check=False)
    out = done.stdout.decode() + done.stderr.decode()
    assert done.returncode == 0, out
    assert (work / "final-hash").read_text() == baseline.hash()
    resumed = events.query(kind="train.supervisor.resumed", subject=JOB)
    assert len(resumed) == 1, out
    # the orphan was still training on its node, and was stopped politely: it wrote an
    # emergency checkpoint, the newest one, which the new worker restored
    assert resumed[0].data["orphan"] == "stopped", resumed[0].data
    saved = events.query(kind="train.checkpoint.saved", subject=JOB)
    newest = max(e.data["step"] for e in saved if e.id < resumed[0].id)
    restored = [e for e in events.query(kind="train.restored", subject=JOB) if e.id > resumed[0].id]
    assert restored
    assert restored[0].data["step"] == newest >= saved_before
    assert newest < STEPS, "the orphan had finished before the driver came back"
    print(
        f"driver killed at step >= {target}; resumed from step {newest} "
        f"({STEPS - newest} steps to spare)"
    )


@pytest.mark.slow
def test_node_loss_resumes_on_another_node_bit_exact(
    baseline: Baseline, cluster: RayCluster, tmp_path: Path, rng: random.Random
) -> None:
    cluster.ensure_workers(2)  # one to lose, one to resume on
    work = _prepare(tmp_path / "digits", cluster.address)
    manifest = load(work / "bastion.yaml")
    events = EventLog.in_state_dir(manifest.state_dir)
    sup = JobSupervisor.from_manifest(manifest, JOB, events=events)
    result: list[JobResult] = []
    thread = threading.Thread(target=lambda: result.append(sup.run(handle_signals=False)))
    thread.start()
    target = rng.randrange(60, 200)

    def running_at_target() -> RayChild | None:
        child = sup.supervisor.child if sup.supervisor else None
        progress = heartbeat_progress(sup.heartbeat_path)
        if isinstance(child, RayChild) and child.exit is None and (progress or 0) >= target:
            return child
        return None

    child = _wait_for(running_at_target, what=f"the Ray worker at step {target}")
    lost_node = child.node
    at_loss = heartbeat_progress(sup.heartbeat_path)
    cluster.remove(lost_node)
    thread.join(240)
    assert result, "the supervisor did not finish"
    assert result[0].ok, result[0]
    assert (work / "final-hash").read_text() == baseline.hash()
    lost = events.query(kind="train.node.lost", subject=JOB)
    assert [e.data["node"] for e in lost] == [lost_node]
    nodes = [e.data["node"] for e in events.query(kind="train.started", subject=JOB)]
    assert nodes[0] == lost_node
    assert nodes[-1] != lost_node, f"restarted on the lost node: {nodes}"
    restored = [e.data["step"] for e in events.query(kind="train.restored", subject=JOB)]
    assert len(restored) >= 2
    assert 0 < restored[-1] <= (at_loss or 0) + 50
    print(f"node lost at step {at_loss}; resumed from step {restored[-1]} on {nodes[-1]}")


# --- replicas on the cluster ---------------------------------------------------------


@pytest.mark.slow
def test_a_lost_node_s_replica_is_replaced_on_a_live_node_with_no_failed_request(
    cluster: RayCluster, example_copy: Path, seed: int, rng: random.Random
) -> None:
    # two replicas of {CPU: 1} on three 1-CPU nodes, and a free one for the replacement
    cluster.ensure_workers(2)
    ray_cluster_ = cluster.cluster
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
            _wait_for(lambda: len(healthy()) == 2, 90, what="2 replicas healthy")
            handles: dict[str, Any] = dict(rs.replicas)
            nodes = {n: h.placement()["node"] for n, h in handles.items()}
            assert len(set(nodes.values())) == 2, nodes  # spread: one replica a node
            # never the head (its GCS is the cluster) nor the node this driver joined
            keep = {ray_cluster_.head_node.node_id, ray.get_runtime_context().get_node_id()}
            candidates = sorted(n for n, node in nodes.items() if node not in keep)
            assert candidates, f"every replica is on the head or the driver's node: {nodes}"
            name = rng.choice(candidates)
            lost = nodes[name]
            victim = next(n for n in ray_cluster_.list_all_nodes() if n.node_id == lost)
            survivor = next(n for n in nodes if n != name)
            with Load(thread.url) as load_:
                load_.wait_for(100)
                removed_at = time.monotonic()
                ray_cluster_.remove_node(victim, allow_graceful=False)
                handle = handles[name]
                _wait_for(lambda: handle.statistics().restarts >= 1, 90, what="replaced")
                noticed_s = time.monotonic() - removed_at
                _wait_for(
                    lambda: handle.placement()["node"] not in ("", lost),
                    90,
                    what="placed on a live node",
                )
                _wait_for(lambda: name in healthy(), 90, what="the replacement healthy")
                print(
                    f"node removed: loss noticed after {noticed_s:.1f} s "
                    f"({handle.statistics().reason}), replacement healthy after "
                    f"{time.monotonic() - removed_at:.1f} s, {load_.ok} requests ok so far"
                )
                up = thread.run(lambda: gw.pool.upstreams[name])
                sent_before = up.metrics.requests.value
                load_.wait_for(100)
                _wait_for(lambda: up.metrics.requests.value > sent_before, 90, what="traffic")
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
