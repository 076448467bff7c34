"""What ``bastion serve`` does before the gateway's modules import: pin each model backend
to its snapshot version and start its first replicas.

A model replica takes the longest of anything to be ready (its own interpreter, its
imports, a verified model read from the vault), and the gateway's imports (aiohttp, the
pool, rollouts, SLOs) take about as long again; started first, the replicas load while
the gateway imports, instead of after it listens. Each one runs under its own
``bastion.supervise.Supervisor`` from the start, and the service's ``ReplicaSet`` takes
it over (``ReplicaSet(early=...)``), so nothing is supervised twice or left behind.

Owns: ``start_early`` (and the ``Early`` it returns), ``pin_models``, ``addresses`` and
``replica_log_dir`` (``runner`` uses the same three).

Must never: import the gateway (the point is to come before it), or start a replica for
a service whose gateway address cannot be bound (``run_services`` refuses it before any
replica starts).
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bastion.errors import BastionError, UsageError
from bastion.manifest import Manifest
from bastion.serve.replicas import EarlyReplica, start_replicas

__all__ = ["Early", "addresses", "pin_models", "replica_log_dir", "start_early"]


@dataclass
class Early:
    """The pinned models and the replicas started for ``run_services``, by (service,
    backend), until its replica sets take them."""

    pinned: dict[str, str]
    replicas: dict[tuple[str, str], list[EarlyReplica]] = field(default_factory=dict)

    def take(self, service: str, backend: str) -> list[EarlyReplica]:
        return self.replicas.pop((service, backend), [])

    def stop(self) -> None:
        """Stop the replicas no set took (``run_services`` failed before it made them)."""
        for replicas in self.replicas.values():
            for replica in replicas:
                replica.supervisor.stop(timeout=5)
        self.replicas.clear()


def addresses(
    manifest: Manifest, names: Sequence[str], listen: str | None
) -> dict[str, tuple[str, bool]]:
    """Where each named service's gateway listens here, and whether it is the service's
    first gateway (``listen`` in the manifest), from ``bastion serve --listen``."""
    if listen is None:
        return {n: (manifest.services[n].listen, True) for n in names if n in manifest.services}
    if len(names) != 1:
        raise UsageError(
            "--listen runs one gateway of one service: name the service, e.g. "
            f"`bastion serve {names[0] if names else 'SERVICE'} --listen {listen}`"
        )
    (name,) = names
    service = manifest.services.get(name)
    if service is None:
        return {}
    declared = service.gateway_addresses
    if listen not in declared:
        raise UsageError(
            f"--listen {listen}: not a gateway of service {name!r} (its gateways: "
            f"{', '.join(declared)}); add it to services.{name}.gateways in {manifest.path}"
        )
    return {name: (listen, listen == service.listen)}


def replica_log_dir(manifest: Manifest, service: str, address: str, primary: bool) -> Path:
    """Where a gateway's replicas log: a gateway other than the service's first gets a
    directory of its own (two gateways on one host each run their own replicas)."""
    log_dir = manifest.state_dir / "serve" / service
    return log_dir if primary else log_dir.with_name(f"{service}@{address.replace(':', '_')}")


def pin_models(manifest: Manifest, names: Sequence[str]) -> dict[str, str]:
    """Each model backend's ref, resolved to the snapshot version it names now."""
    refs = {
        str(b.model)
        for n in names
        if n in manifest.services
        for b in manifest.services[n].backends
        if b.model is not None
    }
    if not refs:
        return {}
    from bastion.vault import Vault

    try:
        vault = Vault.from_manifest(manifest)
    except BastionError:
        return {ref: ref for ref in refs}
    pinned = {}
    for ref in refs:
        try:
            pinned[ref] = vault.snapshot(ref).ref
        except BastionError:
            pinned[ref] = ref  # the replicas say why it does not load, in their logs
    return pinned


def _bindable(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except (OSError, ValueError):
            return False
    return True


def start_early(manifest: Manifest, names: Sequence[str], listen: str | None) -> Early | None:
    """Pin the models and start the named services' first local replicas; ``None`` when
    ``run_services`` will refuse to start (an unknown service, a gateway address that
    cannot be bound: it says why, with no replica started)."""
    if manifest.path is None or any(n not in manifest.services for n in names):
        return None
    where = addresses(manifest, names, listen)
    if not all(_bindable(address) for address, _ in where.values()):
        return None
    early = Early(pin_models(manifest, names))
    for name in names:
        address, primary = where[name]
        for backend in manifest.services[name].backends:
            if backend.model is None:
                continue
            early.replicas[(name, backend.name)] = start_replicas(
                backend,
                manifest_path=manifest.path,
                log_dir=replica_log_dir(manifest, name, address, primary),
                model=early.pinned[str(backend.model)],
            )
    return early
