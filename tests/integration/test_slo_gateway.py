"""A real gateway over real sockets writes SLI rows that the SLO evaluator reads: requests
counted by second and backend, an outage of both backends pages, and `bastion slo status
--json` / `bastion slo report --json` show the same numbers from the state directory."""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import aiohttp

from bastion import event_kinds as ek
from bastion.drill.faults.http import FaultyUpstream
from bastion.events import EventLog
from bastion.manifest import GatewayPolicy
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from bastion.serve.gateway import _POST_ROUTES
from bastion.slo import Evaluator, SliRecorder, SliWriter, SqliteSli, Window, evaluate
from bastion.slo._core import Objective
from tests.helpers import run_bastion


def test_a_real_gateway_writes_rows_the_evaluator_reads(tmp_path: Path, seed: int) -> None:
    ups = [FaultyUpstream(name=f"b{i}", seed=seed + i).start() for i in range(2)]
    writer = SliWriter.in_state_dir(tmp_path)
    gw = Gateway("svc", GatewayPolicy(timeout_ms=2000), probe_interval_s=30)
    rec = SliRecorder("svc", writer, routes=_POST_ROUTES)
    gw.sli = rec
    started = time.time()
    try:
        for i, up in enumerate(ups):
            gw.add_upstream(UpstreamSpec(name=f"b{i}", url=up.url))
        with GatewayThread(gw) as thread:

            async def go(n: int) -> list[int]:
                out = []
                async with aiohttp.ClientSession() as s:
                    for _ in range(n):
                        async with s.post(
                            thread.url + "/v1/chat/completions",
                            json={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                        ) as r:
                            await r.read()
                            out.append(r.status)
                    async with s.get(thread.url + "/metrics") as r:  # not counted
                        await r.read()
                return out

            good = thread.call(go(40), timeout=60)
            for up in ups:
                up.set_fault(status=500)
            bad = thread.call(go(30), timeout=60)
            thread.run(rec.flush)
    finally:
        for up in ups:
            up.stop()
    assert writer.wait_idle()
    writer.close()
    assert good.count(200) == 40
    # every one failed: a 5xx, or a 429 when the gateway sheds (its backends' concurrency
    # limits shrink as they fail, under load); the SLI counts both as bad
    assert all(code >= 500 or code == 429 for code in bad), bad

    store = SqliteSli.in_state_dir(tmp_path)
    # every request ended before `end`; the CLI below evaluates at its own (later) now
    end = int(time.time()) + 1
    while time.time() < end:  # the clock passing a second, not a wait for work
        time.sleep(0.05)
    tally = store.tally("svc", int(started) - 1, end)
    assert (tally.good, tally.total) == (40, 70)
    assert sum(tally.buckets) == 70
    obj = Objective("avail", "avail", "svc", "availability", 0.999, Window.parse("30d"))
    status = evaluate(obj, store, end)
    assert (status.bad, status.total) == (30, 70)
    with EventLog.in_state_dir(tmp_path) as log:
        Evaluator([obj], store, log, clock=lambda: float(end)).step()
        (page,) = log.query(kind=ek.SLO_BURN_PAGE)
        assert page.data["bad"] == 30
    store.close()

    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        textwrap.dedent(f"""\
        version: 1
        system: s
        state_dir: {tmp_path}
        services:
          svc:
            listen: 127.0.0.1:8799
            backends: [{{name: b0, url: "http://127.0.0.1:1"}}]
        slos:
          - {{id: avail, service: svc, objective: 0.999}}
        """)
    )
    proc = run_bastion("slo", "status", "--json", "-f", str(manifest))
    assert proc.returncode == 1, proc.stderr  # it pages
    (shown,) = json.loads(proc.stdout)["slos"]
    assert (shown["bad"], shown["total"], shown["paging"]) == (30, 70, True)
    assert shown["budget_spent"] > 1
    proc = run_bastion("slo", "report", "--json", "-f", str(manifest))
    assert proc.returncode == 0, proc.stderr
    (month,) = json.loads(proc.stdout)["slos"]
    assert (month["total"], month["met"]) == (70, False)
    found = {i["severity"]: i for i in month["incidents"]}  # 43% bad burns fast and slow
    assert sorted(found) == ["page", "ticket"]
    page = found["page"]
    assert page["open"]
    assert page["bad"] == 30
    assert abs(page["budget_share"] - 30 / (0.001 * 70)) < 1e-9


def test_bastion_serve_records_sli_rows_and_flushes_them_on_shutdown(
    tmp_path: Path, seed: int
) -> None:
    import signal
    import socket
    import subprocess
    import sys
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    up = FaultyUpstream(name="b", seed=seed).start()
    manifest = tmp_path / "bastion.yaml"
    manifest.write_text(
        f"version: 1\nsystem: s\nservices:\n  chat:\n    listen: 127.0.0.1:{port}\n"
        f"    backends:\n      - name: far\n        url: {up.url}\n"
        "slos:\n  - {id: avail, service: chat, objective: 0.99}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "-f", str(manifest)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                    break
            except OSError:
                assert proc.poll() is None, "bastion serve exited"
                assert time.monotonic() < deadline, "the gateway never listened"
                time.sleep(0.05)
        body = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
        for _ in range(25):
            ask = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                data=body.encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(ask, timeout=10) as r:
                assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
        up.stop()
    store = SqliteSli.in_state_dir(tmp_path / ".bastion")
    tally = store.tally("chat", 0, int(time.time()) + 1)
    store.close()
    assert (tally.good, tally.total) == (25, 25)
