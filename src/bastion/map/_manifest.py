"""From ``bastion.yaml`` to the map's ``Graph``: so the map cannot drift from what runs.

Owns: how jobs, services, backends, replicas, inputs and the vault become nodes.
Synthetic ids use ``:`` (never valid in a manifest id), so they cannot collide.

- ``components``: one node each, as declared. ``redundancy`` members become k-of-n
  members (active-active and standby need 1 up; standby's failover time is an RTO
  question for drills, not an availability one). A component with redundancy and no
  declared availability is a pure group: it has no failure of its own.
- ``vault`` -> ``vault:replicas``, up while at least 1 of its replicas ``vault:N`` is up
  (reads need one intact copy). Local-directory replicas are tagged ``host=localhost``
  (one machine's disk); an ``s3://...`` replica is tagged with its endpoint
  (``endpoint=HOST:PORT``: two buckets behind one endpoint share its fate), or
  ``host=localhost`` when that endpoint is a loopback address.
- a job -> node ``JOB``: up while every hard ``depends_on`` is up, the vault is up (if
  there is one: it holds the job's checkpoints and model; through ``JOB:input=NAME`` for
  each input it reads, else directly), and at least one of its worker slots
  ``JOB:slot=NAME`` (if it declares slots).
- a service -> node ``SVC``: up while every hard ``depends_on`` is up and at least one
  backend ``SVC:BACKEND`` is up, in any tier (the gateway falls back through tiers).
  - a local backend (``model:``) is up while the vault is up and at least one of its
    ``replicas.min`` (at least 1) replica processes ``SVC:BACKEND#i`` is up (host=localhost);
  - a remote backend that names the component it is (``component:``) is up while that
    component is (so its availability, location and tags are the component's); a local
    one also needs that component (the machine or pool its replicas run on);
  - a remote backend (``url:``) is up while its provider is: the component whose id is
    its ``provider`` if one is declared, else its own endpoint event tagged with that
    provider (so two backends on one vendor share fate, however the provider is spelled).
    A remote backend with no provider is tagged with its URL's host instead (so two
    backends on one machine share fate; a loopback address is ``host=localhost``, the
    machine the local replicas and vault directories are on).
- a Ray slot or a Ray-placed backend's replica depends on ``ray:ADDRESS``, its cluster
  (the head, the GCS, is one failure domain tagged with its host): two slots on one
  cluster are no redundancy. A Ray slot has no failure of its own (any live node will
  do); a Ray replica still fails alone (its process, its node) or with the cluster.
- ``events: postgresql://...`` -> ``events:log`` tagged with its host, a soft dependency
  of every job and service (losing it loses events, not requests).
- a component whose id equals a job's or service's lends that node its availability,
  location and tags (the gateway or supervisor itself then counts as a failure).
- with no jobs and no services, the components nothing depends on are the tops (what is
  analysed), so a plain chain of components still shows its single points of failure.

Must never: read the event log or files (pure: manifest in, graph out).
"""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from urllib.parse import urlsplit

from bastion.manifest import Manifest
from bastion.map._graph import Graph, Node
from bastion.store import parse_replica_url

__all__ = ["graph_from_manifest"]

VAULT = "vault:replicas"
EVENTS = "events:log"


