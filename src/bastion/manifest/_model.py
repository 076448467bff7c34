"""The manifest's schema: pydantic models for every section of ``bastion.yaml``.

Owns: field names, types, defaults and per-field checks. Cross-references between
sections (depends_on, cycles, slo -> service) are checked in ``_load`` because they need
the whole document.

Every field has a description (the string under it), which ``bastion schema`` gives
editors for help on hover. Validation is strict (a quoted ``"30"`` is text, not a number),
so the JSON Schema and ``bastion check`` accept the same documents; what a schema cannot
say (references between sections) is ``_load``'s.

Must never: do I/O. Relative paths are resolved against the manifest's directory, which
the loader passes in the validation context as ``base_dir``.
"""

from __future__ import annotations

import ast
import inspect
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    PrivateAttr,
    Strict,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema

from bastion.errors import InvalidNameError, UsageError
from bastion.names import KINDS, parse_ref
from bastion.store._url import parse_replica_url

__all__ = [
    "CURRENCIES",
    "Backend",
    "Budget",
    "CheckpointPolicy",
    "Component",
    "Dependency",
    "GatewayPolicy",
    "GoldenProbe",
    "Job",
    "Manifest",
    "Pipeline",
    "PipelineStage",
    "PlaybookAction",
    "PlaybookCheck",
    "PlaybookLimits",
    "PlaybookRule",
    "Playbooks",
    "Price",
    "RecoveryTarget",
    "Redundancy",
    "Replicas",
    "RestartPolicy",
    "Retention",
    "Segment",
    "Service",
    "Slo",
    "VaultConfig",
    "WorkerSlot",
]

_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"


def _whole(value: Any) -> Any:
    # JSON Schema calls 2.0 an integer; so does check (strict mode alone would refuse it).
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


Int = Annotated[int, BeforeValidator(_whole)]
Id = Annotated[str, Field(pattern=_ID)]

ComponentKind = Literal[
    "dataset",
    "data-source",
    "feature-store",
    "model",
    "job",
    "service",
    "vendor-api",
    "compute",
    "storage",
    "network",
]
Location = Literal["cloud", "on-prem", "edge", "third-party"]


def _vault_ref(value: str) -> str:
    try:
        parse_ref(value)
    except InvalidNameError as exc:
        raise ValueError(str(exc)) from None
    return value


# The grammar of bastion.names, for editors (the validator is parse_ref itself).
_REF_PATTERN = (
    rf"^({'|'.join(KINDS)})"
    r"(/[A-Za-z0-9](?:[A-Za-z0-9_-]|\.(?!\.)){0,127})+"
    r"(@([0-9]+|[A-Za-z][A-Za-z0-9._-]{0,63}))?$"
)
VaultRef = Annotated[
    str, AfterValidator(_vault_ref), Field(json_schema_extra={"pattern": _REF_PATTERN})
]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


# Strict(False): a path is written as text, which strict mode would refuse for a Path.
RelPath = Annotated[Path, Strict(False), AfterValidator(_resolve)]


def _replica(value: str, info: ValidationInfo) -> str:
    # The store's own grammar (bastion.store.parse_replica_url, no I/O): a path resolves
    # against the manifest's directory, a URL stays as written. Whether a backend opens
    # the scheme is checked by the loader, so a manifest built in code may still name an
    # s3:// replica for the map to draw.
    try:
        parsed = parse_replica_url(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None
    if parsed.url != parsed.location:  # a URL (file:// included): as written
        return value
    return str(_resolve(Path(value), info))


ReplicaEntry = Annotated[str, AfterValidator(_replica)]


def _url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        hint = ""
        if re.match(r"^h?t?t?p?s?:?/*", value) and "://" not in value[:9]:
            hint = " (did you mean http://...?)"
        elif parts.scheme and parts.scheme not in ("http", "https"):
            hint = " (did you mean http://?)"
        raise ValueError(f"{value!r} is not a URL{hint}")
    return value.rstrip("/")


HttpUrl = Annotated[
    str,
    AfterValidator(_url),
    Field(json_schema_extra={"pattern": r"^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+"}),
]


def _events_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("postgresql", "postgres"):
        raise ValueError(
            "is not a PostgreSQL URL: use postgresql://USER@HOST:PORT/DATABASE, or leave "
            "events: out for the state directory's SQLite log"
        )
    if parts.password is not None:
        # said without the value: the password must not reach a message either
        raise ValueError(
            "holds a password: take it out of the manifest and give it to libpq in "
            "PGPASSWORD, PGPASSFILE or ~/.pgpass (postgresql://USER@HOST:PORT/DATABASE)"
        )
    if not (parts.hostname or "host=" in parts.query):
        raise ValueError("names no host: use postgresql://USER@HOST:PORT/DATABASE")
    return value


EventsUrl = Annotated[
    str,
    AfterValidator(_events_url),
    Field(json_schema_extra={"pattern": r"^postgres(ql)?://"}),
]


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8700)")
    return value


_PORT = r"0*(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3})"
Listen = Annotated[
    str, AfterValidator(_listen), Field(json_schema_extra={"pattern": f"^.+:{_PORT}$"})
]


class _Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        populate_by_name=True,
        frozen=True,
        strict=True,
        # The string under each field is its description, but pydantic's
        # use_attribute_docstrings reads each class's source and parses it at import
        # (a third of every command's start-up); ``bastion.manifest.schema`` reads the
        # module once, when a schema is asked for (``attribute_docs`` below).
    )


