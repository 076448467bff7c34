"""The dashboard in a real browser (issue 17, part 3): Playwright driving Debian's
chromium (the system binary; nothing is downloaded) against a real `bastion up` over
the example. Every page loads with no console error; a replica SIGKILLed during the test
shows as ejected on the services page and in the timeline, both already open, without a
reload; a drill started from the page runs and its result appears."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from ruamel.yaml import YAML

from bastion.control import Up, make_token
from bastion.manifest import load
from tests.helpers import commit_model

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"
)
PAGES = ["map", "services", "jobs", "vault", "slos", "events", "drills"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def running(example_copy: Path, seed: int) -> Iterator[tuple[Up, str]]:
    commit_model(example_copy, seed)
    path = example_copy / "bastion.yaml"
    yaml = YAML()
    doc = yaml.load(path)
    listen = f"127.0.0.1:{_free_port()}"
    doc["services"]["digits"]["listen"] = listen
    doc["services"]["digits"]["backends"][1]["url"] = f"http://127.0.0.1:{_free_port()}"
    doc["control"] = {"listen": f"127.0.0.1:{_free_port()}", "scrub": None}
    yaml.dump(doc, path)
    (example_copy / "steady.json").write_text(
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
                            "provider": {"type": "http", "url": f"http://{listen}/healthz"},
                        }
                    ],
                },
                "method": [],
            }
        )
    )
    up = Up(load(path))
    up.start()
    stop = threading.Event()
    loop = threading.Thread(target=up.run, args=(stop,), daemon=True)
    try:
        up.wait_ready()
        loop.start()
        yield up, make_token(up.files.tokens, "browser")
    finally:
        stop.set()
        if loop.is_alive():
            loop.join(30)
        up.shutdown()


def _get(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def _predict(listen: str, stop: threading.Event) -> None:
    import urllib.error
    import urllib.request

    body = json.dumps({"inputs": [[8] * 64]}).encode()
    while not stop.is_set():
        req = urllib.request.Request(
            f"http://{listen}/v1/predict", data=body, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except (urllib.error.URLError, OSError):
            pass
        stop.wait(0.05)


def _browser() -> Any:
    from playwright.sync_api import sync_playwright

    pw = sync_playwright().start()
    browser = pw.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-quic"]
    )
    return pw, browser


def _watch(page: Any, errors: list[str]) -> None:
    page.set_default_timeout(60_000)  # generous under load; the delays seen are printed
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))


def test_pages_load_live_ejection_and_a_drill_from_the_page(running: tuple[Up, str]) -> None:
    up, token = running
    pw, browser = _browser()
    try:
        errors: list[str] = []
        page = browser.new_page()
        _watch(page, errors)
        for name in PAGES:
            page.goto(f"{up.api_url}/#/{name}")
            page.wait_for_selector(f'main[data-loaded="{name}"]', timeout=30_000)
            assert not page.query_selector("main .error"), page.inner_text("main")
            # every page is reachable from the keyboard: its link takes focus
            assert page.eval_on_selector(f'nav a[href="#/{name}"]', "a => a.tabIndex") == 0
        assert errors == [], errors

        # traffic, so the charts have SLI rows to draw
        listen = up.manifest.services["digits"].listen
        stop_load = threading.Event()
        load = threading.Thread(target=_predict, args=(listen, stop_load), daemon=True)
        load.start()
        services = page
        services.goto(f"{up.api_url}/#/services")
        services.wait_for_selector('main[data-loaded="services"]')
        timeline = browser.new_page()
        _watch(timeline, errors)
        timeline.goto(f"{up.api_url}/#/events")
        timeline.wait_for_selector('main[data-loaded="events"]')
        timeline.wait_for_selector('#live:text-is("live")', timeout=60_000)
        serve_pid = up.children()["serve:digits"]["pid"]
        replica = next(
            p
            for p in psutil.Process(serve_pid).children(recursive=True)
            if "bastion.serve.replica" in " ".join(p.cmdline())
        )
        port = replica.cmdline()[replica.cmdline().index("--port") + 1]
        name = next(
            b["name"]
            for b in _get(up.api_url + "/api/backends")["backends"]
            if b["url"].endswith(f":{port}")
        )
        healthy = f'[data-backend-state="{name}"] >> text=healthy'
        services.wait_for_selector(healthy, timeout=60_000)
        before = timeline.eval_on_selector_all(
            'tr[data-kind="serve.backend.ejected"]', "r => r.length"
        )
        reloads = services.evaluate("performance.getEntriesByType('navigation').length")
        killed = time.monotonic()
        os.kill(replica.pid, signal.SIGKILL)
        services.wait_for_selector(f'[data-backend-state="{name}"] >> text=ejected', timeout=30_000)
        on_services = time.monotonic() - killed
        timeline.wait_for_selector(
            f'tr[data-kind="serve.backend.ejected"]:has-text("{name}")', timeout=30_000
        )
        assert (
            timeline.eval_on_selector_all('tr[data-kind="serve.backend.ejected"]', "r => r.length")
            > before
        )
        on_timeline = time.monotonic() - killed
        print(f"ejection seen on services {on_services:.2f} s, timeline {on_timeline:.2f} s")
        # no reload happened: the same document, updated in place
        assert services.evaluate("performance.getEntriesByType('navigation').length") == reloads
        text = services.inner_text("main")
        assert "ejected" in text  # text, not colour alone

        # the charts: drawn with data, and the ejection arrives as a mark, live
        latency = '[data-chart="latency:digits"] svg'
        services.wait_for_function(
            f"document.querySelector('{latency}') && "
            f"+document.querySelector('{latency}').dataset.points > 0",
            timeout=60_000,
        )
        services.wait_for_function(
            "+document.querySelector('[data-chart=\"errors:digits\"] svg').dataset.marks > 0",
            timeout=60_000,
        )
        # the killed replica's own ejection (the absent vendor's is there from the start)
        services.locator(
            '[data-chart="errors:digits"] .mark-label', has_text=f"ejected {name}"
        ).first.wait_for(timeout=60_000)
        assert "p99 latency" in services.inner_text(f"{latency} >> xpath=..")
        # the description and the table say it in words
        desc = services.text_content('[data-chart="latency:digits"] desc') or ""
        assert "latest" in desc, desc
        assert "ms" in desc, desc
        assert services.locator('[data-chart="latency:digits"] details table tbody tr').count() > 0
        # keyboard: focus the chart, an arrow key reads a point
        services.focus('[data-chart="latency:digits"]')
        services.keyboard.press("End")
        readout = services.text_content('[data-chart="latency:digits"] .readout') or ""
        assert "UTC" in readout, readout
        assert "ms" in readout, readout
        assert services.evaluate("performance.getEntriesByType('navigation').length") == reloads
        stop_load.set()
        load.join(30)

        # SLOs: budget and burn drawn from the same rows
        slos = browser.new_page()
        _watch(slos, errors)
        slos.goto(f"{up.api_url}/#/slos")
        slos.wait_for_selector('[data-chart="budget:digits-availability"] svg')
        burn = slos.text_content('[data-chart="burn:digits-availability"] desc') or ""
        assert "1h/5m" in burn, burn
        assert (
            int(
                slos.get_attribute('[data-chart="budget:digits-availability"] svg', "data-points")
                or 0
            )
            > 0
        )

        # training: progress from train events, updated live when one is written
        jobs = browser.new_page()
        _watch(jobs, errors)
        jobs.goto(f"{up.api_url}/#/jobs")
        jobs.wait_for_selector('[data-chart="progress:train-digits"] svg[data-points="0"]')
        up.log.emit("train.checkpoint.saved", "train-digits", step=40, name="c1")
        up.log.emit("train.restarted", "train-digits", attempt=1)
        up.log.emit("train.restored", "train-digits", step=40)
        jobs.wait_for_selector('[data-chart="progress:train-digits"] svg[data-points="2"]')
        jobs.locator(
            '[data-chart="progress:train-digits"] .mark-label', has_text="restarted"
        ).first.wait_for()
        for done in (slos, jobs, services, timeline):
            done.close()  # each open page re-reads on every event: keep the drill's CPU

        drills = browser.new_page()
        _watch(drills, errors)
        drills.goto(f"{up.api_url}/#/drills")
        drills.wait_for_selector('main[data-loaded="drills"]')
        drills.fill('input[name="experiment"]', "steady.json")
        drills.fill('input[name="token"]', token)
        drills.click("button[type=submit]")
        drills.wait_for_selector("#drill-message >> text=started", timeout=30_000)
        try:
            drills.wait_for_selector("[data-drill-state] >> text=passed", timeout=120_000)
        except Exception:
            print(drills.inner_text("main"))
            raise
        # segments and reports on the same page: quarantine from the page, then release
        drills.click('button[data-action="/api/segments/staging/quarantine"]')
        drills.wait_for_selector('[data-segment-state="staging"] >> text=quarantined')
        drills.click('button[data-action="/api/segments/staging/release"]')
        drills.wait_for_selector('[data-segment-state="staging"] >> text=in service')
        assert errors == [], errors
    finally:
        browser.close()
        pw.stop()