def _hard_soft(deps: list[object]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    hard: list[str] = []
    soft: list[str] = []
    for dep in deps:
        dep_id = getattr(dep, "id", None)
        dep_type = getattr(dep, "type", "hard")
        if isinstance(dep_id, str):
            (soft if dep_type == "soft" else hard).append(dep_id)
    return tuple(hard), tuple(soft)


def _url_host(url: str) -> str:
    """The failure domain a URL's host names: ``localhost`` for any loopback address."""
    host = (urlsplit(url).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return "localhost"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return "localhost"
    except ValueError:
        pass
    return host


def _pg_host(url: str) -> str:
    """The host a ``postgresql://`` URL names (``?host=`` too), as a failure domain."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        host = str(conninfo_to_dict(url).get("host") or "localhost")
    except Exception:  # the manifest checked it; a parser disagreement is not the map's
        host = urlsplit(url).hostname or "localhost"
    if host.startswith("/"):
        return "localhost"  # a unix socket directory: this machine
    return _url_host(f"http://{host}")


def graph_from_manifest(manifest: Manifest) -> Graph:
    nodes: list[Node] = []
    declared = {c.id: (i, c) for i, c in enumerate(manifest.components)}
    runnable = set(manifest.jobs) | set(manifest.services)

    for i, comp in enumerate(manifest.components):
        if comp.id in runnable:
            continue  # merged into the job or service node below
        hard, soft = _hard_soft(list(comp.depends_on))
        members: tuple[str, ...] = ()
        k = 1
        mode = "active-active"
        basic = True
        if comp.redundancy is not None:
            members = tuple(comp.redundancy.members)
            k = comp.redundancy.needed
            mode = comp.redundancy.mode
            basic = comp.availability is not None
        nodes.append(
            Node(
                id=comp.id,
                kind=comp.kind,
                location=comp.location,
                provider=comp.provider,
                domains={str(k): v for k, v in comp.domains.items()},
                availability=comp.availability,
                availability_source=comp.availability_source
                or ("declared" if comp.availability is not None else None),
                hard=hard,
                soft=soft,
                members=members,
                k=k,
                mode=mode,
                basic=basic,
                origin=f"components[{i}]",
                label=comp.description or comp.id,
            )
        )

    if manifest.vault is not None:
        replica_ids = []
        for j, replica in enumerate(manifest.vault.replicas):
            rid = f"vault:{j}"
            replica_ids.append(rid)
            where = parse_replica_url(replica)
            if where.scheme == "s3":
                endpoint = where.endpoint_host or "s3"
                on_host = _url_host(f"http://{endpoint}") == "localhost"
                nodes.append(
                    Node(
                        id=rid,
                        kind="storage",
                        location="on-prem" if on_host else "cloud",
                        # One S3 endpoint is one failure domain, whatever the buckets; an
                        # S3 server on this machine shares the machine's fate.
                        domains={"host": "localhost"} if on_host else {"endpoint": endpoint},
                        origin=f"vault.replicas[{j}]",
                        label=replica,
                    )
                )
            elif not where.is_local:
                scheme = where.scheme
                nodes.append(
                    Node(
                        id=rid,
                        kind="storage",
                        location="cloud",
                        provider=scheme,
                        origin=f"vault.replicas[{j}]",
                        label=replica,
                    )
                )
            else:
                nodes.append(
                    Node(
                        id=rid,
                        kind="storage",
                        location="on-prem",
                        domains={"host": "localhost"},
                        origin=f"vault.replicas[{j}]",
                        label=replica,
                    )
                )
        nodes.append(
            Node(
                id=VAULT,
                kind="storage",
                members=tuple(replica_ids),
                k=1,
                basic=False,
                origin="vault",
                label="vault (any intact replica)",
            )
        )

    clusters: dict[str, Node] = {}

    def ray_cluster(address: str, origin: str) -> str:
        """The node of the Ray cluster at ``address``: its head (the GCS) fails every
        actor on the cluster, so slots and replicas on one cluster share its fate."""
        cid = f"ray:{address}"
        if cid not in clusters:
            host = "localhost" if address == "auto" else _url_host(f"http://{address}")
            clusters[cid] = Node(
                id=cid,
                kind="compute",
                location="on-prem" if host == "localhost" else "cloud",
                domains={"host": host},
                origin=origin,
                label=f"Ray cluster {address} (its head, the GCS)",
            )
        return cid

    events_log: tuple[str, ...] = ()
    if manifest.events is not None:
        # A shared log going down loses events (SLOs, reports, playbooks) but stops no
        # request and no step: every job and service depends on it softly.
        host = _pg_host(manifest.events)
        nodes.append(
            Node(
                id=EVENTS,
                kind="storage",
                location="on-prem" if host == "localhost" else "cloud",
                domains={"host": host},
                origin="events",
                label=f"event log (PostgreSQL at {host})",
            )
        )
        events_log = (EVENTS,)

    def merged(name: str, kind: str, origin: str, hard: list[str], soft: list[str]) -> Node:
        soft = [*soft, *events_log]
        found = declared.get(name)
        if found is None:
            return Node(
                id=name,
                kind=kind,
                hard=tuple(dict.fromkeys(hard)),
                soft=tuple(dict.fromkeys(soft)),
                basic=False,
                top=True,
                origin=origin,
                label=name,
            )
        ci, comp = found
        c_hard, c_soft = _hard_soft(list(comp.depends_on))
        return Node(
            id=name,
            kind=kind,
            location=comp.location,
            provider=comp.provider,
            domains={str(k): v for k, v in comp.domains.items()},
            availability=comp.availability,
            availability_source=comp.availability_source,
            hard=tuple(dict.fromkeys([*hard, *c_hard])),
            soft=tuple(dict.fromkeys([*soft, *c_soft])),
            basic=True,
            top=True,
            origin=f"{origin} and components[{ci}]",
            label=name,
        )

    for name, job in manifest.jobs.items():
        hard_l, soft_l = (list(x) for x in _hard_soft(list(job.depends_on)))
        for input_name, ref in job.inputs.items():
            iid = f"{name}:input={input_name}"
            if manifest.vault is None:
                # Without a vault the input's source is unknown: keep it as its own event.
                nodes.append(
                    Node(
                        id=iid, kind="dataset", origin=f"jobs.{name}.inputs.{input_name}", label=ref
                    )
                )
            else:
                nodes.append(
                    Node(
                        id=iid,
                        kind="dataset",
                        hard=(VAULT,),
                        basic=False,
                        origin=f"jobs.{name}.inputs.{input_name}",
                        label=ref,
                    )
                )
            hard_l.append(iid)
        if manifest.vault is not None and not job.inputs:
            hard_l.append(VAULT)  # checkpoints and the model it makes are stored there
        if job.slots:
            slot_ids = []
            for k, slot in enumerate(job.slots):
                sid = f"{name}:slot={slot.name}"
                slot_ids.append(sid)
                on_ray = slot.backend == "ray" and slot.address is not None
                nodes.append(
                    Node(
                        id=sid,
                        kind="compute",
                        location="cloud" if on_ray else "on-prem",
                        # A Ray slot is any node of its cluster: the nodes are not named in
                        # the manifest, but the cluster's head (GCS) is one failure domain.
                        hard=(ray_cluster(slot.address, f"jobs.{name}.slots[{k}]"),)
                        if on_ray and slot.address is not None
                        else (),
                        domains={} if on_ray else {"host": "localhost"},
                        basic=not on_ray,
                        origin=f"jobs.{name}.slots",
                        label=f"worker slot {slot.name} ({slot.backend})",
                    )
                )
            group = f"{name}:slots"
            nodes.append(
                Node(
                    id=group,
                    kind="compute",
                    members=tuple(slot_ids),
                    basic=False,
                    origin=f"jobs.{name}.slots",
                    label="any worker slot",
                )
            )
            hard_l.append(group)
        nodes.append(merged(name, "job", f"jobs.{name}", hard_l, soft_l))

    for name, svc in manifest.services.items():
        hard_l, soft_l = (list(x) for x in _hard_soft(list(svc.depends_on)))
        backend_ids = []
        for j, backend in enumerate(svc.backends):
            bid = f"{name}:{backend.name}"
            backend_ids.append(bid)
            origin = f"services.{name}.backends[{j}]"
            tier = f"tier {backend.tier_index}"
            if backend.component is not None and backend.model is None:
                nodes.append(
                    Node(
                        id=bid,
                        kind=declared[backend.component][1].kind,
                        location=declared[backend.component][1].location,
                        hard=(backend.component,),
                        basic=False,
                        origin=origin,
                        label=f"{backend.name}: component {backend.component} ({tier})",
                    )
                )
            elif backend.model is not None:
                replica_ids = []
                placement = backend.placement
                cluster = (
                    ray_cluster(placement.address, f"{origin}.placement")
                    if placement is not None
                    and placement.backend == "ray"
                    and placement.address is not None
                    else None
                )
                for r in range(max(1, backend.replicas.min)):
                    rid = f"{bid}#{r}"
                    replica_ids.append(rid)
                    nodes.append(
                        Node(
                            id=rid,
                            kind="model",
                            # On Ray a replica fails alone (its node is replaced) or with
                            # the cluster's head; here, with this machine.
                            hard=(cluster,) if cluster else (),
                            domains={} if cluster else {"host": "localhost"},
                            origin=f"{origin}.replicas",
                            label=f"replica {r} of {backend.model}" + (" (Ray)" if cluster else ""),
                        )
                    )
                model_hard = (VAULT,) if manifest.vault is not None else ()
                if backend.component is not None:
                    model_hard = (*model_hard, backend.component)
                nodes.append(
                    Node(
                        id=bid,
                        kind="model",
                        hard=model_hard,
                        members=tuple(replica_ids),
                        basic=False,
                        origin=origin,
                        label=f"{backend.name}: {backend.model} ({tier})",
                    )
                )
            elif backend.provider is not None and backend.provider in declared:
                nodes.append(
                    Node(
                        id=bid,
                        kind="vendor-api",
                        location="third-party",
                        hard=(backend.provider,),
                        basic=False,
                        origin=origin,
                        label=f"{backend.name}: {backend.url} ({tier})",
                    )
                )
            else:
                nodes.append(
                    Node(
                        id=bid,
                        kind="vendor-api",
                        location="third-party",
                        provider=backend.provider,
                        domains={}
                        if backend.provider or not backend.url
                        else {"host": _url_host(backend.url)},
                        origin=origin,
                        label=f"{backend.name}: {backend.url} ({tier})",
                    )
                )
        group = f"{name}:backends"
        nodes.append(
            Node(
                id=group,
                kind="service",
                members=tuple(backend_ids),
                basic=False,
                origin=f"services.{name}.backends",
                label="any backend, any tier",
            )
        )
        hard_l.append(group)
        nodes.append(merged(name, "service", f"services.{name}", hard_l, soft_l))

    nodes.extend(clusters.values())
    if not runnable:
        nodes = _components_as_tops(nodes)
    return Graph(nodes, system=manifest.system)


def _components_as_tops(nodes: list[Node]) -> list[Node]:
    """With no jobs or services, what nothing depends on is what the system is for."""
    depended = {ref for node in nodes for ref in (*node.hard, *node.soft, *node.members)}
    return [
        replace(node, top=True)
        if node.origin.startswith("components[") and node.id not in depended
        else node
        for node in nodes
    ]