class Dependency(_Strict):
    """An edge to another component. ``hard``: fails with it; ``soft``: degrades only."""

    id: Id
    """The id of the component, job or service depended on."""
    type: Literal["hard", "soft"] = "hard"
    """``hard``: this fails when that fails; ``soft``: this only degrades."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        # The short form (just the id) is what most manifests write; check accepts it, so
        # the schema must too.
        full = handler.resolve_ref_schema(handler(core_schema))
        return {
            "description": "A hard dependency by id (short form), or {id, type}.",
            "anyOf": [
                {
                    "type": "string",
                    "pattern": _ID,
                    "description": "The id of a hard dependency.",
                },
                dict(full),
            ],
        }


class Redundancy(_Strict):
    """The component is up while ``k`` of ``members`` are up.

    ``active-active`` and ``standby`` mean k = 1; ``k-of-n`` needs ``k``.
    """

    mode: Literal["active-active", "standby", "k-of-n"] = "active-active"
    """How the members share the work; ``k-of-n`` needs ``k``."""
    k: Int | None = Field(default=None, ge=1)
    """How many members must be up (k-of-n only; the others need 1)."""
    members: list[Id] = Field(min_length=1)
    """The component ids that stand in for one another, each listed once."""

    @model_validator(mode="after")
    def _k(self) -> Redundancy:
        if self.mode == "k-of-n" and self.k is None:
            raise ValueError("mode k-of-n needs k (how many members must be up)")
        if self.k is not None and self.k > len(self.members):
            raise ValueError(f"k = {self.k} > n = {len(self.members)} members; no state is up")
        return self

    @property
    def needed(self) -> int:
        return self.k if self.k is not None else 1


class Component(_Strict):
    """Something the system depends on: a dataset, a vendor API, a compute pool, a disk."""

    id: Id
    """A unique id (lower-case letters, digits, '.', '_', '-'); a job's or service's name
    here describes that job or service."""
    kind: ComponentKind
    """What it is."""
    location: Location = "on-prem"
    """Where it runs."""
    provider: str | None = None
    """Who runs it (a common-cause tag: components on one provider can fail together)."""
    domains: dict[Literal["region", "zone", "site", "account"], str] = Field(default_factory=dict)
    """Failure domains (common-cause tags): region, zone, site, account."""
    availability: float | None = Field(default=None, ge=0.0, le=1.0)
    """Its availability as a fraction (0.999 for 99.9%), for the map's numbers."""
    availability_source: str | None = None
    """Where the availability figure comes from (an SLA, a measurement)."""
    depends_on: list[Dependency] = Field(default_factory=list)
    """What it needs: ids, or {id, type: soft} for what it only degrades without."""
    redundancy: Redundancy | None = None
    """Makes this a group that is up while enough of its members are."""
    description: str | None = None
    """Free text, shown as the component's label."""


class Retention(_Strict):
    """Which versions ``bastion vault gc`` keeps per name (labelled versions, and every
    snapshot a kept one names in its lineage, are always kept). A version goes only when
    every rule set here lets it go; with no rule set, no version goes."""

    keep_last: Int | None = Field(default=None, ge=1)
    """Keep the newest N versions of each name."""
    keep_within_days: float | None = Field(default=None, gt=0)
    """Keep every version made within this many days."""


class VaultConfig(_Strict):
    """The vault: replicated, content-addressed, signed storage for datasets, checkpoints
    and models."""

    replicas: list[ReplicaEntry] = Field(min_length=1)
    """Where the copies live: directories (relative to this file) or URLs such as s3://."""
    quorum: Int | None = Field(default=None, ge=1)
    """How many replicas a write must reach to succeed (default: all reachable)."""
    key: RelPath | None = None
    """The Ed25519 signing key that signs every snapshot."""
    admin_key: RelPath | None = None
    """The key that authorises deletion (gc); keep it off hosts that write."""
    retention: Retention = Field(default_factory=Retention)
    """Which versions ``bastion vault gc`` keeps."""
    server: HttpUrl | None = None
    """The URL of this vault's ``bastion vault serve``. Set, a supervised job in a segment
    checkpoints through it with a token its supervisor mints (``ckpt/<job>/``, read and
    append, at most an hour) and refreshes, instead of holding the signing key."""
    token_ttl_s: float = Field(default=3600.0, gt=0, le=3600)
    """How long a job's vault-server token lives (refreshed at half-life)."""
    mode: Literal["private", "group"] = "private"
    """Who may read the replicas and the vault's state files: private (the owner alone:
    0700 directories, 0400/0600 files) or group (the owner's group too: 2770, 0440/0660)."""

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("the same replica is listed twice; replicas must be distinct")
        return value


class CheckpointPolicy(_Strict):
    """When a training job checkpoints, and how many checkpoints it keeps."""

    every_steps: Int | None = Field(default=None, ge=1)
    """Checkpoint every N training steps."""
    every_seconds: float | None = Field(default=None, gt=0)
    """Checkpoint at least this often, in seconds."""
    max_overhead: float | None = Field(default=None, gt=0, lt=1)
    """Checkpoint as often as keeps the time spent checkpointing below this fraction."""
    keep: Int = Field(default=3, ge=1)
    """How many recent checkpoints to keep."""
    on_busy: Literal["wait", "skip"] = "skip"
    """When the previous checkpoint is still being written: wait for it, or skip this one."""


class RestartPolicy(_Strict):
    """How the supervisor restarts a failed job."""

    max: Int = Field(default=10, ge=0)
    """Restarts allowed before the job is failed."""
    backoff_s: float = Field(default=0.5, ge=0)
    """The first wait before a restart, in seconds; it doubles each time."""
    backoff_max_s: float = Field(default=30.0, ge=0)
    """The longest wait before a restart, in seconds."""
    healthy_after_s: float = Field(default=300.0, gt=0)
    """A worker that ran this long proved the earlier failures transient: the backoff and
    the restart count start over (as Kubernetes' CrashLoopBackOff resets)."""


def _check_ray_fields(backend: str, address: str | None, resources: dict[str, float]) -> None:
    """A job's slot and a backend's placement name a Ray cluster the same way."""
    if backend == "ray":
        if not address:
            raise ValueError(
                "backend ray needs address: the Ray cluster's GCS address (host:port, "
                "as `ray start --head` prints it) or auto"
            )
        if address != "auto" and not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d{1,5}", address):
            hint = " (Ray Client's ray:// is not supported: give the GCS address)"
            raise ValueError(
                f"address {address!r} is not host:port"
                f"{hint if address.startswith('ray://') else ''}; e.g. 10.0.0.5:6379"
            )
    elif address is not None or resources:
        raise ValueError(
            "address and resources are for backend ray; remove them or set backend: ray"
        )


class WorkerSlot(_Strict):
    """One place a job's worker can run."""

    name: Id
    """A name unique within the job."""
    scratch: RelPath | None = None
    """A scratch directory for the worker."""
    backend: Literal["local", "ray"] = "local"
    """Run the worker here, or on a node of a Ray cluster (``bastion[ray]``)."""
    address: str | None = None
    """backend ray: the cluster's GCS address (``host:port``, as ``ray start --head``
    prints it), or ``auto`` for the cluster this machine is part of."""
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """backend ray: what the worker needs of a node, in Ray's resource names (``CPU``,
    ``GPU``, ``memory`` in bytes, or a custom resource such as ``trainer``); only nodes
    that have it all are used. Default: ``{CPU: 1}``."""

    @model_validator(mode="after")
    def _backend_fields(self) -> WorkerSlot:
        _check_ray_fields(self.backend, self.address, self.resources)
        return self


