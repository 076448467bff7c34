"""The inference gateway and the local model replica.

Owns: the aiohttp gateway (``Gateway``: routes, P2C routing over tiers, passive and active
health, attempts under a retry budget and an attempt cap, hedging, deadlines, stream
failover, admission and shedding, Prometheus metrics), golden probes (``GoldenProber``:
known questions asked of every backend, a wrong answerer ejected), the backend pool (``Pool``,
``Upstream``), admission (``Admission``), local replica sets under ``bastion.supervise``
(``ReplicaSet``) with the autoscaler (``Autoscaler``), the model replica server
(``bastion.serve.replica``) and the OpenAI response shapes (``bastion.serve.shapes``).
Each ``statistics()`` returns a frozen record (``GatewayStatistics`` ...), turned into
JSON or ``/metrics`` only at the edges.

Events go to any ``bastion.events.Emit``; give the gateway an ``EventWriter``, whose
thread keeps SQLite off the event loop.

Must never: write the event log on the per-request path; spawn processes except through
``bastion.supervise``; load model bytes the vault did not verify.
"""

from __future__ import annotations

from bastion.serve._attempts import AttemptStatistics
from bastion.serve._auth import client_keys
from bastion.serve._golden import (
    GOLDEN_HEADER,
    GoldenCheck,
    GoldenProber,
    GoldenSet,
    GoldenStatistics,
    load_golden,
)
from bastion.serve.admission import PRIORITIES, Admission, AdmissionStatistics, QueueFull
from bastion.serve.gateway import (
    BACKEND_HEADER,
    DEADLINE_HEADER,
    PRIORITY_HEADER,
    Gateway,
    GatewayStatistics,
)
from bastion.serve.pool import Pool, PoolStatistics, Upstream, UpstreamSpec, UpstreamStatistics
from bastion.serve.replicas import (
    Autoscaler,
    AutoscalerStatistics,
    ReplicaSet,
    ReplicaSetStatistics,
)
from bastion.serve.runner import (
    GatewayDown,
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
    "GOLDEN_HEADER",
    "PRIORITIES",
    "PRIORITY_HEADER",
    "Admission",
    "AdmissionStatistics",
    "AttemptStatistics",
    "Autoscaler",
    "AutoscalerStatistics",
    "Gateway",
    "GatewayDown",
    "GatewayStatistics",
    "GatewayThread",
    "GoldenCheck",
    "GoldenProber",
    "GoldenSet",
    "GoldenStatistics",
    "Pool",
    "PoolStatistics",
    "QueueFull",
    "ReplicaSet",
    "ReplicaSetStatistics",
    "Upstream",
    "UpstreamSpec",
    "UpstreamStatistics",
    "client_keys",
    "load_golden",
    "run_services",
    "spawn_server",
    "specs_for",
    "status",
    "stop_server",
]
