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

        drills = browser.new_page()
        _watch(drills, errors)
        drills.goto(f"{up.api_url}/#/drills")
        drills.wait_for_selector('main[data-loaded="drills"]')
        drills.fill('input[name="experiment"]', "steady.json")
        drills.fill('input[name="token"]', token)
        drills.click("button[type=submit]")
        drills.wait_for_selector("#drill-message >> text=started", timeout=30_000)
        drills.wait_for_selector("[data-drill-state] >> text=passed", timeout=120_000)
        assert errors == [], errors
    finally:
        browser.close()
        pw.stop()
