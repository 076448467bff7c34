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

from typing import TYPE_CHECKING

from bastion._lazy import lazy

if TYPE_CHECKING:
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

# Imported on first use (PEP 562), as ``bastion`` itself does: a model replica process
# imports ``bastion.serve.replica``, which needs none of the gateway, and each replica's
# start (a replacement after a crash included) paid for all of it.
_LAZY = {
    "Admission": "bastion.serve.admission",
    "AdmissionStatistics": "bastion.serve.admission",
    "AttemptStatistics": "bastion.serve._attempts",
    "Autoscaler": "bastion.serve.replicas",
    "AutoscalerStatistics": "bastion.serve.replicas",
    "BACKEND_HEADER": "bastion.serve.gateway",
    "DEADLINE_HEADER": "bastion.serve.gateway",
    "GOLDEN_HEADER": "bastion.serve._golden",
    "Gateway": "bastion.serve.gateway",
    "GatewayDown": "bastion.serve.runner",
    "GatewayStatistics": "bastion.serve.gateway",
    "GatewayThread": "bastion.serve.runner",
    "GoldenCheck": "bastion.serve._golden",
    "GoldenProber": "bastion.serve._golden",
    "GoldenSet": "bastion.serve._golden",
    "GoldenStatistics": "bastion.serve._golden",
    "PRIORITIES": "bastion.serve.admission",
    "PRIORITY_HEADER": "bastion.serve.gateway",
    "Pool": "bastion.serve.pool",
    "PoolStatistics": "bastion.serve.pool",
    "QueueFull": "bastion.serve.admission",
    "ReplicaSet": "bastion.serve.replicas",
    "ReplicaSetStatistics": "bastion.serve.replicas",
    "Upstream": "bastion.serve.pool",
    "UpstreamSpec": "bastion.serve.pool",
    "UpstreamStatistics": "bastion.serve.pool",
    "client_keys": "bastion.serve._auth",
    "load_golden": "bastion.serve._golden",
    "run_services": "bastion.serve.runner",
    "spawn_server": "bastion.serve.runner",
    "specs_for": "bastion.serve.runner",
    "status": "bastion.serve.runner",
    "stop_server": "bastion.serve.runner",
}


__getattr__, __dir__ = lazy(__name__, _LAZY)


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
