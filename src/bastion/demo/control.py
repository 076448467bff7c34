"""Demo scene: one control plane. ``bastion up`` runs the example (its gateway and
replicas under one supervision tree, the API and the dashboard on one address); the
dashboard's timeline is open in headless Chromium when a replica is SIGKILLed, and a
screenshot shows the ejection arriving on the timeline, live.

The scene waits for states, never for times: the gateway healthy, the page's live
stream connected, the ``serve.backend.ejected`` event in the log, the row on the page.
Without Chromium or Playwright it says so and skips the screenshot (the kill and the
ejection are still shown, from the API); that never fails the demo.

It runs on ``bastion.up.yaml``, a copy of the example's manifest on free ports (the
example's fixed ports may be taken on a shared machine), with the same state directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import threading
import time
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bastion.demo import DemoContext, Scene

TITLE = "Control plane: `bastion up`, a replica killed while the dashboard is open"
CHROMIUM = "/usr/bin/chromium"
#: headless and quiet: no GPU, no network of its own, no updates, no first-run pages
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _manifest_on_free_ports(ctx: DemoContext) -> Path:
    from ruamel.yaml import YAML

    yaml = YAML()
    doc = yaml.load(ctx.manifest_path)
    for svc in doc.get("services", {}).values():
        svc["listen"] = f"127.0.0.1:{_free_port()}"
    doc["control"] = {**(doc.get("control") or {}), "listen": f"127.0.0.1:{_free_port()}"}
    doc["control"]["scrub"] = None  # not this scene's subject
    path = ctx.workdir / "bastion.up.yaml"
    yaml.dump(doc, path)
    return path


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as resp:  # noqa: S310 - our API's http:// URL
        return json.loads(resp.read())


def _browser() -> tuple[Any, Any, str]:
    """(playwright, browser, "") or (None, None, why there is no browser)."""
    if not Path(CHROMIUM).is_file() and shutil.which("chromium") is None:
        return None, None, f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import Error, sync_playwright
    except ImportError:
        return None, None, "Playwright is not installed (pip install 'bastion[browser]')"
    exe = CHROMIUM if Path(CHROMIUM).is_file() else str(shutil.which("chromium"))
    pw = sync_playwright().start()
    try:
        browser = pw.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS)
    except Error as exc:
        pw.stop()
        return None, None, f"Chromium did not start: {str(exc).splitlines()[0]}"
    return pw, browser, ""


def run(ctx: DemoContext) -> Scene:
    import psutil

    from bastion.control import Up
    from bastion.demo import Scene
    from bastion.demo._load import wait_for
    from bastion.demo.serve import _ensure_model
    from bastion.manifest import load

    scene = Scene(TITLE)
    which = _ensure_model(ctx)
    path = _manifest_on_free_ports(ctx)
    manifest = load(path)
    service = next(iter(manifest.services))
    began = time.monotonic()
    up = Up(manifest)
    up.start()
    stop = threading.Event()
    loop = threading.Thread(target=up.run, args=(stop,), daemon=True)
    pw = browser = None
    try:
        # the browser starts while the gateway's replicas load (both take seconds)
        pw, browser, why = _browser()
        ready_s = up.wait_ready()
        loop.start()
        url = up.api_url
        ctx.console.print(f"  dashboard: {url}/  (API: {url}/api/openapi.json)")
        scene.findings.append(
            f"bastion up: {', '.join(up.children())} healthy in {ready_s:.1f} s, serving "
            f"{which}; the dashboard is at {url}/"
        )
        page = None
        if browser is not None:
            from playwright.sync_api import Error as BrowserError

            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(60_000)
                page.goto(f"{url}/#/events?kind=serve.*")
                page.wait_for_selector('main[data-loaded="events"]')
                page.wait_for_selector('#live:text-is("live")')
            except BrowserError as exc:  # the browser, not the dashboard: say so, go on
                page, why = None, f"the browser failed: {str(exc).splitlines()[0]}"
        serve_pid = up.children()[f"serve:{service}"]["pid"]

        def in_pool() -> list[tuple[psutil.Process, str]]:
            """Replica processes whose backend is in the pool now (probed, breaker
            closed): only such a one can be ejected."""
            healthy = {
                b["url"].rsplit(":", 1)[-1]: b["name"]
                for b in _get(f"{url}/api/backends")["backends"]
                if not b["needs_probe"] and b["breaker"] in (None, "closed")
            }
            out = []
            for p in psutil.Process(serve_pid).children(recursive=True):
                argv = p.cmdline()
                if "bastion.serve.replica" in " ".join(argv) and "--port" in argv:
                    port = argv[argv.index("--port") + 1]
                    if port in healthy:
                        out.append((p, healthy[port]))
            return out

        if not wait_for(lambda: bool(in_pool()), 60):
            scene.ok = False
            scene.findings.append("  expected a local replica in the gateway's pool")
            return scene
        victim, name = in_pool()[0]
        after = _get(f"{url}/api/events?limit=1")["events"]
        last = after[0]["id"] if after else 0
        killed = time.monotonic()
        os.kill(victim.pid, signal.SIGKILL)

        def ejected() -> bool:
            page_ = _get(f"{url}/api/events?kind=serve.backend.ejected&limit=20")
            return any(e["id"] > last and e["data"].get("backend") == name for e in page_["events"])

        if not wait_for(ejected, 60):
            scene.ok = False
            scene.findings.append(f"  expected {name} (pid {victim.pid}) to be ejected")
            return scene
        scene.findings.append(
            f"SIGKILL of replica {name} (pid {victim.pid}): serve.backend.ejected in "
            f"{time.monotonic() - killed:.2f} s"
        )
        if page is None:
            scene.findings.append(f"no screenshot: {why}")
        else:
            row = f'tr[data-kind="serve.backend.ejected"]:has-text("{name}")'
            try:
                page.wait_for_selector(row)
            except BrowserError:
                scene.ok = False
                scene.findings.append("  expected the open timeline to show the ejection")
                return scene
            seen = time.monotonic() - killed
            reloads = page.evaluate("performance.getEntriesByType('navigation').length")
            page.locator(row).first.evaluate("r => r.classList.add('highlight')")
            shot = ctx.workdir / "dashboard-ejection.png"
            page.screenshot(path=str(shot), full_page=False)
            scene.findings.append(
                f"the open timeline showed the ejection {seen:.2f} s after the kill, with "
                f"no reload ({reloads} navigation); screenshot in headless Chromium: {shot}"
            )
        scene.findings.append(f"scene time {time.monotonic() - began:.1f} s")
        return scene
    finally:
        if browser is not None:
            browser.close()
        if pw is not None:
            pw.stop()
        stop.set()
        if loop.is_alive():
            loop.join(30)
        up.shutdown()
