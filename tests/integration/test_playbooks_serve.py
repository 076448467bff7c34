"""The playbook actions that act on a running service, against a real gateway on
127.0.0.1 with real upstream servers: failover sends traffic to the fallback tier (and
back), scale sets a replica set's floor; bad control requests are 4xx, never 500."""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.events import EventLog, EventWriter
from bastion.manifest import load
from bastion.playbooks import Runner
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from bastion.serve._control import ServiceControl
from bastion.serve.replicas import ReplicaSet
from bastion.serve.standin import make_app
from tests.helpers import served


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ask(url: str) -> str:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    req = urllib.request.Request(
        url + "/v1/chat/completions", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return str(resp.headers["x-bastion-backend"])


def _control(url: str, body: Any) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url + "/bastion/control",
        data=body if isinstance(body, bytes) else json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_failover_and_scale_actions_act_on_the_running_gateway(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "bastion.yaml").write_text(
        f"""version: 1
system: t
services:
  digits:
    listen: 127.0.0.1:{port}
    backends:
      - {{name: local, model: model/digits@prod, replicas: {{min: 1, max: 2}}}}
      - {{name: vendor, url: "http://127.0.0.1:9", tier: fallback}}
playbooks:
  rules:
    page:
      on: slo.burn.page
      actions:
        - {{do: failover, service: digits, tier: fallback}}
        - {{do: scale, service: digits, backend: local, replicas: 3}}
    recovered:
      on: slo.burn.resolved
      actions:
        - {{do: failover, service: digits, tier: primary}}
"""
    )
    manifest = load(tmp_path / "bastion.yaml")
    sink = EventWriter.in_state_dir(manifest.state_dir)
    gw = Gateway("digits", manifest.services["digits"].policy, events=sink, port=port)
    with served(make_app(name="primary")) as primary, served(make_app(name="fallback")) as fallback:
        gw.add_upstream(UpstreamSpec(name="primary", url=primary, tier=0))
        gw.add_upstream(UpstreamSpec(name="fallback", url=fallback, tier=1))
        local = ReplicaSet(
            gw,
            manifest.services["digits"].backends[0],
            manifest_path=manifest.path or tmp_path,
            log_dir=tmp_path / "logs",
        )  # built, never started: the route sets its floor, its scale loop would act on it
        ServiceControl(gw, {"local": local})
        with GatewayThread(gw) as thread:
            assert {_ask(thread.url) for _ in range(5)} == {"primary"}
            runner = Runner(manifest)
            try:
                with EventLog.in_state_dir(manifest.state_dir) as log:
                    (page,) = runner.handle(log.emit(ek.SLO_BURN_PAGE, "avail", service="digits"))
                    assert page.result(timeout=60) == "resolved"
                    assert {_ask(thread.url) for _ in range(5)} == {"fallback"}
                    assert local.autoscaler.min_replicas == 3
                    assert local.autoscaler.max_replicas == 3
                    (back,) = runner.handle(
                        log.emit(ek.SLO_BURN_RESOLVED, "avail", severity="page")
                    )
                    assert back.result(timeout=60) == "resolved"
                    assert {_ask(thread.url) for _ in range(5)} == {"primary"}
            finally:
                runner.close()
            for body, status in (
                (b"{not json", 400),
                ({"op": "reboot"}, 400),
                ({"op": "failover", "tier": "sideways"}, 400),
                ({"op": "failover", "tier": 5}, 409),
                ({"op": "scale", "backend": "vendor", "replicas": 2}, 404),
                ({"op": "scale", "backend": "local", "replicas": -1}, 400),
                ({"op": "scale", "backend": "local", "replicas": True}, 400),
            ):
                got, doc = _control(thread.url, body)
                assert got == status, (body, doc)
                assert doc["error"]["message"]
    sink.close()
    with EventLog.in_state_dir(manifest.state_dir) as log:
        tiers = [e.data["tier"] for e in log.query(kind=ek.SERVE_FAILED_OVER)]
        scaled = [e.data["min_replicas"] for e in log.query(kind=ek.SERVE_SCALE_REQUESTED)]
    assert tiers == [1, 0]
    assert scaled == [3]


def test_failover_to_a_gateway_that_is_not_running_fails_plainly(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "bastion.yaml").write_text(
        f"""version: 1
system: t
services:
  digits:
    listen: 127.0.0.1:{port}
    backends: [{{name: vendor, url: "http://127.0.0.1:9"}}]
playbooks:
  rules:
    page:
      on: slo.burn.page
      max_failures: 1
      actions: [{{do: failover, service: digits, tier: fallback}}]
"""
    )
    manifest = load(tmp_path / "bastion.yaml")
    runner = Runner(manifest)
    try:
        with EventLog.in_state_dir(manifest.state_dir) as log:
            (done,) = runner.handle(log.emit(ek.SLO_BURN_PAGE, "avail"))
        assert done.result(timeout=60) == "escalated"
    finally:
        runner.close()
    with EventLog.in_state_dir(manifest.state_dir) as log:
        (failed,) = log.query(kind=ek.PLAYBOOK_ACTION_FAILED)
    assert "the gateway did not answer" in failed.data["error"]
