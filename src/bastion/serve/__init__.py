"""The inference gateway and the local model replica.

Owns: the aiohttp gateway (``Gateway``: routes, P2C routing over tiers, passive and active
health, retries under a budget, hedging, deadlines, stream failover, admission and
shedding, Prometheus metrics), the backend pool (``Pool``, ``Upstream``), admission
(``Admission``), local replica sets under ``bastion.supervise`` (``ReplicaSet``) with the
autoscaler (``Autoscaler``), and the model replica server (``bastion.serve.replica``).

Must never: write the event log on the per-request path; spawn processes except through
``bastion.supervise``; load model bytes the vault did not verify.
"""

from __future__ import annotations

from bastion.serve._events import EventSink
from bastion.serve.admission import PRIORITIES, Admission, QueueFull
from bastion.serve.gateway import BACKEND_HEADER, DEADLINE_HEADER, PRIORITY_HEADER, Gateway
from bastion.serve.pool import Pool, Upstream, UpstreamSpec
from bastion.serve.replicas import Autoscaler, ReplicaSet
from bastion.serve.runner import (
    GatewayThread,
    run_services,
    spawn_server,
    specs_for,
    status,
    stop_server,
)

__all__ = [
    "BACKEND_HEADER",
    "DEADLINE_HEADER",
    "PRIORITIES",
    "PRIORITY_HEADER",
    "Admission",
    "Autoscaler",
    "EventSink",
    "Gateway",
    "GatewayThread",
    "Pool",
    "QueueFull",
    "ReplicaSet",
    "Upstream",
    "UpstreamSpec",
    "run_services",
    "spawn_server",
    "specs_for",
    "status",
    "stop_server",
]
