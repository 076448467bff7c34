"""Cost through a real gateway over real sockets (issue 20): against stand-in vendors whose
``usage`` is known exactly, spend adds up over causes and matches what the vendors
billed; a hard budget is never exceeded under 32 concurrent clients with retries, and the
cheaper fallback tier serves; hedging stops at the soft limit; a vendor that omits
``usage`` is estimated and marked; spend rows reach ``spend.db`` and ``bastion cost
report``."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bastion import event_kinds as ek
from bastion.drill.faults.http import FaultyUpstream, HttpFault
from bastion.manifest import Budget, GatewayPolicy, Price
from bastion.serve import Gateway, GatewayThread, UpstreamSpec
from bastion.serve._cost import PICO, Ledger, Rate
from bastion.serve._spend import SpendWriter, cost_report
from tests.helpers import run_bastion

PRICEY = Price(input_per_1k=0.01, output_per_1k=0.03)
CHEAP = Price(input_per_1k=0.0005, output_per_1k=0.0015)
REPLY = "one two three four five"  # 5 completion tokens, 8 prompt tokens: the stand-in's truth


class Recorder:
    """An ``Emit`` that keeps what the gateway records."""

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, kind: str, subject: str = "", **data: Any) -> None:
        self.events.append((kind, data))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.events]


@pytest.fixture
def seed() -> int:
    value = random.SystemRandom().randrange(2**32)
    print(f"seed {value}")
    return value


@pytest.fixture
def vendors(seed: int) -> Iterator[dict[str, FaultyUpstream]]:
    ups = {
        name: FaultyUpstream(name=name, reply=REPLY, seed=seed + i)
        for i, name in enumerate(("pricey-a", "pricey-b", "cheap"))
    }
    for up in ups.values():
        up.start()
    try:
        yield ups
    finally:
        for up in ups.values():
            up.stop()


def _gateway(
    vendors: dict[str, FaultyUpstream],
    budgets: list[Budget],
    *,
    policy: GatewayPolicy,
    events: Recorder | None = None,
    sink: SpendWriter | None = None,
    names: tuple[str, ...] = ("pricey-a", "pricey-b", "cheap"),
) -> tuple[Gateway, Ledger]:
    rates = {n: Rate.of(CHEAP if n == "cheap" else PRICEY) for n in names}
    ledger = Ledger(
        "chat",
        rates,
        budgets=budgets,
        vendor={n: "cheap" if n == "cheap" else "pricey" for n in names},
        sink=sink.put if sink is not None else None,
    )
    gw = Gateway("chat", policy, events=events or Recorder(), cost=ledger)
    for name in names:
        gw.add_upstream(
            UpstreamSpec(
                name=name,
                url=vendors[name].url,
                group=name,
                tier=1 if name == "cheap" else 0,
                probe_path="/health",
            )
        )
    return gw, ledger


async def _post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any]
) -> tuple[int, str, str]:
    async with session.post(url + "/v1/chat/completions", json=body) as r:
        return r.status, r.headers.get("x-bastion-backend", ""), await r.text()


async def _clients(url: str, clients: int, each: int, body: dict[str, Any]) -> list[Any]:
    async with aiohttp.ClientSession() as session:

        async def client() -> list[tuple[int, str, str]]:
            return [await _post(session, url, body) for _ in range(each)]

        done = await asyncio.gather(*(client() for _ in range(clients)))
    return [r for rs in done for r in rs]


BODY = {"model": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


def _billed(up: FaultyUpstream, price: Price) -> int:
    """What a stand-in billed, from its own count of answers (its usage is exact)."""
    return up.statistics().ok * Rate.of(price).cost(8, 5)


def test_a_hard_budget_holds_under_32_clients_with_retries_and_the_cheap_tier_serves(
    vendors: dict[str, FaultyUpstream], seed: int
) -> None:
    for name in ("pricey-a", "pricey-b"):
        vendors[name].set_fault(HttpFault(status=500, probability=0.3))
    hard = 0.02  # about 90 answers of 8 + 5 tokens at the pricey vendor's price
    events = Recorder()
    gw, ledger = _gateway(
        vendors,
        [Budget(scope="vendor", vendor="pricey", hard=hard, window="1d")],
        policy=GatewayPolicy(timeout_ms=5000, retry_budget=1.0, max_attempts=3, max_ejected=0.01),
        events=events,
    )
    with GatewayThread(gw) as thread:
        results = thread.call(_clients(thread.url, 32, 8, BODY), timeout=120)
        stats = thread.run(ledger.statistics)
        counts = thread.run(lambda: {k: list(v) for k, v in ledger.counts.items()})
    statuses = [s for s, _, _ in results]
    assert statuses.count(200) == len(results) == 256, {s: statuses.count(s) for s in statuses}
    served_by = {b for _, b, _ in results}
    assert "cheap" in served_by  # the budget dropped the pricey tier; the fallback served
    pricey = _billed(vendors["pricey-a"], PRICEY) + _billed(vendors["pricey-b"], PRICEY)
    cheap = _billed(vendors["cheap"], CHEAP)
    # never a silent overspend: what the pricey vendor billed stays within the hard limit
    assert pricey <= round(hard * PICO)
    assert pricey > round(hard * PICO) // 2  # the budget was used, not merely refused
    # spend adds up: over causes, to the total, to what the vendors billed
    assert sum(row[0] for row in counts.values()) == pricey + cheap
    assert sum(stats.by_cause.values()) == pytest.approx(stats.total)
    assert stats.total == pytest.approx((pricey + cheap) / PICO)
    causes = {cause for (_, cause) in counts}
    assert {"first", "retry"} <= causes or {"first", "fallback"} <= causes, causes
    assert ek.COST_BUDGET_HARD_LIMIT in events.kinds()
    (account,) = stats.budgets
    assert account.reserved == 0.0
    assert account.spent <= hard


def test_a_service_budget_sheds_with_429_and_a_clear_message(
    vendors: dict[str, FaultyUpstream],
) -> None:
    hard = 0.005
    gw, ledger = _gateway(
        vendors,
        [Budget(scope="service", hard=hard, window="1h")],
        policy=GatewayPolicy(timeout_ms=5000),
    )
    with GatewayThread(gw) as thread:
        results = thread.call(_clients(thread.url, 32, 4, BODY), timeout=120)
        stats = thread.run(ledger.statistics)
    refused = [text for status, _, text in results if status == 429]
    assert refused, "the budget never shed"
    assert all(status in (200, 429) for status, _, _ in results)
    message = json.loads(refused[0])["error"]["message"]
    assert "over budget" in message
    assert "service/1h" in message
    billed = sum(_billed(vendors[n], CHEAP if n == "cheap" else PRICEY) for n in vendors)
    assert billed <= round(hard * PICO)
    assert stats.total == pytest.approx(billed / PICO)
    assert stats.shed + stats.refused >= len(refused)


def test_hedging_stops_at_the_soft_limit(vendors: dict[str, FaultyUpstream]) -> None:
    # both backends answer after 60 ms, past the 20 ms hedge delay, so every request hedges
    # (whichever one routing picks first), until the soft limit
    for name in ("pricey-a", "pricey-b"):
        vendors[name].set_fault(HttpFault(first_byte_delay_s=0.06))
    events = Recorder()
    soft = 0.003
    gw, ledger = _gateway(
        vendors,
        [Budget(scope="service", soft=soft, hard=10.0, window="1d")],
        policy=GatewayPolicy(timeout_ms=5000, hedge="20ms", retry_budget=1.0),
        events=events,
        names=("pricey-a", "pricey-b"),
    )
    with GatewayThread(gw) as thread:
        for _ in range(60):
            status, _, _ = thread.call(_post_once(thread.url))
            assert status == 200
            if ek.COST_BUDGET_SOFT_LIMIT in events.kinds():
                break
        assert ek.COST_BUDGET_SOFT_LIMIT in events.kinds(), "never reached the soft limit"
        hedged = thread.run(lambda: gw.attempts.hedges)
        assert hedged >= 2
        for _ in range(20):
            status, _, _ = thread.call(_post_once(thread.url))
            assert status == 200
        assert thread.run(lambda: gw.attempts.hedges) == hedged  # no hedge past soft
        stats = thread.run(ledger.statistics)
    assert stats.by_cause["hedge"] > 0
    assert sum(stats.by_cause.values()) == pytest.approx(stats.total)
    (account,) = stats.budgets
    assert account.over_soft


async def _post_once(url: str, body: dict[str, Any] | None = None) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session:
        return await _post(session, url, body or BODY)


async def _stream(url: str, body: dict[str, Any]) -> str:
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json={**body, "stream": True}) as r,
    ):
        assert r.status == 200
        return await r.text()


def test_a_vendor_without_usage_is_estimated_and_marked(tmp_path: Path) -> None:
    writer = SpendWriter.in_state_dir(tmp_path)
    with (
        FaultyUpstream(name="pricey-a", reply=REPLY, omit_usage=True) as bare,
        FaultyUpstream(name="cheap", reply=REPLY) as exact,
    ):
        vendors = {"pricey-a": bare, "cheap": exact}
        gw, ledger = _gateway(
            vendors, [], policy=GatewayPolicy(timeout_ms=5000), sink=writer, names=("pricey-a",)
        )
        with GatewayThread(gw) as thread:
            for _ in range(3):
                assert thread.call(_post_once(thread.url))[0] == 200
            assert "data: [DONE]" in thread.call(_stream(thread.url, BODY))
            counts = thread.run(lambda: {k: list(v) for k, v in ledger.counts.items()})
            metrics = thread.call(_metrics(thread.url))
        ((key, row),) = counts.items()
        assert key == ("pricey-a", "first")
        assert row[3] == row[4] == 4  # four attempts, each estimated
        assert row[0] > 0
        assert 'bastion_gateway_spend_estimated_total{backend="pricey-a"' in metrics
        # the same vendor with usage: exact, not estimated, for whole answers and for a
        # stream that asks for usage
        gw2, ledger2 = _gateway(
            vendors, [], policy=GatewayPolicy(timeout_ms=5000), sink=writer, names=("cheap",)
        )
        with GatewayThread(gw2) as thread:
            assert thread.call(_post_once(thread.url))[0] == 200
            body = {**BODY, "stream_options": {"include_usage": True}}
            assert "data: [DONE]" in thread.call(_stream(thread.url, body))
            exact_row = thread.run(lambda: list(ledger2.counts["cheap", "first"]))
        assert exact_row[1:5] == [16, 10, 2, 0]  # 2 x (8 in, 5 out), none estimated
        assert exact_row[0] == 2 * Rate.of(CHEAP).cost(8, 5)
    writer.close()
    report = cost_report(tmp_path, "day")
    assert report.estimated == 4
    assert report.total["USD"] == pytest.approx(ledger.total() / PICO + ledger2.total() / PICO)
    assert sum(report.by_cause["USD"].values()) == pytest.approx(report.total["USD"])
    shown = run_bastion("cost", "report", "--state-dir", str(tmp_path), "--json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["period"] == "day"
    assert doc["estimated"] == 4
    assert {r["backend"] for r in doc["rows"]} == {"pricey-a", "cheap"}
    text = run_bastion("cost", "report", "--state-dir", str(tmp_path), "--period", "week")
    assert text.returncode == 0, text.stderr
    assert "(est.)" in text.stdout


async def _metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as r:
        return await r.text()


def test_a_drill_window_reports_what_the_fault_cost(tmp_path: Path) -> None:
    from bastion.drill.runner import _drill_cost
    from bastion.serve._cost import Charge

    assert _drill_cost(tmp_path, 0.0, 1e12) is None  # no gateway accounts spend here
    writer = SpendWriter.in_state_dir(tmp_path)
    since = time.time()
    spent = {"first": 5 * 10**9, "retry": 2 * 10**9, "hedge": 10**9, "fallback": 3 * 10**9}
    for cause, cost in spent.items():
        writer.put(Charge("chat", "big", 0, "", cause, "USD", 8, 5, False, cost))  # type: ignore[arg-type]
    writer.close()
    found = _drill_cost(tmp_path, since - 1, time.time() + 1)
    assert found is not None
    assert found["total"]["USD"] == pytest.approx(sum(spent.values()) / PICO)
    assert found["extra"]["USD"] == pytest.approx(6 * 10**9 / PICO)
    assert found["by_cause"]["USD"]["fallback"] == pytest.approx(3 * 10**9 / PICO)
    assert _drill_cost(tmp_path, since + 3600, since + 7200)["total"] == {}  # type: ignore[index]


def test_a_key_budget_sheds_only_its_own_key(vendors: dict[str, FaultyUpstream]) -> None:
    keys = ("sk-team-a-0123456789", "sk-team-b-0123456789")
    ledger = Ledger(
        "chat",
        {"cheap": Rate.of(CHEAP)},
        budgets=[Budget(scope="key", hard=0.0002, window="1h")],
    )
    gw = Gateway("chat", GatewayPolicy(timeout_ms=5000), api_keys=keys, cost=ledger)
    gw.add_upstream(UpstreamSpec(name="cheap", url=vendors["cheap"].url, group="cheap"))

    async def as_key(url: str, key: str, n: int) -> list[int]:
        headers = {"Authorization": f"Bearer {key}"}
        async with aiohttp.ClientSession(headers=headers) as session:
            return [(await _post(session, url, BODY))[0] for _ in range(n)]

    with GatewayThread(gw) as thread:
        spent_a = thread.call(as_key(thread.url, keys[0], 40))
        spent_b = thread.call(as_key(thread.url, keys[1], 3))
        stats = thread.run(ledger.statistics)
        rows = thread.run(lambda: dict(ledger.counts))
    assert 429 in spent_a  # team a ran out of its own budget
    assert spent_a[0] == 200
    assert spent_b == [200, 200, 200]  # team b's budget is its own
    names = sorted(a.name for a in stats.budgets)
    assert len(names) == 2
    assert all(n.startswith("key:key-") and n.endswith("/1h") for n in names)
    assert all(keys[0] not in n and keys[1] not in n for n in names)  # never the key itself
    for account in stats.budgets:
        assert account.spent <= 0.0002
    assert sum(r[3] for r in rows.values()) == spent_a.count(200) + 3


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bastion_serve_accounts_spend_from_the_manifest_across_a_restart(tmp_path: Path) -> None:
    """The whole wiring: prices and a budget in bastion.yaml, `bastion serve`, spend in
    `serve status`, spend.db written on shutdown, `cost report`, and a restarted gateway
    that still counts the window's earlier spend against its budget."""
    import signal
    import subprocess
    import urllib.request

    from tests.helpers import BASTION

    port = _free_port()
    with FaultyUpstream(name="vendor", reply=REPLY) as vendor:
        manifest = tmp_path / "bastion.yaml"
        manifest.write_text(
            f"version: 1\nsystem: s\nservices:\n  chat:\n    listen: 127.0.0.1:{port}\n"
            f"    backends:\n      - name: vendor\n        url: {vendor.url}\n"
            "        price: {input_per_1k: 0.01, output_per_1k: 0.03}\n"
            "    budgets:\n      - {window: 1d, soft: 1, hard: 2}\n"
        )

        def serve_once(requests: int) -> dict[str, Any]:
            proc = subprocess.Popen(
                [*BASTION, "serve", "-f", str(manifest)],
                cwd=tmp_path,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                deadline = time.monotonic() + 30
                while True:
                    try:
                        url = f"http://127.0.0.1:{port}/healthz"
                        with urllib.request.urlopen(url, timeout=1):
                            break
                    except OSError:
                        assert proc.poll() is None, "bastion serve exited"
                        assert time.monotonic() < deadline, "the gateway never listened"
                        time.sleep(0.05)
                for _ in range(requests):
                    status, _, _ = asyncio.run(_post_once(f"http://127.0.0.1:{port}"))
                    assert status == 200
                shown = run_bastion("serve", "status", "--json", cwd=tmp_path)
                assert shown.returncode == 0, shown.stderr
                status_doc: dict[str, Any] = json.loads(shown.stdout)["services"][0]["status"]
                return status_doc
            finally:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)

        first = serve_once(3)
        one = Rate.of(PRICEY).cost(8, 5) / PICO
        assert first["cost"]["total"] == pytest.approx(3 * one)
        assert first["cost"]["by_cause"]["first"] == pytest.approx(3 * one)
        second = serve_once(2)
        (budget,) = second["cost"]["budgets"]
        # the restarted gateway read the first run's spend back into its window
        assert budget["spent"] == pytest.approx(5 * one)
        assert second["cost"]["total"] == pytest.approx(2 * one)
    report = run_bastion("cost", "report", "--json", cwd=tmp_path)
    assert report.returncode == 0, report.stderr
    doc = json.loads(report.stdout)
    assert doc["total"]["USD"] == pytest.approx(5 * one)
    assert doc["by_vendor"]["USD"] == {"vendor": pytest.approx(5 * one)}