class Segment(_Strict):
    """One part of the system that can be quarantined alone (``bastion segment``): its
    vault namespace, its protected directories, and (by their ``segment:``) its jobs,
    services and backends."""

    prefixes: list[str] = Field(default_factory=list)
    """Vault name prefixes it owns (its namespace; tokens for it name prefixes under
    these). Empty: ``<kind>/<segment>/`` for every artifact kind, and ``ckpt/<job>/``
    for each of its jobs."""
    protect: list[RelPath] = Field(default_factory=list)
    """Directories frozen (read-only, as the vault guard freezes) while it is
    quarantined."""
    description: str | None = None
    """Free text."""


class Job(_Strict):
    """A supervised training job: restarted on failure, resumed from verified checkpoints."""

    segment: str | None = None
    """The segment (one of ``segments``) it belongs to."""
    command: list[str] = Field(min_length=1)
    """The program and its arguments, run without a shell."""
    workdir: RelPath = Field(default=Path(), validate_default=True)
    """The directory the command runs in (relative to this file)."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for the command."""
    inputs: dict[str, VaultRef] = Field(default_factory=dict)
    """Vault artifacts the job reads, by a name of its choosing (e.g. data:
    dataset/digits@latest)."""
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    """When to checkpoint and how many checkpoints to keep."""
    restart: RestartPolicy = RestartPolicy()
    """How to restart the job when it fails."""
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    """Seconds without a heartbeat after which the job counts as hung and is restarted."""
    grace_s: float = Field(default=10.0, ge=0)
    """Seconds between asking the job to stop (SIGTERM) and killing it."""
    slots: list[WorkerSlot] = Field(default_factory=list)
    """Where its workers can run; the job needs at least one."""
    depends_on: list[Dependency] = Field(default_factory=list)
    """Components the job needs (besides the vault for its inputs)."""
    warm_standby: bool = True
    """Keep one interpreter with the imports done waiting, so a restart skips them."""
    startup_timeout_s: float = Field(default=120.0, gt=0)
    """Until its first heartbeat, a new process gets this many seconds instead of
    heartbeat_timeout_s."""


