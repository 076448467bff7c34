"""What each playbook action does, and the checks that decide whether it worked.

Owns: the I/O edge of playbooks. Every action goes through the library that owns the
thing it acts on: ``restore`` through ``Vault.restore``, ``rollback`` and ``promote``
through ``bastion.validate`` (gated promotion only), ``quarantine`` through
``bastion.segment.quarantine(manifest, name)``, ``run`` under ``bastion.supervise``,
``notify`` as an HTTP POST signed with HMAC-SHA256. An action returns a one-line detail
or raises ``ActionFailed``.

Must never: decide whether an action may run (the ledger and the runner do), retry an
action (a retry would be a second run), or put a webhook's secret in an event.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import json
import os
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bastion.errors import BastionError
from bastion.events import Emit
from bastion.manifest import Manifest

__all__ = [
    "SIGNATURE_HEADER",
    "ActionContext",
    "ActionFailed",
    "run_action",
    "run_check",
    "sign",
]

SIGNATURE_HEADER = "X-Bastion-Signature-256"
"""The webhook's signature: ``sha256=<hex HMAC-SHA256 of the body under the secret>``."""


class ActionFailed(Exception):
    """An action did not do what it was asked; ``str()`` says what happened."""


@dataclass
class ActionContext:
    """What an action may reach: the manifest, the event log, and the runner's stop flag."""

    manifest: Manifest
    events: Emit
    stopping: Callable[[], bool] = lambda: False


def sign(secret: bytes, body: bytes) -> str:
    """The signature header's value for ``body``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def _inside(base: Path, value: str, what: str) -> Path:
    path = (base / value).resolve()
    if path != base and base not in path.parents:
        raise ActionFailed(f"{what} {value!r} is outside the manifest's directory {base}")
    return path


def _vault(ctx: ActionContext) -> Any:
    from bastion.vault import Vault

    return Vault.from_manifest(ctx.manifest, events=ctx.events)


def _restore(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    into = _inside(ctx.manifest.base_dir.resolve(), str(p["into"]), "into")
    snap = _vault(ctx).restore(str(p["snapshot"]), into, clean=True)
    return f"restored {snap.ref} into {into}"


def _rollback(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    from bastion.validate import rollback

    done = rollback(_vault(ctx), str(p["model"]), events=ctx.events)
    return f"{done.name}@prod -> {done.ref} (was {done.previous})"


def _promote(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    from bastion.validate import promote

    done = promote(_vault(ctx), str(p["model"]), events=ctx.events)
    return f"{done.name}@prod -> {done.ref} (verdict {done.verdict})"


def _quarantine(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    # The boundary with bastion.segment is one function, looked up when the action runs:
    # quarantine(manifest, name). Without it the action fails and says so.
    try:
        segment = importlib.import_module("bastion.segment")
    except ImportError:
        segment = None
    quarantine = getattr(segment, "quarantine", None)
    if quarantine is None:
        raise ActionFailed(
            "segments not available: this Bastion has no bastion.segment.quarantine; "
            "quarantine the segment by hand or upgrade"
        )
    result = quarantine(ctx.manifest, str(p["segment"]))
    return f"segment {p['segment']} quarantined" + (f" ({result})" if result else "")


def _gateway_control(ctx: ActionContext, service: str, body: dict[str, Any]) -> str:
    svc = ctx.manifest.services.get(service)
    if svc is None:
        raise ActionFailed(f"unknown service {service!r}")
    from bastion.serve._auth import client_keys

    url = f"http://{svc.listen}/bastion/control"
    headers = {"Content-Type": "application/json"}
    keys = client_keys(service, svc.auth.keys_env if svc.auth else None)
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    data = json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:  # noqa: S310 - http(s) only
            return f"{service}: {resp.read(2000).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:
        raise ActionFailed(
            f"{url} answered {exc.code}: {exc.read(500).decode(errors='replace')}"
        ) from None
    except OSError as exc:
        raise ActionFailed(f"{url}: the gateway did not answer ({exc})") from None


def _failover(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    return _gateway_control(ctx, str(p["service"]), {"op": "failover", "tier": str(p["tier"])})


def _scale(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    body = {"op": "scale", "backend": str(p["backend"]), "replicas": int(p["replicas"])}
    return _gateway_control(ctx, str(p["service"]), body)


def _restart(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    job = str(p["job"])
    if job not in ctx.manifest.jobs:
        raise ActionFailed(f"unknown job {job!r}")
    from bastion import event_kinds as ek
    from bastion.events import EventLog
    from bastion.train import request_move

    slot = p.get("slot")
    with EventLog.in_state_dir(ctx.manifest.state_dir) as log:
        after = log.last_id()
        request_move(ctx.manifest.state_dir, job, slot=str(slot) if slot else None)
        # done when the worker has started again: that start's event names its slot
        deadline = time.monotonic() + float(p.get("timeout_s") or 120.0)
        while time.monotonic() < deadline and not ctx.stopping():
            for event in log.query(kind=ek.TRAIN_STARTED, subject=job, after_id=after):
                where, pid = event.data.get("slot"), event.data.get("pid")
                return f"{job} restarted on slot {where} (pid {pid})"
            time.sleep(0.05)
    raise ActionFailed(f"restart {job}: the worker did not start again in time")


def _run(ctx: ActionContext, p: Mapping[str, Any]) -> str:
    from bastion.supervise import Child, ProcessSpec

    argv = [str(a) for a in p["command"]]
    timeout = float(p.get("timeout_s") or 60.0)
    try:
        child = Child(ProcessSpec(argv=argv, cwd=ctx.manifest.base_dir, name="playbook"))
    except BastionError as exc:
        raise ActionFailed(str(exc)) from None
    deadline = time.monotonic() + timeout
    while True:
        done = child.wait(0.1)
        if done is not None:
            break
        if ctx.stopping() or time.monotonic() >= deadline:
            child.terminate(5.0)
            raise ActionFailed(f"{argv[0]} did not finish within {timeout:g} s; stopped")
    if not done.ok:
        raise ActionFailed(f"{argv[0]} ended {done.reason}")
    return f"{argv[0]} exited 0 in {done.runtime_s:.2f} s"


def _notify(ctx: ActionContext, p: Mapping[str, Any], payload: Mapping[str, Any]) -> str:
    name = str(p["hmac_key_env"])
    secret = os.environ.get(name)
    if not secret:
        raise ActionFailed(f"notify: the environment variable {name} (the HMAC key) is not set")
    body = json.dumps(payload, sort_keys=True, default=str).encode()
    req = urllib.request.Request(  # noqa: S310 - the manifest allows http(s) URLs only
        str(p["url"]),
        data=body,
        method="POST",
        headers={
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(secret.encode(), body),
            "X-Bastion-Idempotency-Key": str(payload.get("key", "")),
        },
    )
    try:
        with urllib.request.urlopen(req, timeout=float(p.get("timeout_s") or 10.0)) as resp:  # noqa: S310
            return f"POST {p['url']}: {resp.status}"
    except urllib.error.HTTPError as exc:
        raise ActionFailed(f"POST {p['url']} answered {exc.code}") from None
    except OSError as exc:
        raise ActionFailed(f"POST {p['url']}: {exc}") from None


_ACTIONS: dict[str, Callable[[ActionContext, Mapping[str, Any]], str]] = {
    "restore": _restore,
    "rollback": _rollback,
    "promote": _promote,
    "quarantine": _quarantine,
    "failover": _failover,
    "scale": _scale,
    "restart": _restart,
    "run": _run,
}


def run_action(
    ctx: ActionContext, do: str, params: Mapping[str, Any], payload: Mapping[str, Any]
) -> str:
    """Do one action; its detail, or ``ActionFailed``. ``payload`` is what a webhook is
    sent (rule, incident, key, the trigger event)."""
    try:
        if do == "notify":
            return _notify(ctx, params, payload)
        return _ACTIONS[do](ctx, params)
    except ActionFailed:
        raise
    except BastionError as exc:
        raise ActionFailed(str(exc)) from None


def _open_alerts(manifest: Manifest, slo: str) -> list[str]:
    """The SLO's alerts open now, read back from the log as bastion.slo records them."""
    from bastion import event_kinds as ek
    from bastion.events import EventLog

    opened: dict[str, str] = {
        ek.SLO_BURN_PAGE: "page",
        ek.SLO_BURN_TICKET: "ticket",
        ek.SLO_NODATA: "nodata",
    }
    firing: set[str] = set()
    with EventLog.in_state_dir(manifest.state_dir) as log:
        for event in log.query(kind="slo.*", subject=slo):
            if event.kind in opened:
                firing.add(opened[event.kind])
            elif event.kind == ek.SLO_BURN_RESOLVED:
                firing.discard(str(event.data.get("severity")))
            elif event.kind == ek.SLO_NODATA_RESOLVED:
                firing.discard("nodata")
    return sorted(firing)


