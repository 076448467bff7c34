"""Golden probes in production, with real parts: two supervised replica processes
(``python -m bastion.serve.replica``) behind a real gateway, a golden set read from a real
vault, and the real ``openai`` client sending user requests throughout.

One replica's model file is swapped (``SwapModel``) and the replica is killed with
SIGKILL; its supervisor starts it again on the swapped file, so it is up, passes its
health probe and answers 200, wrongly. Golden probes eject it within two probe
intervals (measured from the events), no user request fails (the other replica serves
them), probe traffic is counted apart from user traffic, and the replica rejoins only
after its answers are right again."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from safetensors.numpy import save_file

from bastion import event_kinds as ek
from bastion.drill.faults import Scope, SwapModel, degrade
from bastion.errors import UsageError
from bastion.events import EventLog, EventWriter
from bastion.manifest import GatewayPolicy
from bastion.serve import (
    Gateway,
    GatewayThread,
    GoldenProber,
    GoldenSet,
    UpstreamSpec,
    load_golden,
)
from bastion.serve.replica import load_dir
from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor
from bastion.validate import Table
from bastion.vault import Vault, make_key
from tests.conftest import EXAMPLE
from tests.integration.test_validate_model_gate import _SPEC, _digits, _weights

EVERY_S = 1.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait(cond: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _model_dir(root: Path) -> Path:
    root.mkdir(parents=True)
    save_file(_weights(100), str(root / "model.safetensors"))
    (root / "model.json").write_text(json.dumps(_SPEC))
    return root


def _golden(tmp: Path, model_dir: Path) -> tuple[Vault, str, np.ndarray]:
    """A vault holding the golden set: rows 1598- of the example that the good model
    answers right (expected answers are the true labels). Returns its rows too."""
    x, y, lines = _digits(EXAMPLE / "dataset")
    model = load_dir(model_dir)
    rows = np.arange(1598, len(y))
    right = rows[model.logits(x[rows]).argmax(axis=1) == y[rows]]
    golden = tmp / "golden"
    golden.mkdir()
    (golden / "golden.csv").write_text("\n".join([lines[0], *(lines[i + 1] for i in right)]) + "\n")
    make_key(tmp / "keys" / "signing.key")
    vault = Vault([tmp / "vault" / "a"], key_path=tmp / "keys" / "signing.key")
    ref = vault.commit("dataset/digits-golden", {"golden.csv": golden / "golden.csv"}).ref
    return vault, ref, x[right]


def _replica(model_dir: Path, port: int, log: Path) -> Supervisor:
    argv = ["-m", "bastion.serve.replica", "digits", "--dir", str(model_dir)]
    spec = ProcessSpec(
        argv=[sys.executable, *argv, "--port", str(port)], name=model_dir.name, log_path=log
    )
    sup = Supervisor(
        spec,
        backoff=Backoff(initial=0.05, factor=2.0, cap=1.0, jitter=0.2),
        budget=RestartBudget(max_restarts=10, window_s=600),
        restart_on="always",
        grace_s=2.0,
    )
    sup.start()
    return sup


def test_a_golden_set_never_passes_when_empty_and_judges_answers(tmp_path: Path) -> None:
    table = Table.from_arrays({"p0": [1.0, 2.0], "label": [3, 4]})
    golden = GoldenSet.from_table(table, ref="dataset/g@1")
    right = json.dumps({"predictions": [3, 4]}).encode()
    assert golden.judge("a", 200, right).ok
    wrong = golden.judge("a", 200, json.dumps({"predictions": [3, 5]}).encode())
    assert (wrong.ok, wrong.wrong, wrong.examples) == (False, 1, ((1, "4", "5"),))
    assert golden.judge("a", 200, json.dumps({"predictions": [3, 5]}).encode(), tolerance=0.5).ok
    assert not golden.judge("a", 200, json.dumps({"predictions": [3]}).encode()).ok
    assert not golden.judge("a", 200, b"<html>").ok
    assert not golden.judge("a", 503, right).ok
    empty = Table.from_arrays({"p0": np.zeros(0), "label": np.zeros(0)})
    with pytest.raises(UsageError, match="empty golden set would pass every backend"):
        GoldenSet.from_table(empty, ref="dataset/g@2")
    with pytest.raises(UsageError, match="no label column 'label'"):
        GoldenSet.from_table(Table.from_arrays({"p0": [1.0]}), ref="dataset/g@3")


@pytest.fixture
def world(tmp_path: Path) -> Iterator[dict[str, object]]:
    good = _model_dir(tmp_path / "a")
    shutil.copytree(good, tmp_path / "b")
    vault, ref, inputs = _golden(tmp_path, good)
    ports = {"a": _free_port(), "b": _free_port()}
    sups = {n: _replica(tmp_path / n, ports[n], tmp_path / f"{n}.log") for n in ports}
    try:
        yield {"vault": vault, "ref": ref, "inputs": inputs, "ports": ports, "sups": sups}
    finally:
        for sup in sups.values():
            sup.stop(timeout=5)


def test_a_replica_swapped_under_the_gateway_is_ejected_and_no_user_request_fails(
    world: dict[str, object], tmp_path: Path, seed: int
) -> None:
    vault, ports, sups = world["vault"], world["ports"], world["sups"]
    assert isinstance(vault, Vault)
    assert isinstance(ports, dict)
    assert isinstance(sups, dict)
    inputs = world["inputs"]
    assert isinstance(inputs, np.ndarray)
    golden = load_golden(vault, str(world["ref"]))
    print(f"seed {seed}: golden set {golden.ref} of {len(golden)} examples")
    state = tmp_path / "state"
    sink = EventWriter.in_state_dir(state)
    gw = Gateway("digits", GatewayPolicy(), events=sink, probe_interval_s=0.2)
    for name, port in ports.items():
        gw.add_upstream(
            UpstreamSpec(name, f"http://127.0.0.1:{port}", kind="local", probe_path="/health"),
            needs_probe=True,
        )
    prober = GoldenProber(gw, golden, every_s=EVERY_S)
    failures: list[str] = []
    answered = [0]
    stop = threading.Event()
    rng = np.random.default_rng(seed)

    def client() -> None:
        c = openai.OpenAI(base_url=gw.url + "/v1", api_key="unused", max_retries=0, timeout=10)
        while not stop.is_set():
            row = inputs[int(rng.integers(len(inputs)))]
            try:
                c.chat.completions.create(
                    model="digits",
                    messages=[{"role": "user", "content": ",".join(f"{v:g}" for v in row)}],
                )
                answered[0] += 1
            except openai.APIError as exc:
                failures.append(repr(exc))

    with GatewayThread(gw) as thread:
        thread.call(prober.start())
        try:

            def right_rounds(name: str) -> int:
                return thread.run(lambda: prober.counts.get((name, "right"), 0))

            _wait(lambda: right_rounds("a") >= 1 and right_rounds("b") >= 1, "both right")
            loaders = [threading.Thread(target=client, daemon=True) for _ in range(2)]
            for t in loaders:
                t.start()
            _wait(lambda: answered[0] >= 50, "user traffic")
            target = tmp_path / "a" / "model.safetensors"
            worse = degrade(target, tmp_path / "worse.safetensors", noise=1.0, seed=seed)
            swap = SwapModel(target, worse, scope=Scope.of(paths=[tmp_path / "a"]))
            swap.inject()
            # the replica restarts (as after any crash) and loads the swapped file
            sup_a = sups["a"]
            assert sup_a.child is not None
            os.kill(sup_a.child.pid, signal.SIGKILL)
            _wait(lambda: "a" in thread.run(lambda: set(prober.failing)), "a ejected")
            before = answered[0]
            _wait(lambda: answered[0] >= before + 50, "user traffic after the ejection")
            up_a = thread.run(lambda: gw.pool.upstreams["a"])
            assert up_a.wrong
            assert not up_a.routable()
            # it rejoins only once its answers are right again: put the model back and
            # restart it; health passes first, then a golden round restores it
            swap.revert()
            assert sup_a.child is not None
            os.kill(sup_a.child.pid, signal.SIGKILL)
            _wait(lambda: "a" not in thread.run(lambda: set(prober.failing)), "a right again")
            _wait(lambda: thread.run(gw.pool.upstreams["a"].routable), "a routable")
            stop.set()
            for t in loaders:
                t.join(timeout=15)
            stats = thread.run(prober.statistics)
            registry = gw.metrics.registry

            def sample(name: str, **labels: str) -> float:
                return registry.get_sample_value(name, {"service": "digits", **labels}) or 0.0

            wrong_rounds_metric = sample("bastion_golden_probes_total", backend="a", result="wrong")
            answered_2xx = sample("bastion_gateway_responses_total", code="2xx")
        finally:
            stop.set()
            thread.call(prober.close())
    sink.close()

    assert failures == [], failures[:3]
    assert stats.wrong_rounds.get("a", 0) >= 1
    assert stats.wrong_rounds.get("b", 0) == 0
    events = EventLog.in_state_dir(state).query()
    kinds = [(e.kind, e.data.get("backend")) for e in events]
    assert (ek.SERVE_GOLDEN_FAILED, "a") in kinds
    assert (ek.SERVE_GOLDEN_PASSED, "a") in kinds
    assert (ek.SERVE_GOLDEN_FAILED, "b") not in kinds
    failed = next(e for e in events if e.kind == ek.SERVE_GOLDEN_FAILED)
    assert failed.data["ejected"] is True
    assert failed.data["wrong"] >= 1
    # caught within two probe intervals of the swapped replica being back in the pool
    back = [
        e
        for e in events
        if e.kind == ek.SERVE_BACKEND_RESTORED
        and e.data.get("backend") == "a"
        and e.mono_ns < failed.mono_ns
    ]
    assert back, "the swapped replica never rejoined before it was caught"
    caught_s = (failed.mono_ns - back[-1].mono_ns) / 1e9
    print(
        f"seed {seed}: swapped replica caught {caught_s:.3f} s after it rejoined "
        f"({caught_s / EVERY_S:.2f} probe intervals); {failed.data['wrong']} of "
        f"{failed.data['total']} golden answers wrong; {answered[0]} user requests, 0 failed"
    )
    assert caught_s <= 2 * EVERY_S
    restored = [
        e for e in events if e.kind == ek.SERVE_BACKEND_RESTORED and e.mono_ns > failed.mono_ns
    ]
    assert any(e.data.get("via") == "golden" for e in restored)
    # probe traffic is counted apart: its own metric; the gateway's client responses are
    # exactly the user requests answered, not one golden round among them
    assert wrong_rounds_metric == stats.wrong_rounds["a"]
    assert answered_2xx == answered[0]
    assert sum(stats.rounds.values()) > 0


def test_the_manifest_golden_key_is_checked_where_it_is_written() -> None:
    from bastion.errors import ManifestError
    from bastion.manifest import loads

    text = """\
