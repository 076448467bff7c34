"""``POST /bastion/control``: operate a running service from outside (a playbook, a person).

Owns: two operations on one gateway, on its own event loop (the pool is not
thread-safe), each an event:

- ``{"op": "failover", "tier": "fallback"}``: traffic goes to that tier and the ones
  after it only (``primary`` or 0 sends it everywhere again); ``serve.failed_over``.
- ``{"op": "scale", "backend": "local", "replicas": 3}``: the backend's replica set keeps
  at least that many replicas (its autoscaler's floor; the ceiling rises to meet it), and
  the scale loop starts them within about a second; ``serve.scale_requested``.

The route sits behind the gateway's client keys like every route but ``/healthz`` and
``/metrics``. Bad input is a 4xx naming the field, never a 500.

Must never: touch the pool from another thread, or act on a backend it does not serve.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion import event_kinds as ek

if TYPE_CHECKING:
    from bastion.serve.gateway import Gateway
    from bastion.serve.replicas import ReplicaSet

__all__ = ["ServiceControl"]

_MAX_REPLICAS = 1024


def _problem(status: int, message: str) -> web.Response:
    from bastion.serve import shapes

    return web.json_response(shapes.error(message, "invalid_request_error", status), status=status)


def _tier(value: Any) -> int | None:
    if value == "primary":
        return 0
    if value == "fallback":
        return 1
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return None


class ServiceControl:
    """Registers ``POST /bastion/control`` on ``gateway``'s app; ``sets`` are the
    service's replica sets by backend name (``bastion serve`` builds them)."""

    def __init__(self, gateway: Gateway, sets: Mapping[str, ReplicaSet]) -> None:
        self.gateway = gateway
        self.sets = sets
        gateway.app.router.add_post("/bastion/control", self._post)

    async def _post(self, request: web.Request) -> web.Response:
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _problem(
                400,
                "POST /bastion/control: the body is not JSON "
                '(e.g. {"op": "failover", "tier": "fallback"})',
            )
        if not isinstance(body, dict):
            return _problem(400, "POST /bastion/control: the body is a JSON object")
        op = body.get("op")
        if op == "failover":
            return self._failover(body)
        if op == "scale":
            return self._scale(body)
        return _problem(400, f"POST /bastion/control: op {op!r} is not failover or scale")

    def _failover(self, body: dict[str, Any]) -> web.Response:
        tier = _tier(body.get("tier"))
        if tier is None:
            return _problem(
                400, f"failover: tier {body.get('tier')!r} is not primary, fallback or a number"
            )
        before = self.gateway.pool.min_tier
        try:
            serving = self.gateway.pool.fail_over(tier)
        except ValueError as exc:
            return _problem(409, f"failover: {exc}")
        self.gateway.record(
            ek.SERVE_FAILED_OVER, tier=tier, from_tier=before, serving=list(serving)
        )
        return web.json_response({"op": "failover", "tier": tier, "serving": list(serving)})

    def _scale(self, body: dict[str, Any]) -> web.Response:
        backend, replicas = body.get("backend"), body.get("replicas")
        rs = self.sets.get(backend) if isinstance(backend, str) else None
        if rs is None:
            known = ", ".join(sorted(self.sets)) or "none"
            return _problem(
                404,
                f"scale: {backend!r} is not a local backend of this service "
                f"(local backends: {known})",
            )
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not 0 <= replicas <= _MAX_REPLICAS
        ):
            return _problem(
                400, f"scale: replicas {replicas!r} is not a whole number from 0 to {_MAX_REPLICAS}"
            )
        scaler = rs.autoscaler
        before = scaler.min_replicas
        scaler.min_replicas = replicas
        scaler.max_replicas = max(scaler.max_replicas, replicas)
        self.gateway.record(
            ek.SERVE_SCALE_REQUESTED, backend=backend, min_replicas=replicas, from_min=before,
            max_replicas=scaler.max_replicas,
        )  # fmt: skip
        return web.json_response(
            {
                "op": "scale",
                "backend": backend,
                "min_replicas": replicas,
                "max_replicas": scaler.max_replicas,
            }
        )
