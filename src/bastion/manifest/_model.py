"""The manifest's schema: pydantic models for every section of ``bastion.yaml``.

Owns: field names, types, defaults and per-field checks. Cross-references between
sections (depends_on, cycles, slo -> service) are checked in ``_load`` because they need
the whole document.

Must never: do I/O. Relative paths are resolved against the manifest's directory, which
the loader passes in the validation context as ``base_dir``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from bastion.errors import InvalidNameError, UsageError
from bastion.names import parse_ref
from bastion.store._url import parse_replica_url

__all__ = [
    "Backend",
    "CheckpointPolicy",
    "Component",
    "Dependency",
    "GatewayPolicy",
    "Job",
    "Manifest",
    "RecoveryTarget",
    "Redundancy",
    "Replicas",
    "RestartPolicy",
    "Retention",
    "Service",
    "Slo",
    "VaultConfig",
    "WorkerSlot",
]

_ID = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
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


VaultRef = Annotated[str, AfterValidator(_vault_ref)]


def _resolve(value: Path, info: ValidationInfo) -> Path:
    base = (info.context or {}).get("base_dir")
    if base is not None and not value.is_absolute():
        return (Path(base) / value).resolve()
    return value


RelPath = Annotated[Path, AfterValidator(_resolve)]


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


HttpUrl = Annotated[str, AfterValidator(_url)]


def _listen(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:8700)")
    return value


Listen = Annotated[str, AfterValidator(_listen)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Dependency(_Strict):
    """An edge to another component. ``hard``: fails with it; ``soft``: degrades only."""

    id: Id
    type: Literal["hard", "soft"] = "hard"

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        return {"id": value} if isinstance(value, str) else value


class Redundancy(_Strict):
    """The component is up while ``k`` of ``members`` are up.

    ``active-active`` and ``standby`` mean k = 1; ``k-of-n`` needs ``k``.
    """

    mode: Literal["active-active", "standby", "k-of-n"] = "active-active"
    k: int | None = Field(default=None, ge=1)
    members: list[Id] = Field(min_length=1)

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
    id: Id
    kind: ComponentKind
    location: Location = "on-prem"
    provider: str | None = None
    domains: dict[Literal["region", "zone", "site", "account"], str] = Field(default_factory=dict)
    availability: float | None = Field(default=None, ge=0.0, le=1.0)
    availability_source: str | None = None
    depends_on: list[Dependency] = Field(default_factory=list)
    redundancy: Redundancy | None = None
    description: str | None = None


class Retention(_Strict):
    """Which versions ``bastion vault gc`` keeps per name (labelled versions, and every
    snapshot a kept one names in its lineage, are always kept). A version goes only when
    every rule set here lets it go; with no rule set, no version goes."""

    keep_last: int | None = Field(default=None, ge=1)
    keep_within_days: float | None = Field(default=None, gt=0)


class VaultConfig(_Strict):
    replicas: list[ReplicaEntry] = Field(min_length=1)
    quorum: int | None = Field(default=None, ge=1)
    key: RelPath | None = None
    admin_key: RelPath | None = None
    retention: Retention = Field(default_factory=Retention)

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("the same replica is listed twice; replicas must be distinct")
        return value


class CheckpointPolicy(_Strict):
    every_steps: int | None = Field(default=None, ge=1)
    every_seconds: float | None = Field(default=None, gt=0)
    max_overhead: float | None = Field(default=None, gt=0, lt=1)
    keep: int = Field(default=3, ge=1)
    on_busy: Literal["wait", "skip"] = "skip"


class RestartPolicy(_Strict):
    max: int = Field(default=10, ge=0)
    backoff_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    # a worker that ran this long proved the earlier failures transient: the backoff
    # and the restart count start over (Kubernetes' CrashLoopBackOff reset)
    healthy_after_s: float = Field(default=300.0, gt=0)


class WorkerSlot(_Strict):
    name: Id
    scratch: RelPath | None = None
    backend: Literal["local", "ray"] = "local"


class Job(_Strict):
    segment: str | None = None
    command: list[str] = Field(min_length=1)
    workdir: RelPath = Field(default=Path(), validate_default=True)
    env: dict[str, str] = Field(default_factory=dict)
    inputs: dict[str, VaultRef] = Field(default_factory=dict)
    checkpoint: CheckpointPolicy = CheckpointPolicy()
    restart: RestartPolicy = RestartPolicy()
    heartbeat_timeout_s: float = Field(default=60.0, gt=0)
    grace_s: float = Field(default=10.0, ge=0)
    slots: list[WorkerSlot] = Field(default_factory=list)
    depends_on: list[Dependency] = Field(default_factory=list)
    # keep one interpreter with torch imported waiting, so a restart skips the imports
    warm_standby: bool = True
    # until its first heartbeat a child gets this long instead of heartbeat_timeout_s
    startup_timeout_s: float = Field(default=120.0, gt=0)


class Replicas(_Strict):
    min: int = Field(default=1, ge=0)
    max: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _order(self) -> Replicas:
        if self.min > self.max:
            raise ValueError(f"min = {self.min} > max = {self.max}")
        return self


class Backend(_Strict):
    """One backend: a local replica set serving a vault model, or a remote URL."""

    name: Id
    model: VaultRef | None = None
    url: HttpUrl | None = None
    model_name: str | None = None
    tier: Literal["primary", "fallback"] | int = "primary"
    provider: str | None = None
    replicas: Replicas = Replicas()
    command: list[str] | None = None
    api_key_env: str | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Backend:
        if (self.model is None) == (self.url is None):
            raise ValueError("a backend needs exactly one of model (a vault ref) or url")
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
    timeout_ms: float = Field(default=1000, gt=0)
    ttft_timeout_ms: float | None = Field(default=None, gt=0)
    stall_timeout_ms: float | None = Field(default=None, gt=0)
    retry_budget: float = Field(default=0.2, ge=0, le=1)
    max_attempts: int = Field(default=3, ge=1, le=10)
    hedge: str = "off"
    max_queue: int = Field(default=256, ge=0)
    queue_timeout_ms: float = Field(default=500, ge=0)
    max_ejected: float = Field(default=0.5, gt=0, le=1)

    @field_validator("hedge")
    @classmethod
    def _hedge(cls, value: str) -> str:
        _hedge_rule(value)
        return value

    @property
    def hedge_rule(self) -> tuple[float | None, float | None]:
        """``hedge`` as (latency quantile, fixed delay in seconds); at most one is set."""
        return _hedge_rule(self.hedge)


class Service(_Strict):
    segment: str | None = None
    listen: Listen = "127.0.0.1:8700"
    backends: list[Backend] = Field(min_length=1)
    policy: GatewayPolicy = GatewayPolicy()
    depends_on: list[Dependency] = Field(default_factory=list)


class Slo(_Strict):
    id: Id
    service: str
    objective: float | None = Field(default=None, gt=0, lt=1)
    p99_ms: float | None = Field(default=None, gt=0)
    window: str = "30d"

    @model_validator(mode="after")
    def _something(self) -> Slo:
        if self.objective is None and self.p99_ms is None:
            raise ValueError("an SLO needs objective (availability) or p99_ms (latency)")
        return self


class RecoveryTarget(_Strict):
    rto_s: float = Field(gt=0)
    rpo_s: float = Field(ge=0)


class Manifest(_Strict):
    """A whole ``bastion.yaml``."""

    version: Literal[1]
    system: Id
    state_dir: RelPath = Field(default=Path(".bastion"), validate_default=True)
    vault: VaultConfig | None = None
    segments: list[Id] = Field(default_factory=list)
    components: list[Component] = Field(default_factory=list)
    jobs: dict[Id, Job] = Field(default_factory=dict)
    services: dict[Id, Service] = Field(default_factory=dict)
    slos: list[Slo] = Field(default_factory=list)
    recovery: dict[Id, RecoveryTarget] = Field(default_factory=dict)
    _path: Path | None = PrivateAttr(default=None)

    @property
    def path(self) -> Path | None:
        """The file this manifest was loaded from, if any."""
        return self._path

    @property
    def base_dir(self) -> Path:
        """The directory relative paths in the manifest resolve against."""
        return self._path.parent if self._path is not None else Path.cwd()

    def component(self, id_: str) -> Component | None:
        return next((c for c in self.components if c.id == id_), None)