def _check_once(ctx: ActionContext, check: Mapping[str, Any]) -> tuple[bool, str]:
    if "command" in check:
        argv = [str(a) for a in check["command"]]
        try:
            done = subprocess.run(
                argv, cwd=ctx.manifest.base_dir, capture_output=True, timeout=30, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"{argv[0]}: {exc}"
        return done.returncode == 0, f"{argv[0]} exited {done.returncode}"
    if "http" in check:
        try:
            with urllib.request.urlopen(str(check["http"]), timeout=5) as resp:  # noqa: S310
                return 200 <= resp.status < 300, f"GET {check['http']}: {resp.status}"
        except urllib.error.HTTPError as exc:
            return False, f"GET {check['http']}: {exc.code}"
        except OSError as exc:
            return False, f"GET {check['http']}: {exc}"
    slo = str(check["slo"])
    firing = _open_alerts(ctx.manifest, slo)
    return not firing, f"slo {slo}: " + (", ".join(firing) + " open" if firing else "no alert open")


def run_check(ctx: ActionContext, check: Mapping[str, Any]) -> tuple[bool, str]:
    """Try ``check`` every ``every_s`` until it passes or ``within_s`` has gone by."""
    deadline = time.monotonic() + float(check.get("within_s", 10.0))
    every = float(check.get("every_s", 0.5))
    while True:
        ok, detail = _check_once(ctx, check)
        if ok or time.monotonic() >= deadline or ctx.stopping():
            return ok, detail
        time.sleep(min(every, max(0.0, deadline - time.monotonic())))