version: 1
system: s
services:
  digits:
    golden: {{ref: dataset/digits-golden@latest, every_s: 2, tolerance: 0.05{extra}}}
    backends:
      - {{name: local, model: model/digits@prod}}
"""
    golden = loads(text.format(extra="")).services["digits"].golden
    assert golden is not None
    assert (golden.ref, golden.every_s, golden.tolerance) == (
        "dataset/digits-golden@latest",
        2,
        0.05,
    )
    with pytest.raises(
        ManifestError,
        match=r"bastion.yaml:4:3: services.digits: golden.backends names .locl., not a backend",
    ):
        loads(text.format(extra=", backends: [locl]"))
    with pytest.raises(ManifestError, match="tolerance"):
        loads(text.format(extra="").replace("0.05", "1.5"))


def test_the_probe_loop_is_built_from_the_manifest_and_refuses_an_empty_set(
    example_copy: Path,
) -> None:
    from bastion.manifest import load
    from tests.helpers import run_bastion

    assert run_bastion("init", cwd=example_copy).returncode == 0
    path = example_copy / "bastion.yaml"
    text = path.read_text()
    assert "    policy: {timeout_ms: 1000" in text
    golden = "    golden: {ref: dataset/digits-golden@latest, every_s: 3, tolerance: 0.1}\n"
    path.write_text(
        text.replace("    policy: {timeout_ms: 1000", golden + "    policy: {timeout_ms: 1000")
    )
    manifest = load(path)
    vault = Vault.from_manifest(manifest)
    header = (example_copy / "dataset" / "shard-00.csv").read_text().splitlines()[:3]
    vault.commit("dataset/digits-golden", {"g.csv": ("\n".join(header) + "\n").encode()})
    gw = Gateway("digits", GatewayPolicy())
    prober = GoldenProber.from_manifest(gw, manifest)
    assert prober is not None
    assert (prober.every_s, prober.tolerance, len(prober.golden)) == (3, 0.1, 2)
    assert prober.golden.ref == "dataset/digits-golden@1"
    vault.commit("dataset/digits-golden", {"g.csv": (header[0] + "\n").encode()})
    with pytest.raises(UsageError, match="has no rows: an empty golden set would pass"):
        GoldenProber.from_manifest(Gateway("digits", GatewayPolicy()), manifest)
