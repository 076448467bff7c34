"""The control API of a real `bastion up` (issue 17, part 2): schemathesis against its
own OpenAPI document finds no 5xx and no response outside it; without a token or with a
wrong one nothing changes; cross-origin POSTs are refused whatever the token; the events
endpoint pages and streams; a drill started through the API runs and its result shows."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from ruamel.yaml import YAML

from bastion.control import Up, make_token
from bastion.manifest import load
from bastion.serve.runner import spawn_server, stop_server


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Running:
    def __init__(self, up: Up, token: str, root: Path) -> None:
        self.up, self.token, self.root = up, token, root
        self.url = up.api_url

    def call(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """A real `bastion up` (in this process) over a service with one remote backend (a
    stand-in vendor process), so fuzzed actions cannot start replicas by the dozen."""
    root = tmp_path_factory.mktemp("control")
    vendor, vport = spawn_server(["-m", "bastion.serve.standin", "--port", "0"])
    doc = {
        "version": 1,
        "system": "ctl",
        "services": {
            "chat": {
                "listen": f"127.0.0.1:{_free_port()}",
                "backends": [{"name": "vendor", "url": f"http://127.0.0.1:{vport}"}],
            }
        },
        "control": {"listen": f"127.0.0.1:{_free_port()}", "scrub": None},
        # a segment no service or job is in: quarantine and release change nothing else
        "segments": ["lab"],
        "slos": [{"id": "chat-availability", "service": "chat", "objective": 0.99}],
    }
    path = root / "bastion.yaml"
    YAML().dump(doc, path)
    # a drill the API may start: steady state only, against the gateway
    (root / "drill.json").write_text(
        json.dumps(
            {
                "title": "the gateway answers",
                "description": "steady state only",
                "steady-state-hypothesis": {
                    "title": "healthz",
                    "probes": [
                        {
                            "type": "probe",
                            "name": "gateway-healthy",
                            "tolerance": 200,
                            "provider": {
                                "type": "http",
                                "url": f"http://{doc['services']['chat']['listen']}/healthz",  # type: ignore[index]
                            },
                        }
                    ],
                },
                "method": [],
            }
        )
    )
    manifest = load(path)
    up = Up(manifest)
    up.start()
    stop = threading.Event()
    loop = threading.Thread(target=up.run, args=(stop,), daemon=True)
    try:
        up.wait_ready()
        loop.start()
        token = make_token(up.files.tokens, "tests")
        yield Running(up, token, root)
    finally:
        stop.set()
        if loop.is_alive():
            loop.join(30)
        up.shutdown()
        stop_server(vendor)


def test_the_api_keeps_to_its_openapi_document(running: Running) -> None:
    """Every operation, positive and negative cases, with a valid token: no 5xx, every
    status, content type and body as the document says. (schemathesis' pytest plugin
    does not run on pytest 9, so its strategies are driven by hypothesis here.)"""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.specs.openapi.checks import positive_data_acceptance

    api = schemathesis.openapi.from_url(running.url + "/api/openapi.json")
    # the limiter is for clients; the fuzzer would spend its whole run on 429s
    limiter = running.up.api.limiter
    limiter.burst = limiter.rate = 1e9
    ran = []
    try:
        for result in api.get_all_operations():
            op = result.ok()
            if op.path.endswith(("/restart", "/stream")):
                continue  # restart is tested by itself; a stream does not end
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

                @given(case=op.as_strategy(generation_mode=mode))
                @settings(
                    max_examples=int(os.environ.get("BASTION_FUZZ_EXAMPLES", "15")),
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                def check(case: Any) -> None:
                    # positive_data_acceptance is left out: some schema-valid bodies are
                    # still a client's mistake the schema cannot say (scale with min >
                    # max, a drill outside the manifest's directory): 400, on purpose
                    case.call_and_validate(
                        headers=running.auth(), excluded_checks=[positive_data_acceptance]
                    )

                try:
                    check()
                except Unsatisfiable:
                    # nothing to break in an operation without parameters or a body
                    assert mode == GenerationMode.NEGATIVE, op.path
            ran.append(f"{op.method.upper()} {op.path}")
    finally:
        limiter.rate, limiter.burst = 5.0, 20.0
        limiter._buckets.clear()
    assert len(ran) >= 15, ran


def test_state_changing_calls_without_a_valid_token_change_nothing(running: Running) -> None:
    before = running.up.children()["serve:chat"]
    restarts = before["restarts"]
    for headers in ({}, {"Authorization": "Bearer bst_wrong"}, {"Authorization": "Basic eDp5"}):
        for path, body in (
            ("/api/services/chat/restart", None),
            ("/api/services/chat/scale", {"backend": "vendor", "min": 1, "max": 1}),
            ("/api/drills", {"experiment": "drill.json"}),
        ):
            status, doc = running.call("POST", path, body, headers)
            assert status == 401, (path, headers, doc)
            assert "token" in doc["error"]["message"]
    after = running.up.children()["serve:chat"]
    assert after["pid"] == before["pid"]
    assert after["restarts"] == restarts
    assert running.up.jobs == {} or all(
        j["experiment"] != str(running.root / "drill.json") for j in running.up.jobs.values()
    )


def test_cross_origin_posts_are_refused_even_with_a_good_token(running: Running) -> None:
    pid = running.up.children()["serve:chat"]["pid"]
    for extra in (
        {"Origin": "http://evil.example"},
        {"Origin": "null"},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ):
        status, doc = running.call(
            "POST", "/api/services/chat/restart", None, {**running.auth(), **extra}
        )
        assert status == 403, (extra, doc)
        assert "cross-origin" in doc["error"]["message"]
    assert running.up.children()["serve:chat"]["pid"] == pid
    # a DNS-rebound name is not this API's host
    status, doc = running.call("GET", "/api/system", headers={"Host": "evil.example:80"})
    assert status == 403


def test_an_action_with_the_token_works_and_is_an_event(running: Running) -> None:
    status, doc = running.call(
        "POST", "/api/services/chat/scale", {"backend": "nope", "min": 1, "max": 2}, running.auth()
    )
    assert status == 404, doc  # the gateway's answer: it has no local backend of that name
    status, doc = running.call(
        "POST",
        "/api/drills",
        {"experiment": "drill.json"},
        {**running.auth(), "Origin": running.url, "Sec-Fetch-Site": "same-origin"},
    )
    assert status == 202, doc
    job = doc["job"]["id"]
    deadline = time.monotonic() + 60
    while True:
        _, drills = running.call("GET", "/api/drills")
        mine = next(d for d in drills["drills"] if d["id"] == job)
        if mine["state"] != "running":
            break
        assert time.monotonic() < deadline, "the drill did not finish"
        time.sleep(0.1)
    assert mine["state"] == "passed", mine
    assert mine["result"] is not None
    # paths outside the manifest's directory are refused
    status, doc = running.call(
        "POST", "/api/drills", {"experiment": "../../etc/passwd"}, running.auth()
    )
    assert status == 400, doc
    assert "outside" in doc["error"]["message"]
    _, page = running.call("GET", "/api/events?kind=control.action&limit=10")
    actions = [e["data"]["action"] for e in page["events"]]
    assert "drill" in actions
    assert all(running.token not in json.dumps(e) for e in page["events"])


def test_events_page_and_stream(running: Running) -> None:
    log = running.up.log
    for i in range(25):
        log.emit("control.action", "pager", action="probe", n=i)
    _, first = running.call("GET", "/api/events?subject=pager&limit=10")
    assert [e["data"]["n"] for e in first["events"]] == list(range(24, 14, -1))
    _, second = running.call("GET", f"/api/events?subject=pager&limit=10&before={first['next']}")
    assert [e["data"]["n"] for e in second["events"]] == list(range(14, 4, -1))
    status, doc = running.call("GET", "/api/events?limit=0")
    assert status == 400
    assert "limit" in doc["error"]["message"]
    after = first["events"][-1]["id"]  # n=15
    with urllib.request.urlopen(
        f"{running.url}/api/events/stream?subject=pager&once=1&after={after}", timeout=10
    ) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        text = resp.read().decode()
    datas = [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]
    assert [d["data"]["n"] for d in datas] == list(range(16, 25))


def test_rate_limit_answers_429_with_retry_after(running: Running) -> None:
    limiter = running.up.api.limiter
    limiter.rate, limiter.burst = 1.0, 3.0
    limiter._buckets.clear()
    try:
        codes = [
            running.call("POST", "/api/drills", {"experiment": "missing.json"}, running.auth())[0]
            for _ in range(6)
        ]
    finally:
        limiter.rate, limiter.burst = 5.0, 20.0
        limiter._buckets.clear()
    assert codes[:3] == [404, 404, 404], codes
    assert 429 in codes[3:], codes


def test_restart_with_the_token_restarts_that_gateway(running: Running) -> None:
    before = running.up.children()["serve:chat"]
    status, doc = running.call("POST", "/api/services/chat/restart", None, running.auth())
    assert status == 202, doc
    deadline = time.monotonic() + 60
    while True:
        now = running.up.children()["serve:chat"]
        _, svc = running.call("GET", "/api/services/chat")
        if now["pid"] not in (None, before["pid"]) and svc["running"]:
            break
        assert time.monotonic() < deadline, (now, svc)
        time.sleep(0.1)
    assert now["restarts"] == before["restarts"] + 1
    status, doc = running.call("POST", "/api/services/nope/restart", None, running.auth())
    assert status == 404
    assert "chat" in doc["error"]["message"]  # names the known ones


def test_the_stream_delivers_a_new_event_live(running: Running) -> None:
    import http.client

    host, _, port = running.url.removeprefix("http://").rpartition(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.request("GET", "/api/events/stream?subject=live-test")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.readline() == b": bastion events\n"  # the stream is open and caught up
    running.up.log.emit("control.action", "live-test", action="probe")
    lines = []
    while not any(line.startswith(b"data: ") for line in lines):
        lines.append(resp.readline())
    conn.close()
    event = json.loads(next(line for line in lines if line.startswith(b"data: "))[6:])
    assert event["subject"] == "live-test"
    assert b"event: control.action\n" in lines


def _chat(running: Running) -> int:
    listen = running.up.manifest.services["chat"].listen
    req = urllib.request.Request(
        f"http://{listen}/v1/chat/completions",
        data=json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return int(resp.status)


def test_chart_series_read_the_sli_rows_and_the_slo_burns(running: Running) -> None:
    """Real requests through the gateway become SLI rows (flushed each second), which the
    series endpoints read per backend; the SLO series evaluates budget and burn."""
    deadline = time.monotonic() + 60
    points: list[dict[str, Any]] = []
    while not points:
        assert _chat(running) == 200
        _, doc = running.call("GET", "/api/services/chat/series?window=5m")
        points = [p for b in doc["backends"] if b["name"] == "vendor" for p in b["points"]]
        assert time.monotonic() < deadline, doc
        time.sleep(0.2)
    assert doc["step_s"] * 120 >= doc["window_s"]
    assert all(p["errors"] == 0 and p["p99_ms"] is not None for p in points), points
    assert sum(p["total"] for p in points) >= 1
    status, bad = running.call("GET", "/api/services/chat/series?window=5y")
    assert status == 400, bad
    assert "window" in bad["error"]["message"], bad
    status, _ = running.call("GET", "/api/services/nope/series")
    assert status == 404
    _, slos = running.call("GET", "/api/slos/series?window=10m")
    (slo,) = slos["slos"]
    assert slo["id"] == "chat-availability"
    assert {p["pair"] for p in slo["pairs"]} >= {"1h/5m"}
    assert slo["points"][-1]["budget_remaining"] == 1.0  # no error: the whole budget
    assert slo["points"][-1]["total"] >= 1


def test_quarantine_and_release_need_the_token_and_are_events(running: Running) -> None:
    status, doc = running.call("POST", "/api/segments/lab/quarantine", {})
    assert status == 401, doc
    _, segs = running.call("GET", "/api/segments")
    assert segs["segments"] == [{"name": "lab", "quarantined": False}]
    status, doc = running.call("POST", "/api/segments/lab/quarantine", {}, running.auth())
    assert status == 200, doc
    assert doc["result"]["segment"] == "lab"
    _, segs = running.call("GET", "/api/segments")
    assert segs["segments"] == [{"name": "lab", "quarantined": True}]
    status, doc = running.call("POST", "/api/segments/lab/release", {"force": 1}, running.auth())
    assert status == 400, doc
    status, doc = running.call("POST", "/api/segments/lab/release", {}, running.auth())
    assert status == 200, doc
    status, doc = running.call("POST", "/api/segments/lab/release", {}, running.auth())
    assert status == 400, doc
    assert "not quarantined" in doc["error"]["message"], doc
    status, doc = running.call("POST", "/api/segments/prod/quarantine", {}, running.auth())
    assert status == 404, doc
    assert "lab" in doc["error"]["message"], doc
    _, page = running.call("GET", "/api/events?kind=segment.*&subject=lab")
    assert [e["kind"] for e in page["events"]] == ["segment.released", "segment.quarantined"]
    assert running.up.children()["serve:chat"]["pid"] is not None  # the rest kept running


def test_reports_are_written_listed_and_verified(running: Running) -> None:
    from bastion.train._store import checkpoint_keys
    from bastion.vault._keys import make_key

    status, doc = running.call("POST", "/api/reports", {}, running.auth())
    assert status == 409, doc  # no key yet
    assert "signing key" in doc["error"]["message"], doc
    make_key(checkpoint_keys(running.up.manifest)[0])
    status, doc = running.call("POST", "/api/reports", None, {"Authorization": "Bearer bst_x"})
    assert status == 401, doc
    status, doc = running.call("POST", "/api/reports", {}, running.auth())
    assert status == 201, doc
    rid = doc["report"]["id"]
    assert doc["report"]["verified"] == "verified", doc
    _, listed = running.call("GET", "/api/reports")
    assert rid in [r["id"] for r in listed["reports"]]
    status, one = running.call("GET", f"/api/reports/{rid}")
    assert status == 200, one
    assert one["document"]["system"] == "ctl", one
    # an edited report is shown as not verified
    path = Path(one["path"]) / "report.json"
    path.write_text(path.read_text().replace('"ctl"', '"ctx"', 1))
    _, again = running.call("GET", f"/api/reports/{rid}")
    assert again["verified"].startswith("not verified"), again
    for bad in ("..", "..%2F..%2Fetc", "nope"):
        status, _ = running.call("GET", f"/api/reports/{bad}")
        assert status == 404, bad
