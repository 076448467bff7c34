"""A gateway's segment routes: take a quarantined segment's backends out, put them back.

Owns: ``POST /bastion/segments/quarantine`` and ``POST /bastion/segments/release``
(body ``{"segment": NAME}``; answer ``{"segment", "backends": [names moved]}``) and
``GET /bastion/segments`` (what is quarantined, and each upstream's segment), which
``bastion.segment.quarantine`` and ``release`` call on every running gateway. They sit
behind the gateway's client keys, as the rollout routes do.

Out means the ``quarantined`` arm (``bastion.serve.pool.QUARANTINED``), which no request
uses: a request already on such a backend finishes, the next one goes elsewhere, and the
other segments' backends keep serving. Release puts each back in the arm it was in.

Must never: touch an upstream of another segment, or run off the gateway's event loop
(the pool is not thread-safe).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from bastion.serve.pool import QUARANTINED

if TYPE_CHECKING:
    from bastion.serve.gateway import Gateway

__all__ = ["add_segment_routes", "quarantine_segment", "release_segment"]


def quarantine_segment(gateway: Gateway, segment: str) -> list[str]:
    """Move ``segment``'s upstreams to the quarantined arm; their names (on the loop)."""
    gateway.quarantined.add(segment)
    moved = []
    before = gateway.arm_before
    for name, up in list(gateway.pool.upstreams.items()):
        if up.arm != QUARANTINED and gateway.segment_of(up.spec) == segment:
            before[name] = up.arm
            gateway.pool.set_arm(name, QUARANTINED)
            moved.append(name)
    return sorted(moved)


def release_segment(gateway: Gateway, segment: str) -> list[str]:
    """Put ``segment``'s quarantined upstreams back in their arms; their names."""
    gateway.quarantined.discard(segment)
    before = gateway.arm_before
    moved = []
    for name, up in list(gateway.pool.upstreams.items()):
        if up.arm == QUARANTINED and gateway.segment_of(up.spec) == segment:
            gateway.pool.set_arm(name, before.pop(name, "stable"))
            moved.append(name)
    return sorted(moved)


def add_segment_routes(gateway: Gateway) -> None:
    async def body_segment(request: web.Request) -> str:
        try:
            body = json.loads(await request.read() or b"{}")
        except ValueError:
            body = None
        segment = body.get("segment") if isinstance(body, dict) else None
        if not isinstance(segment, str) or not segment:
            raise web.HTTPBadRequest(
                text=json.dumps({"error": 'send {"segment": NAME}'}),
                content_type="application/json",
            )
        return segment

    async def quarantine(request: web.Request) -> web.Response:
        segment = await body_segment(request)
        moved = quarantine_segment(gateway, segment)
        return web.json_response({"segment": segment, "backends": moved})

    async def release(request: web.Request) -> web.Response:
        segment = await body_segment(request)
        moved = release_segment(gateway, segment)
        return web.json_response({"segment": segment, "backends": moved})

    async def show(_request: web.Request) -> web.Response:
        ups: dict[str, Any] = {
            name: {"segment": gateway.segment_of(up.spec), "arm": up.arm}
            for name, up in gateway.pool.upstreams.items()
        }
        return web.json_response({"quarantined": sorted(gateway.quarantined), "upstreams": ups})

    gateway.app.router.add_post("/bastion/segments/quarantine", quarantine)
    gateway.app.router.add_post("/bastion/segments/release", release)
    gateway.app.router.add_get("/bastion/segments", show)