class Replicas(_Strict):
    """How many replica processes serve a local backend."""

    min: Int = Field(default=1, ge=0)
    """Replicas always kept running."""
    max: Int = Field(default=1, ge=1)
    """Replicas the autoscaler may run at most."""

    @model_validator(mode="after")
    def _order(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min = {self.min} > max = {self.max}")
        return self


class Placement(_Strict):
    """Where a local backend's replica processes run: here, or on the nodes of a Ray
    cluster (``bastion[ray]``); the same fields as a job's ``slots``."""

    backend: Literal["local", "ray"] = "local"
    """Run the replicas here, or each in a Ray actor on a node of a Ray cluster, spread
    over the nodes (Ray's SPREAD); a replica whose node is lost is started on another."""
    address: str | None = None
    """backend ray: the cluster's GCS address (``host:port``, as ``ray start --head``
    prints it), or ``auto`` for the cluster this machine is part of."""
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """backend ray: what one replica needs of a node, in Ray's resource names (``CPU``,
    ``GPU``, ``memory`` in bytes, or a custom resource such as ``server``); only nodes
    that have it all are used. Default: ``{CPU: 1}``."""

    @model_validator(mode="after")
    def _backend_fields(self) -> Placement:
        _check_ray_fields(self.backend, self.address, self.resources)
        return self


CURRENCIES = frozenset({
    "USD", "EUR", "GBP", "JPY", "CHF", "CAD", "AUD", "NZD", "CNY", "INR", "SEK",
    "NOK", "DKK", "PLN", "CZK", "BRL", "MXN", "KRW", "SGD", "HKD", "ZAR",
})  # fmt: skip
"""The currencies a price or budget may be in (ISO 4217 codes); Bastion converts none
into another, so a service's prices and budgets must share one."""


def _currency(value: str) -> str:
    if value not in CURRENCIES:
        hint = f" (did you mean {value.upper()}?)" if value.upper() in CURRENCIES else ""
        raise ValueError(
            f"{value!r} is not a currency Bastion knows{hint}; use an ISO 4217 code: "
            f"{', '.join(sorted(CURRENCIES))}"
        )
    return value


Currency = Annotated[
    str, AfterValidator(_currency), Field(json_schema_extra={"enum": sorted(CURRENCIES)})
]


class Price(_Strict):
    """What one call to a backend costs: per 1k input and output tokens (counted from the
    answer's ``usage``, estimated when it has none), per request, or both."""

    currency: Currency = "USD"
    """The currency of every amount here (an ISO 4217 code)."""
    input_per_1k: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """The price of 1000 input (prompt) tokens."""
    output_per_1k: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """The price of 1000 output (completion) tokens."""
    per_request: float = Field(default=0.0, ge=0, allow_inf_nan=False)
    """The price of one answered request, whatever its tokens."""


_WINDOW = re.compile(r"(\d+(?:\.\d+)?)(s|m|h|d|w)")
_WINDOW_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def window_seconds(value: str) -> float:
    """A budget window (``30m``, ``1h``, ``1d``, ``7d``, ``1w``) in seconds; a ValueError
    for anything else, or a window of 0."""
    match = _WINDOW.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a window (use a number and s, m, h, d or w: 1d)")
    seconds = float(match.group(1)) * _WINDOW_S[match.group(2)]
    if seconds <= 0:
        raise ValueError(f"window {value!r} is empty; give a window longer than 0 (e.g. 1d)")
    return seconds


class Budget(_Strict):
    """A spending limit over a sliding window, enforced before each attempt is sent (every
    attempt in flight holds a reservation against it)."""

    scope: Literal["service", "key", "vendor"] = "service"
    """What it limits: the whole service, each client API key on its own (needs
    ``auth``), or one vendor (``vendor``)."""
    vendor: str | None = None
    """With scope vendor: a backend's ``provider``, or a backend's name when it has none."""
    window: str = "1d"
    """The sliding window spend is summed over (``1h``, ``1d``, ``30d``)."""
    soft: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    """At this spend: an event, and hedging turns off for the requests it covers."""
    hard: float = Field(gt=0, allow_inf_nan=False)
    """Never spent past: an attempt that could take the spend over it is not sent; the
    request goes to a cheaper tier, or is shed with 429."""
    currency: Currency = "USD"
    """The currency of ``soft`` and ``hard``: the same as the prices it covers."""
    reserve_output_tokens: Int = Field(default=1024, ge=1)
    """Output tokens reserved for a request that does not cap them (``max_tokens``):
    the reservation is what makes the limit hold while answers are in flight."""

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        window_seconds(value)
        return value

    @model_validator(mode="after")
    def _limits(self) -> Budget:
        if self.soft is not None and self.soft > self.hard:
            raise ValueError(f"soft = {self.soft:g} > hard = {self.hard:g}; soft comes first")
        if (self.scope == "vendor") != (self.vendor is not None):
            raise ValueError(
                "scope vendor needs vendor (a backend's provider or name)"
                if self.scope == "vendor"
                else f"vendor is only for scope vendor (this budget's scope is {self.scope})"
            )
        return self

    @property
    def window_s(self) -> float:
        return window_seconds(self.window)


class Backend(_Strict):
    """One backend: a local replica set serving a vault model, or a remote URL."""

    name: Id
    """A name unique within the service."""
    model: VaultRef | None = None
    """A vault model to serve locally (e.g. model/digits@prod); or give url."""
    url: HttpUrl | None = None
    """A remote OpenAI-compatible endpoint (http:// or https://); or give model."""
    model_name: str | None = None
    """The model name to send to the remote endpoint."""
    tier: Literal["primary", "fallback"] | Int = "primary"
    """primary (0), fallback (1) or a number: lower tiers are tried first."""
    provider: str | None = None
    """Who runs it: a component id (then the backend depends on it), or a common-cause tag."""
    component: Id | None = None
    """The component (under ``components``) this backend is, e.g. the vendor API it calls:
    the map then takes its availability and failure domains from there, and a use of the
    backend counts as a use of that component."""
    replicas: Replicas = Replicas()
    """How many local replica processes to run."""
    placement: Placement = Placement()
    """Where its replica processes run: here (default) or on Ray nodes."""
    command: list[str] | None = None
    """A custom replica command, instead of Bastion's own."""
    api_key_env: str | None = None
    """The environment variable that holds the remote endpoint's API key."""
    price: Price | None = None
    """What a call to it costs; unset, it is free (a local replica)."""
    segment: str | None = None
    """The segment (one of ``segments``) it belongs to; unset, its service's. A
    quarantined segment's backends are taken out of every gateway."""

    @model_validator(mode="after")
    def _one_target(self) -> Backend:
        if (self.model is None) == (self.url is None):
            raise ValueError("a backend needs exactly one of model (a vault ref) or url")
        if self.url is not None and self.placement.backend != "local":
            raise ValueError("placement is for a backend with model (local replicas), not url")
        return self

    @property
    def tier_index(self) -> int:
        if isinstance(self.tier, int):
            return self.tier
        return 0 if self.tier == "primary" else 1


_HEDGE = re.compile(r"off|p(50|90|95|99)|(\d+(?:\.\d+)?)ms")


def _hedge_rule(value: str) -> tuple[float | None, float | None]:
    """The hedge grammar, parsed in this one place: ``off`` -> (None, None), ``p95`` ->
    (0.95, None) (hedge after the 95th percentile of recent latencies), ``50ms`` -> (None,
    0.05) (hedge after a fixed delay)."""
    match = _HEDGE.fullmatch(value)
    if match is None:
        raise ValueError(f"{value!r} is not a hedge policy (use off, p95, p99 or e.g. 50ms)")
    if match.group(1) is not None:
        return int(match.group(1)) / 100.0, None
    if match.group(2) is not None:
        return None, float(match.group(2)) / 1000.0
    return None, None


class GatewayPolicy(_Strict):
    """How the gateway treats a request: deadlines, retries, hedging, queueing."""

    timeout_ms: float = Field(default=1000, gt=0)
    """A request's deadline, in milliseconds: every attempt, retry and fallback of one
    request fits in it (a client's x-bastion-deadline-ms may shorten it)."""
    attempt_timeout_ms: float | None = Field(default=None, gt=0)
    """How long one attempt of a whole answer may take, in milliseconds, within the
    deadline; unset, an even share of the time left over the attempts that could still
    be made, so a request whose primaries all hang still reaches the fallback tier. Set
    it for a backend slower than that share."""
    ttft_timeout_ms: float | None = Field(default=None, gt=0)
    """How long a stream may take to its first token, in milliseconds; unset, 4 x the p99
    of observed time to first token, at least 250 ms and at most a quarter of timeout_ms."""
    stall_timeout_ms: float | None = Field(default=None, gt=0)
    """How long a stream may pause between tokens, in milliseconds."""
    retry_budget: float = Field(default=0.2, ge=0, le=1)
    """Retries allowed, as a fraction of requests (so retries cannot multiply load)."""
    max_attempts: int = Field(default=3, ge=1, le=10)
    """Attempts one request may make in all, hedges included (the first counts)."""
    hedge: str = "off"
    """When to send a second attempt to another backend: off, p95, p99 or a delay (50ms)."""
    max_queue: Int = Field(default=256, ge=0)
    """Requests that may wait for a free backend."""
    queue_timeout_ms: float = Field(default=500, ge=0)
    """How long a request may wait in the queue, in milliseconds."""
    max_ejected: float = Field(default=0.5, gt=0, le=1)
    """The largest fraction of backends outlier detection may eject at once."""
    prefer_cheaper: float = Field(default=0.0, ge=0, le=1)
    """Cost-aware routing: within a tier, prefer the cheaper backend (by its price) while
    its latency score is at most this fraction worse than a dearer one's (0.2: 20 %); 0
    routes on latency alone. The trade-off is in docs/cost.md."""
    header_timeout_ms: float = Field(default=10000, gt=0)
    """How long a client connection may take to send a request's line and headers, in
    milliseconds, before the gateway closes it (a slow-headers, slowloris, defence)."""

    @field_validator("hedge")
    @classmethod
    def _hedge(cls, value: str) -> str:
        _hedge_rule(value)
        return value

    @property
    def hedge_rule(self) -> tuple[float | None, float | None]:
        """``hedge`` as (latency quantile, fixed delay in seconds); at most one is set."""
        return _hedge_rule(self.hedge)


class ServiceAuth(_Strict):
    """Client API keys a service's gateway requires (as LiteLLM's virtual keys)."""

    keys_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """The environment variable that holds the accepted keys, comma-separated; a client
    sends one as ``Authorization: Bearer <key>``. ``bastion serve`` refuses to start when
    it is unset or empty."""


class GoldenProbe(_Strict):
    """Golden probes: known inputs with known answers, sent to every backend on a schedule;
    a backend that answers 200 but wrongly is ejected until its answers are right again."""

    ref: VaultRef
    """A dataset snapshot of golden examples (e.g. dataset/digits-golden@latest): input
    columns and a label column of expected answers; it must not be empty."""
    every_s: float = Field(default=5.0, gt=0)
    """Seconds between golden rounds for each backend."""
    tolerance: float = Field(default=0.0, ge=0, lt=1)
    """The fraction of examples a backend may answer differently and still pass."""
    label: str = "label"
    """The column holding the expected answers."""
    timeout_ms: float = Field(default=2000, gt=0)
    """How long one round's answer may take; no answer decides nothing (the health
    probe ejects a backend that does not answer)."""
    backends: list[str] | None = None
    """The backends (names under backends) to probe; default: every local model backend
    (replicas answer POST /v1/predict; name a remote one only if it does too)."""


class RolloutPolicy(_Strict):
    """How ``bastion rollout start`` moves a model candidate into service: the strategy,
    the traffic steps and how the candidate is judged against a baseline that gets the
    same share of traffic at the same time (docs/rollout.md)."""

    strategy: Literal["canary", "shadow", "blue-green"] = "canary"
    """canary: the candidate takes a share of live traffic, step by step; shadow: it gets
    a mirrored copy of that share and its answers are discarded; blue-green: it is
    checked on mirrored traffic, then takes all traffic at once, the old set kept warm
    for an instant switch back until the last check."""
    steps: list[float] = Field(default_factory=lambda: [5.0, 25.0, 50.0, 100.0], min_length=1)
    """Percentages of traffic for the candidate, rising, ending at 100 (promotion)."""
    interval_s: float = Field(default=10.0, gt=0, le=86400)
    """Seconds between analyses: a failing one rolls the candidate back at once."""
    looks_per_step: Int = Field(default=1, ge=1, le=100)
    """Analyses per step: a step lasts looks_per_step x interval_s unless a clear win
    advances it early."""
    min_samples: Int = Field(default=50, ge=10)
    """Requests per arm (candidate and baseline) before a step may advance; fewer is
    insufficient evidence: the step holds and extends, and never promotes."""
    max_extensions: Int = Field(default=10, ge=0)
    """Intervals a step may be extended for insufficient evidence before the rollout
    is aborted (never promoted)."""
    alpha: float = Field(default=0.01, gt=0, lt=0.5)
    """The chance of rolling back a candidate as good as the stable model, over a whole
    rollout."""
    latency_tolerance: float = Field(default=0.10, ge=0)
    """A slowdown of the candidate's median latency accepted, as a fraction (0.1: 10%)."""
    tail_tolerance: float = Field(default=0.25, ge=0)
    """A growth of the candidate's p99 latency accepted, as a fraction."""
    spread_tolerance: float = Field(default=0.25, ge=0)
    """A growth of the spread of the candidate's latencies (their mean distance from the
    median, in log time) accepted, as a fraction."""
    latency_allowance_ms: float = Field(default=2.0, ge=0, le=60000)
    """A slowdown always accepted, in milliseconds, on top of the relative tolerances (10%
    of a 1 ms model is less than two processes of it differ by on a busy host)."""
    error_margin: float = Field(default=0.01, ge=0, lt=1)
    """An increase of the error rate accepted, absolute (0.01: one point)."""
    sticky_header: str = Field(default="x-bastion-user", pattern=r"^[A-Za-z0-9-]{1,64}$")
    """The request header that keeps one user on one model (else the client address)."""
    startup_timeout_s: float = Field(default=60.0, gt=0)
    """How long the candidate's replicas may take to answer their health probe."""
    warmup_s: float = Field(default=2.0, ge=0)
    """Seconds at the start of the first step whose measurements are discarded: fresh
    replicas answer their first requests slower (at most half an interval)."""

    @field_validator("steps")
    @classmethod
    def _steps(cls, steps: list[float]) -> list[float]:
        for i, step in enumerate(steps):
            if not 0 < step <= 100:
                raise ValueError(f"steps[{i}] is {step:g}; each step is a percentage in (0, 100]")
            if i and step <= steps[i - 1]:
                raise ValueError(f"steps must rise: steps[{i}] is {step:g} after {steps[i - 1]:g}")
        if steps[-1] != 100:
            raise ValueError(
                f"steps must end at 100 (promotion); they end at {steps[-1]:g} "
                f"(e.g. [{', '.join(f'{s:g}' for s in steps)}, 100])"
            )
        return steps


class Service(_Strict):
    """An OpenAI-compatible gateway in front of local replicas and remote backends."""

    segment: str | None = None
    """The segment (one of ``segments``) it belongs to."""
    listen: Listen = "127.0.0.1:8700"
    """host:port the gateway listens on."""
    gateways: list[Listen] = Field(default_factory=list)
    """Every gateway of the service, active-active behind an L4 load balancer, ``listen``
    among them (each runs as ``bastion serve SERVICE --listen ADDRESS``; each enforces
    its even share of every budget). Unset: one gateway, at ``listen``."""
    golden: GoldenProbe | None = None
    """Golden probes: answers checked against known ones; wrong answerers ejected."""
    backends: list[Backend] = Field(min_length=1)
    """Where requests go, tried by tier."""
    policy: GatewayPolicy = GatewayPolicy()
    """Deadlines, retries, hedging and queueing."""
    auth: ServiceAuth | None = None
    """Client API keys: unset, the gateway answers anyone who can reach ``listen``; set,
    every route but ``/healthz`` and ``/metrics`` needs a key (401 without one)."""
    rollout: RolloutPolicy = RolloutPolicy()
    """How a new model version is rolled out (``bastion rollout start``)."""
    depends_on: list[Dependency] = Field(default_factory=list)
    """Components the service needs besides its backends."""
    budgets: list[Budget] = Field(default_factory=list)
    """Spending limits, each over its window (docs/cost.md). Their currency must be the
    prices' (one per service), a vendor must be a backend's provider or name, and scope
    key needs auth (the loader checks these, where they are written)."""

    @model_validator(mode="after")
    def _gateways(self) -> Service:
        if not self.gateways:
            return self
        twice = sorted({g for g in self.gateways if self.gateways.count(g) > 1})
        if twice:
            raise ValueError(f"gateways lists {', '.join(twice)} more than once")
        if self.listen not in self.gateways:
            raise ValueError(
                f"gateways must include listen ({self.listen}), the first gateway; add it, "
                f"e.g. gateways: [{self.listen}, {', '.join(self.gateways)}]"
            )
        return self

    @property
    def gateway_addresses(self) -> list[str]:
        """Where the service's gateways listen: ``gateways``, or ``[listen]``."""
        return list(self.gateways) or [self.listen]

    @model_validator(mode="after")
    def _golden_backends(self) -> Service:
        named = {b.name for b in self.backends}
        unknown = [n for n in (self.golden.backends or []) if n not in named] if self.golden else []
        if unknown:
            raise ValueError(
                f"golden.backends names {', '.join(map(repr, unknown))}, not a backend of this "
                f"service (its backends: {', '.join(sorted(named))})"
            )
        return self


# A rolling window in whole days or hours (28d, 30d, 7d, 12h), or the calendar month (UTC).
SLO_WINDOW = r"^(?:[1-9][0-9]{0,3}[dh]|month)$"


class SloAlerting(_Strict):
    """When an SLO's burn alerts (``slo.burn.page``, ``slo.burn.ticket``) and its no-data
    alert (``slo.nodata``) fire: the SRE workbook's multi-window, multi-burn-rate pairs
    (docs/slo.md)."""

    page: bool = True
    """Page on a fast burn: 14.4x over 1 h (and 5 m), or 6x over 6 h (and 30 m)."""
    ticket: bool = True
    """Open a ticket on a slow burn: 1x over 3 d (and 6 h)."""
    min_bad_events: Int = Field(default=10, ge=0)
    """A burn alert needs at least this many bad events (or bad time slices) in its long
    window, so a handful of failures at low traffic does not page anyone."""
    nodata_s: float | None = Field(default=600, gt=0)
    """Raise slo.nodata when the SLI has recorded nothing for this many seconds (null:
    never), so an SLI that went quiet is not read as 100% good."""


class Slo(_Strict):
    """A service level objective: the availability or latency a service promises."""

    id: Id
    """A unique id."""
    service: str
    """The service it is about (a name under ``services``)."""
    objective: float | None = Field(default=None, gt=0, lt=1)
    """The availability promised, as a fraction (0.999): the share of requests not
    answered 5xx or 429."""
    p99_ms: float | None = Field(default=None, gt=0)
    """The 99th-percentile latency promised, in milliseconds: 99% of requests answered
    within it."""
    window: str = Field(default="30d", pattern=SLO_WINDOW)
    """The window the objective is measured over: rolling days or hours (28d, 30d, 7d,
    12h), or month (the calendar month, UTC)."""
    budgeting: Literal["occurrences", "timeslices"] = "occurrences"
    """How the error budget is counted: occurrences (bad requests over all requests) or
    timeslices (bad time slices over all slices with traffic)."""
    timeslice: Literal["1m", "2m", "5m", "10m", "15m", "30m", "60m"] = "1m"
    """With timeslices: the length of one slice."""
    timeslice_target: float | None = Field(default=None, gt=0, le=1)
    """With timeslices: the share of good requests that makes a slice good (default: the
    objective itself)."""
    alerting: SloAlerting = Field(default_factory=SloAlerting)
    """Its burn-rate and no-data alerts."""

    @model_validator(mode="after")
    def _something(self) -> Slo:
        if self.objective is None and self.p99_ms is None:
            raise ValueError("an SLO needs objective (availability) or p99_ms (latency)")
        return self


class RecoveryTarget(_Strict):
    """Recovery targets for one kind of loss; drills measure against them."""

    rto_s: float = Field(gt=0)
    """Recovery time objective: seconds until service is back."""
    rpo_s: float = Field(ge=0)
    """Recovery point objective: seconds of work that may be lost."""


# -- pipelines (helper "pipeline") --------------------------------------------------------

StageUses = Literal["command", "validate-data", "evaluate", "gate", "promote"]


class PipelineStage(_Strict):
    """One stage of a pipeline: a command (``command``) or a built-in (``uses``), whose
    inputs and output are vault refs. Stages depend on each other only through refs: a
    stage that reads another's output runs after it."""

    uses: StageUses = "command"
    """What the stage runs: ``command`` (the default: ``command`` below), or a built-in
    gate: ``validate-data``, ``evaluate``, ``gate`` (the model gate), ``promote``."""
    command: list[str] | None = None
    """For ``uses: command``: the program and its arguments, run without a shell, in a
    private work directory (``$BASTION_STAGE_INPUTS/<name>/`` holds each verified input,
    ``$BASTION_STAGE_OUTPUT`` is where it writes its one output)."""
    workdir: RelPath = Field(default=Path(), validate_default=True)
    """The directory the command's relative paths (its code) resolve against."""
    inputs: dict[str, VaultRef] = Field(default_factory=dict)
    """The snapshots the stage reads, by a name of its choosing (e.g. data:
    dataset/digits@latest). A ref another stage outputs means that stage's snapshot."""
    optional: list[str] = Field(default_factory=list)
    """Input names that may be missing from the vault (e.g. the gate's baseline
    model/x@prod before the first promotion)."""
    output: VaultRef | None = None
    """The one snapshot the stage publishes (a name, no @version). Built-ins that record
    a verdict default to ``verdict/<subject>``; ``promote`` outputs ``<model>@prod``."""
    config: dict[str, Any] = Field(default_factory=dict)
    """Settings for the built-in (thresholds, alpha, label...), or for the command as
    ``$BASTION_STAGE_CONFIG`` (a JSON file); part of the cache key."""
    code: list[RelPath] = Field(default_factory=list)
    """Files or directories whose bytes are the stage's code (default: every argument of
    the command that names a file); part of the cache key."""
    env: dict[str, str] = Field(default_factory=dict)
    """Extra environment variables for the command; part of the cache key."""
    lock: RelPath | None = None
    """A lock file describing the stage's environment (default: the interpreter and
    every installed distribution with its version)."""
    cache: bool = True
    """Skip the stage when a verified output already exists for the same cache key."""
    retries: Int = Field(default=2, ge=0)
    """Restarts allowed after a failure (with jittered exponential backoff)."""
    backoff_s: float = Field(default=0.2, ge=0)
    """The first wait before a retry, in seconds; it doubles each time."""
    timeout_s: float | None = Field(default=None, gt=0)
    """Seconds the stage may run before it is stopped and counted as failed."""

    @model_validator(mode="after")
    def _shape(self) -> PipelineStage:
        if self.uses == "command" and not self.command:
            raise ValueError("a command stage needs command (the program and its arguments)")
        if self.uses != "command" and self.command is not None:
            raise ValueError(f"a {self.uses} stage is a built-in; drop command (or uses)")
        if self.uses == "command" and self.output is None:
            raise ValueError("a command stage needs output (the one snapshot it publishes)")
        for name in self.optional:
            if name not in self.inputs:
                raise ValueError(f"optional names {name!r}, which is not one of inputs")
        return self


class Pipeline(_Strict):
    """Named stages that exchange only verified vault snapshots; the order is derived
    from which stage reads which one's output."""

    stages: dict[Id, PipelineStage] = Field(min_length=1)
    """The stages, by name."""
    sources: list[VaultRef] = Field(default_factory=list)
    """Refs the pipeline reads from outside (a raw dataset, model/x@prod): every input
    is either another stage's output or one of these."""
    description: str | None = None
    """Free text."""


class ScrubSchedule(_Strict):
    """A scheduled, budgeted ``bastion vault scrub`` that ``bastion up`` runs."""

    every_s: float = Field(default=3600.0, ge=10.0)
    """Seconds between the starts of two scrubs."""
    max_seconds: float = Field(default=60.0, gt=0.0)
    """Each scrub's budget; the next one resumes where it stopped."""
    first_after_s: float = Field(default=60.0, ge=0.0)
    """Seconds after ``bastion up`` starts before the first scrub (start-up comes first)."""


class Control(_Strict):
    """What ``bastion up`` runs beside the services, and where its API listens."""

    listen: Listen = "127.0.0.1:8790"
    """host:port of the control API (and, later, the dashboard). Loopback by default:
    reads need no token, so only expose it on a network you trust."""
    guard: bool = True
    """Run ``bastion vault guard`` over the protected directories (if there are any)."""
    scrub: ScrubSchedule | None = ScrubSchedule()
    """The scheduled scrub; ``null`` for none."""


# -- playbooks (helper "playbooks") ------------------------------------------------------

PlaybookDo = Literal[
    "restore", "rollback", "promote", "quarantine", "failover", "scale", "restart", "run", "notify"
]
# The parameters each action takes (the first ones required); bastion.playbooks owns what
# they mean, docs/playbooks.md lists them.
PLAYBOOK_PARAMS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "restore": (("snapshot", "into"), ()),
    "rollback": (("model",), ()),
    "promote": (("model",), ()),
    "quarantine": (("segment",), ()),
    "failover": (("service", "tier"), ()),
    "scale": (("service", "backend", "replicas"), ()),
    "restart": (("job",), ("slot", "timeout_s")),
    "run": (("command",), ("timeout_s",)),
    "notify": (("url", "hmac_key_env"), ("timeout_s",)),
}


