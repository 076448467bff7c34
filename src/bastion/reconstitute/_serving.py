"""Serving a reconstituted model again, proven by a real request.

Owns: which services serve a snapshot (a ``model:`` backend whose ref resolves to it),
bringing each one's gateway back when it does not answer (``bastion serve SERVICE`` as
a detached process of its own session, logging to
``<state_dir>/reconstitute/serve-<service>.log``: the same serve machinery an operator
runs, whose replicas load the verified snapshot from the vault), and the proof: a real
``POST /v1/predict`` through the gateway answered 200 by one of that backend's own
replicas (``x-bastion-backend``), not by a fallback tier.

Must never: call a service serving when only its fallback answered, or start a second
gateway on a listen address something already answers on.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import UnavailableError

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.vault import Snapshot, Vault

__all__ = ["Serving", "serve_again", "services_of"]


@dataclass(frozen=True, slots=True)
class Serving:
    """One service answering with the model again.

    Attributes:
        service: the manifest's service.
        backend: its ``model:`` backend that serves the snapshot.
        url: the gateway.
        answered_by: the replica that answered the proving request (``local-0``).
        started_pid: the gateway process this reconstitution started (its own session:
            stop it with ``kill -- -PID``), or None when one was already running.
        seconds: from the start of the reconstitution to that answer.
    """

    service: str
    backend: str
    url: str
    answered_by: str
    started_pid: int | None
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "backend": self.backend,
            "url": self.url,
            "answered_by": self.answered_by,
            "started_pid": self.started_pid,
            "seconds": round(self.seconds, 6),
        }


def services_of(manifest: Manifest, vault: Vault, snap: Snapshot) -> list[tuple[str, str]]:
    """``(service, backend)`` for each ``model:`` backend whose ref resolves to ``snap``
    (a backend on ``@prod`` serves a reconstituted ``@3`` only if ``@prod`` is 3)."""
    from bastion.errors import BastionError

    out = []
    for name, service in sorted(manifest.services.items()):
        for backend in service.backends:
            if backend.model is None or str(backend.model).split("@", 1)[0] != snap.name:
                continue
            try:
                if vault.snapshot(str(backend.model)).id == snap.id:
                    out.append((name, backend.name))
            except BastionError:
                continue
    return out


def _probe_input(vault: Vault, snap: Snapshot) -> list[float]:
    """An input of the model's own width (``model.json``'s first layer, or
    ``input_size``), all zeros."""
    width = 1
    if "model.json" in snap.files:
        spec = json.loads(vault.read(snap, "model.json"))
        layers = spec.get("layers") if isinstance(spec, dict) else None
        if isinstance(layers, list) and layers and isinstance(layers[0], int):
            width = layers[0]
        elif isinstance(spec, dict) and isinstance(spec.get("input_size"), int):
            width = spec["input_size"]
    return [0.0] * width


def _ask(url: str, body: bytes, key: str | None) -> tuple[int, str]:
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    # http:// built from the manifest's listen address, never a user's URL
    request = urllib.request.Request(f"{url}/v1/predict", data=body, headers=headers)  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:  # noqa: S310
            return resp.status, resp.headers.get("x-bastion-backend", "")
    except urllib.error.HTTPError as exc:
        exc.close()
        return exc.code, exc.headers.get("x-bastion-backend", "") if exc.headers else ""
    except OSError:
        return 0, ""


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=2):  # noqa: S310
            return True
    except urllib.error.HTTPError as exc:
        exc.close()
        return True  # something answers HTTP there: do not start a second gateway
    except OSError:
        return False


def _tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1] if lines else ""


def serve_again(
    manifest: Manifest,
    vault: Vault,
    snap: Snapshot,
    service: str,
    backend: str,
    *,
    began: float,
    deadline_s: float = 60.0,
) -> Serving:
    """Make ``service`` answer with ``snap`` through ``backend`` again (see the module);
    ``UnavailableError`` (naming the log) when no replica of it answered in time."""
    from bastion.serve import client_keys

    config = manifest.services[service]
    url = f"http://{config.listen}"
    keys = client_keys(service, config.auth.keys_env if config.auth else None)
    body = json.dumps({"inputs": _probe_input(vault, snap)}).encode()
    log = Path(manifest.state_dir) / "reconstitute" / f"serve-{service}.log"
    proc: subprocess.Popen[bytes] | None = None
    if not _answers(url):
        log.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "bastion", "serve", service, "-f", str(manifest.path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,  # it outlives this command: it is the service now
            )
    deadline = time.monotonic() + deadline_s
    last = "no answer"
    while time.monotonic() < deadline:
        status, who = _ask(url, body, keys[0] if keys else None)
        if status == 200 and who.startswith(f"{backend}-"):
            return Serving(
                service,
                backend,
                url,
                who,
                proc.pid if proc is not None else None,
                time.monotonic() - began,
            )
        last = f"HTTP {status} from {who or 'the gateway'}" if status else "no answer"
        if proc is not None and proc.poll() is not None:
            raise UnavailableError(
                f"bastion serve {service} exited with {proc.returncode} before serving "
                f"{snap.ref} ({_tail(log) or 'no output'}; log: {log})"
            )
        time.sleep(0.05)  # the gateway and its replicas are starting: ask again
    if proc is not None:
        # a gateway that never served is not left behind, half up, on the service's port
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    raise UnavailableError(
        f"{service} did not answer through its {backend} replicas within {deadline_s:g} s "
        f"(last: {last}); see {log if proc is not None else 'the running gateway'}"
        + ("; the gateway it started was stopped" if proc is not None else "")
    )
