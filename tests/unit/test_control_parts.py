"""The control plane's small parts: the rate limiter, hashed tokens, the reload plan,
adopting a process by pid and start time, and the OpenAPI document naming exactly the
routes the server has."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psutil

from bastion.control import RateLimiter, Tokens, document, make_token
from bastion.manifest import Service
from bastion.serve.runner import reload_plan
from bastion.supervise import Child, ProcessSpec, Supervisor


def test_rate_limiter_bursts_then_refills_per_key() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = limiter.take("a")
    assert 0.4 < wait <= 0.5  # half a second buys the next token at 2/s
    assert limiter.take("b") == 0.0  # another client has its own bucket
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    assert limiter.take("a") > 0


def test_tokens_are_stored_hashed_in_a_private_file(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = make_token(path, "ops")
    assert token.startswith("bst_")
    assert len(token) > 40
    assert token not in path.read_text()
    assert path.stat().st_mode & 0o077 == 0
    tokens = Tokens(path)
    assert tokens.check(token) == "ops"
    assert tokens.check(token + "x") is None
    assert tokens.check("") is None
    again = make_token(path, "ops")  # same name: the old one stops working
    assert tokens.check(token) is None
    assert tokens.check(again) == "ops"
    assert len(json.loads(path.read_text())["tokens"]) == 1


def _service(**changes: object) -> Service:
    base: dict[str, object] = {
        "listen": "127.0.0.1:9000",
        "backends": [
            {"name": "local", "model": "model/m@1", "replicas": {"min": 1, "max": 2}},
            {"name": "vendor", "url": "http://127.0.0.1:9001", "tier": "fallback"},
        ],
    }
    base.update(changes)
    return Service.model_validate(base)


def test_reload_plan_says_what_a_gateway_can_take_in_place() -> None:
    old = _service()
    assert reload_plan(old, _service())[0] == "same"
    moved = _service(
        backends=[
            {"name": "local", "model": "model/m@1", "replicas": {"min": 2, "max": 4}},
            {"name": "vendor-2", "url": "http://127.0.0.1:9002", "tier": "fallback"},
            {"name": "local-b", "model": "model/m@1"},
        ]
    )
    assert reload_plan(old, moved) == ("in_place", "")
    plan, why = reload_plan(old, _service(listen="127.0.0.1:9100"))
    assert plan == "restart"
    assert "listen" in why
    new_model = _service(
        backends=[{"name": "local", "model": "model/m@2", "replicas": {"min": 1, "max": 2}}]
    )
    plan, why = reload_plan(old, new_model)
    assert plan == "restart"
    assert "bastion rollout" in why


def test_adopt_takes_only_the_same_process_and_sees_it_end() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True
    )
    try:
        created = psutil.Process(proc.pid).create_time()
        spec = ProcessSpec(argv=["sleeper"], name="sleeper")
        assert Child.adopt(spec, proc.pid, create_time=created + 5) is None  # a reused pid
        child = Child.adopt(spec, proc.pid, create_time=created)
        assert child is not None
        assert child.poll() is None
        sup = Supervisor(spec, restart_on="failure")
        sup.adopt(child)
        assert sup.state == "running"
        assert sup.tick() == "running"
        assert child.signal(9)
        proc.wait(10)  # we are its parent here; a real adopter is not and only polls
        exit_ = child.wait(10)
        assert exit_ is not None
        assert exit_.unknown
        assert exit_.reason == "gone"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_openapi_document_names_exactly_the_routes_the_server_has() -> None:
    from bastion.control._api import ApiServer

    class _Fake:
        path = Path("/x/bastion.yaml")

        class files:
            tokens = Path("/nonexistent/tokens.json")

        class manifest:
            state_dir = Path("/nonexistent")

    app = ApiServer(_Fake())._app()  # type: ignore[arg-type]
    served = {
        (route.method.lower(), route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method != "HEAD"
        and route.resource.canonical.startswith("/api/")
    }
    doc = document()
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert served == described
    assert doc["openapi"].startswith("3.")
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            if method == "post":
                assert op["security"] == [{"bearer": []}], path
                assert "401" in op["responses"], path
                assert "403" in op["responses"], path
                assert "429" in op["responses"], path