class PlaybookCheck(_Strict):
    """What decides that an action worked: the steady state after it. Exactly one of
    ``command``, ``http`` or ``slo``; it is tried every ``every_s`` until it passes or
    ``within_s`` has gone by."""

    command: list[str] | None = Field(default=None, min_length=1)
    """A program (no shell) that exits 0 when the steady state holds."""
    http: HttpUrl | None = None
    """A URL that answers a GET with 2xx when the steady state holds."""
    slo: str | None = None
    """An SLO id (under ``slos``): holds while none of its burn alerts is open."""
    within_s: float = Field(default=10.0, gt=0, le=3600)
    """How long the steady state may take to come back."""
    every_s: float = Field(default=0.5, gt=0, le=60)
    """Seconds between tries."""

    @model_validator(mode="after")
    def _one(self) -> PlaybookCheck:
        given = [n for n in ("command", "http", "slo") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError(
                "a check needs exactly one of command, http or slo"
                + (f" (it has {', '.join(given)})" if given else "")
            )
        return self


class PlaybookAction(_Strict):
    """One step of a playbook: what to do (``do``) and its parameters, which may name
    the trigger event's fields as ``{subject}``, ``{segment}``, ``{kind}``, ``{id}``,
    ``{day}``, ``{hour}`` or ``{data.<key>}``."""

    do: PlaybookDo
    """restore a snapshot, rollback or promote a model, quarantine a segment, failover a
    service to a tier, scale a replica set, restart a job on another slot, run a
    command, notify a webhook."""
    approve: bool = False
    """Wait for ``bastion playbook approve ID`` before acting; denied when the approval
    timeout passes."""
    approve_timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """How long to wait for the approval (default: ``playbooks.limits.approval_timeout_s``)."""
    check: PlaybookCheck | None = None
    """What decides the action worked (default: the rule's check, else the action's
    own result)."""
    snapshot: str | None = None
    """restore: the vault ref to restore (e.g. dataset/digits@latest)."""
    into: str | None = None
    """restore: the directory to restore it into (relative to this file)."""
    model: str | None = None
    """rollback: the model (model/digits); promote: the snapshot (model/digits@3)."""
    segment: str | None = None
    """quarantine: the segment (e.g. {segment}, the trigger's)."""
    service: str | None = None
    """failover, scale: the service."""
    tier: str | None = None
    """failover: the tier to send traffic to (primary, fallback or a number)."""
    backend: str | None = None
    """scale: the local backend whose replica set to scale."""
    replicas: Int | None = Field(default=None, ge=0, le=1024)
    """scale: the replicas to keep running at least."""
    job: str | None = None
    """restart: the training job."""
    slot: str | None = None
    """restart: the worker slot to move it to (default: any other healthy slot)."""
    command: list[str] | None = Field(default=None, min_length=1)
    """run: the program and its arguments, run without a shell under bastion.supervise."""
    timeout_s: float | None = Field(default=None, gt=0, le=86400)
    """run, notify, restart: how long it may take (default 60 s for run, 10 s for notify,
    120 s for restart: until the worker has started again)."""
    url: HttpUrl | None = None
    """notify: the webhook URL, sent an HTTP POST signed with HMAC-SHA256."""
    hmac_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    """notify: the environment variable holding the HMAC key."""

    @model_validator(mode="after")
    def _params(self) -> PlaybookAction:
        required, optional = PLAYBOOK_PARAMS[self.do]
        every = {p for params in PLAYBOOK_PARAMS.values() for ps in params for p in ps}
        missing = [p for p in required if getattr(self, p) is None]
        foreign = [
            p
            for p in sorted(every)
            if getattr(self, p) is not None and p not in required + optional
        ]
        if missing:
            raise ValueError(f"do: {self.do} needs {', '.join(missing)}")
        if foreign:
            takes = ", ".join(required + optional)
            raise ValueError(
                f"{', '.join(foreign)} {'is' if len(foreign) == 1 else 'are'} not a parameter "
                f"of do: {self.do} (it takes {takes})"
            )
        return self


class PlaybookRule(_Strict):
    """Event -> condition -> actions: when an event of kind ``on`` whose fields meet
    ``when`` is appended to the log, run ``actions`` once per incident."""

    on: str
    """The event kind that triggers it (e.g. vault.guard.ransomware), or a glob over
    kinds (slo.burn.*)."""
    when: dict[str, Any] = Field(default_factory=dict)
    """Conditions on the event, all of which must hold: ``subject``, ``segment`` or
    ``data.<key>`` mapped to a value, a list of values, or one operator (eq, ne, gt, ge,
    lt, le, in, contains, matches, exists)."""
    incident: str = "{id}"
    """What makes two triggers the same incident (acted on once): a template over the
    event, e.g. {subject}/{day}. Default: each event is its own incident."""
    strategy: Literal["sequence", "alternatives"] = "sequence"
    """sequence: every action in order; alternatives: stop at the first that works
    (roll back, or else fail over)."""
    check: PlaybookCheck | None = None
    """The steady-state check after each action that has none of its own."""
    max_failures: Int = Field(default=3, ge=1, le=100)
    """After this many failed actions the playbook escalates (playbook.escalated) and
    stops."""
    actions: list[PlaybookAction] = Field(min_length=1, max_length=64)
    """The steps, in order."""
    description: str | None = None
    """Free text."""


class PlaybookLimits(_Strict):
    """Safeguards over every playbook: a token bucket per target, a blast-radius cap and
    how long an approval may wait."""

    rate_burst: Int = Field(default=3, ge=1, le=10000)
    """Actions one target (a service, a segment, a job, a webhook's host) may take at once."""
    rate_per_minute: float = Field(default=1.0, gt=0, le=100000)
    """How fast a target's bucket refills, in actions per minute."""
    blast_radius: Int = Field(default=10, ge=1, le=100000)
    """Distinct targets all playbooks together may act on within ``blast_window_s``; past
    it every action is refused and the playbook escalates."""
    blast_window_s: float = Field(default=3600.0, gt=0)
    """The window of the blast-radius cap, in seconds."""
    approval_timeout_s: float = Field(default=900.0, gt=0, le=86400)
    """How long an ``approve: true`` action waits before it is denied."""


class Playbooks(_Strict):
    """Coordinated response: rules from events to actions, and the limits over them
    (docs/playbooks.md)."""

    limits: PlaybookLimits = Field(default_factory=PlaybookLimits)
    """Rate limit, blast radius and approval timeout."""
    rules: dict[Id, PlaybookRule] = Field(default_factory=dict)
    """The playbooks, by name."""


class Manifest(_Strict):
    """A whole ``bastion.yaml``."""

    version: Literal[1]
    """The manifest format version: 1."""
    system: Id
    """The system's name."""
    state_dir: RelPath = Field(default=Path(".bastion"), validate_default=True)
    """Where events, keys and local state live (relative to this file)."""
    events: EventsUrl | None = None
    """Where the event log and the SLI rows live: absent for the state directory's SQLite
    file (one machine), or ``postgresql://USER@HOST:PORT/DATABASE`` for a PostgreSQL
    database several hosts share (docs/event-log.md). Never a password here: libpq reads
    it from PGPASSWORD, PGPASSFILE or ~/.pgpass."""
    vault: VaultConfig | None = None
    """The vault's replicas, keys and retention."""
    segments: list[Id] | dict[Id, Segment] = Field(default_factory=dict)
    """Parts of the system (prod, staging) that jobs, services and backends belong to,
    each quarantined alone: a list of names, or names mapped to their settings (read
    them with ``segment_spec``)."""

    @field_validator("segments")
    @classmethod
    def _segment_list(cls, value: list[str] | dict[str, Segment]) -> dict[str, Segment]:
        if isinstance(value, list):
            if len(set(value)) != len(value):
                raise ValueError("a segment is named twice")
            return {name: Segment() for name in value}
        return value

    components: list[Component] = Field(default_factory=list)
    """What the system depends on, for the dependency map."""
    jobs: dict[Id, Job] = Field(default_factory=dict)
    """Supervised training jobs, by name."""
    services: dict[Id, Service] = Field(default_factory=dict)
    """Inference gateways, by name."""
    slos: list[Slo] = Field(default_factory=list)
    """Service level objectives."""
    pipelines: dict[Id, Pipeline] = Field(default_factory=dict)
    """Pipelines of stages (ingest, validate, train, gate, promote), by name."""
    playbooks: Playbooks = Field(default_factory=Playbooks)
    """Response playbooks: event -> condition -> actions, exactly once (docs/playbooks.md)."""
    recovery: dict[Id, RecoveryTarget] = Field(default_factory=dict)
    """Recovery targets by the loss they are for: software, or a failure domain (host,
    site, region, zone, account, provider)."""
    control: Control = Control()
    """``bastion up``: its API's address, the guard and the scheduled scrub."""
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file this manifest was loaded from, if any."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the manifest resolve against."""
        return self._path.parent if self._path is not None else Path.cwd()

    def segment_spec(self, name: str) -> Segment | None:
        """Segment ``name``'s settings (defaults for one declared by name alone)."""
        if isinstance(self.segments, dict):
            return self.segments.get(name)
        return Segment() if name in self.segments else None

    def component(self, id_: str) -> Component | None:
        return next((c for c in self.components if c.id == id_), None)


def attribute_docs() -> dict[str, dict[str, str]]:
    """Each model's field descriptions, by class name then field name: the string under
    each field, read from this module's source in one parse, a class inheriting its
    bases' (what pydantic's ``use_attribute_docstrings`` gives, without its import-time
    cost)."""
    module = sys.modules[__name__]
    own: dict[str, dict[str, str]] = {}
    for node in ast.parse(inspect.getsource(module)).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs: dict[str, str] = {}
        for field, under in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(under, ast.Expr)
                and isinstance(under.value, ast.Constant)
                and isinstance(under.value.value, str)
            ):
                docs[field.target.id] = inspect.cleandoc(under.value.value)
        own[node.name] = docs
    out: dict[str, dict[str, str]] = {}
    for name in own:
        cls = getattr(module, name, None)
        if isinstance(cls, type) and issubclass(cls, BaseModel):
            merged: dict[str, str] = {}
            for base in reversed(cls.__mro__):
                merged.update(own.get(base.__name__, {}) if base.__module__ == __name__ else {})
            out[name] = merged
    return out
