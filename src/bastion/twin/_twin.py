"""The sandbox twin: an isolated copy of a manifest's system to break on purpose.

Owns: ``Twin``, and everything it makes under ``<state_dir>/twin/<name>/``::

    bastion.yaml      the twin manifest: production's, resolved, with its own
                      state_dir, vault replicas, keys and ports (use it with ``-f``)
    twin.json         what ``up`` made (``TwinRecord``): ports, replicas, figures
    state/            the twin's state_dir: events.db, keys/, vault/<a, b, ...>

``up`` makes it (the vault as copy-on-write views, ``bastion.twin._view``; ports from
``bastion.twin._ports``), ``down`` removes exactly that directory, ``status`` says what
is there and what is listening, and ``scope`` is the fault ``Scope`` a drill against the
twin runs in: the twin's directory, its ports, the processes listening on them, and
copy-up for its vault, so no fault can reach a production file, port or process.

Must never: write into production's replicas, keys or state (the twin's events go to
its own log; ``twin.up`` and ``twin.down`` go to production's log, the one record of the
system's own history), reuse production's signing key (see ``_view``), or remove
anything ``up`` did not make.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import ValidationError

from bastion import event_kinds as ek
from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.manifest import Manifest, load
from bastion.store._url import parse_replica_url
from bastion.twin._ports import allocate, owned_ports, port_free
from bastion.twin._view import ViewStatistics, make_view
from bastion.vault._keys import Signer, Verifier, make_key
from bastion.vault._manifest import vault_keys, vault_replicas

if TYPE_CHECKING:
    from bastion.drill.faults.scope import Scope

__all__ = ["Twin", "TwinRecord", "TwinStatus"]

_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
RECORD = "twin.json"
MANIFEST = "bastion.yaml"


@dataclass(frozen=True)
class TwinRecord:
    """What ``twin up`` made: written to ``twin.json``, read back by status and down."""

    name: str
    production: str  # the production manifest
    manifest: str  # the twin manifest
    root: str
    state_dir: str
    ports: dict[int, int]  # production port -> twin port
    replicas: tuple[ViewStatistics, ...]
    created: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["ports"] = {str(k): v for k, v in self.ports.items()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> TwinRecord:
        return cls(
            name=str(doc["name"]),
            production=str(doc["production"]),
            manifest=str(doc["manifest"]),
            root=str(doc["root"]),
            state_dir=str(doc["state_dir"]),
            ports={int(k): int(v) for k, v in doc["ports"].items()},
            replicas=tuple(ViewStatistics(**r) for r in doc["replicas"]),
            created=str(doc["created"]),
            seconds=float(doc["seconds"]),
        )


@dataclass(frozen=True)
class TwinStatus:
    """A twin as it is now: its record (None if there is no twin), which of its ports
    something listens on, and those listeners' pids."""

    name: str
    root: str
    record: TwinRecord | None
    listening: dict[int, bool]
    pids: tuple[int, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "root": self.root,
            "exists": self.record is not None,
            "twin": self.record.to_json() if self.record else None,
            "listening": {str(k): v for k, v in self.listening.items()},
            "pids": list(self.pids),
        }


def _listeners(ports: set[int]) -> tuple[int, ...]:
    """The pids of processes listening on any of ``ports`` (the twin's processes)."""
    if not ports:
        return ()
    try:
        import psutil

        found = {
            c.pid
            for c in psutil.net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port in ports and c.pid
        }
    except Exception:  # psutil missing or not allowed to list sockets: none we can prove
        return ()
    return tuple(sorted(found))


class Twin:
    """The twin ``name`` of the system in ``manifest`` (a production manifest file)."""

    def __init__(self, manifest: str | Path, name: str = "twin") -> None:
        if not _NAME.match(name):
            raise UsageError(
                f"twin name {name!r} is not valid; use lower-case letters, digits and '-', "
                "starting with a letter (e.g. twin, control)"
            )
        path = Path(manifest)
        if not path.is_file():
            raise UsageError(
                f"twin: manifest {path} does not exist; give the production manifest with "
                "-f, or run `bastion init`"
            )
        self.name = name
        self.production_path = path.resolve()
        self.production: Manifest = load(self.production_path)
        self.root = Path(self.production.state_dir) / "twin" / name
        self.state_dir = self.root / "state"
        self.manifest_path = self.root / MANIFEST

    def __repr__(self) -> str:
        return f"Twin({self.name!r}, {str(self.root)!r})"

    def exists(self) -> bool:
        return self.root.exists()

    def record(self) -> TwinRecord:
        try:
            doc = json.loads((self.root / RECORD).read_text())
        except FileNotFoundError:
            raise UsageError(
                f"twin {self.name!r} of {self.production_path} does not exist ({self.root}); "
                "run `bastion twin up` first"
            ) from None
        return TwinRecord.from_json(doc)

    def manifest(self) -> Manifest:
        """The twin's manifest, loaded (every command works on it with ``-f``)."""
        self.record()
        return load(self.manifest_path)

    # -- up -----------------------------------------------------------------------------

    def up(self, *, port_base: int | None = None) -> TwinRecord:
        """Make the twin. ``UsageError`` (exit 2) if it exists or a port clashes."""
        if self.root.exists():
            raise UsageError(
                f"twin {self.name!r} already exists at {self.root}; run `bastion twin down` "
                "first, or give another --name"
            )
        started = time.perf_counter()
        # Defaults left out keep the twin manifest short (every command on the twin parses
        # it); a path default resolved against production's directory differs from its
        # default, so it stays, and each service's listen is written out even when it is
        # the default, so that its port is rewritten.
        tree = self.production.model_dump(mode="json", by_alias=True, exclude_defaults=True)
        for name, service in self.production.services.items():
            tree["services"][name]["listen"] = service.listen
        # and the control API's, so a `bastion up` of the twin does not take production's
        tree.setdefault("control", {})["listen"] = self.production.control.listen
        ports = allocate(owned_ports(tree), port_base=port_base, manifest=str(self.production_path))
        replicas = self._production_replicas()
        parent_made = not self.root.parent.exists()
        self.root.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.root.mkdir(mode=0o700)
        try:
            record = self._make(tree, ports, replicas, started)
        except BaseException:
            shutil.rmtree(self.root, ignore_errors=True)
            if parent_made:
                _rmdir_quietly(self.root.parent)
            raise
        EventLog.in_state_dir(self.production.state_dir).emit(
            ek.TWIN_UP,
            subject=self.name,
            root=str(self.root),
            ports={str(k): v for k, v in ports.items()},
            objects=sum(r.reflinked + r.linked for r in record.replicas),
            seconds=record.seconds,
        )
        return record

    def _production_replicas(self) -> list[Path]:
        found = []
        for entry in vault_replicas(self.production):
            url = parse_replica_url(entry)
            if not url.is_local:
                raise UsageError(
                    f"twin: vault replica {entry!r} in {self.production_path} is not a local "
                    "directory; a twin shares objects by reflink or hard link, so it needs "
                    "local replicas (remote replicas are later work)"
                )
            where = Path(url.location)
            if not where.is_absolute():
                where = self.production.base_dir / where
            found.append(where)
        return found

    def _make(
        self,
        tree: dict[str, Any],
        ports: dict[int, int],
        replicas: list[Path],
        started: float,
    ) -> TwinRecord:
        keys = self.state_dir / "keys"
        signing, admin = keys / "signing.key", keys / "admin.key"
        self.state_dir.mkdir(mode=0o700)
        make_key(signing)
        make_key(admin)
        signer = Signer(signing)
        admin_pub = Verifier.for_key_file(admin, "admin").raw
        vault = dict(tree.get("vault") or {})
        mode = vault.get("mode", "private")
        (self.state_dir / "vault").mkdir(mode=0o700)
        twin_replicas = [self.state_dir / "vault" / _replica_name(i) for i in range(len(replicas))]
        pairs = [(p, t) for p, t in zip(replicas, twin_replicas, strict=True) if p.exists()]
        # Production's key is needed only to verify what there is to copy: a system with
        # an empty vault (or none yet) still gets a twin.
        verifier = None
        if any((prod / "snapshots").is_dir() for prod, _ in pairs):
            prod_signing, _ = vault_keys(self.production)
            verifier = Verifier.for_key_file(Path(prod_signing))
        # One replica after another: see make_view (threads made it ~2x slower).
        views = [
            make_view(prod, twin, verifier=verifier, signer=signer, admin_pub=admin_pub, mode=mode)
            for prod, twin in pairs
        ]
        vault.update(
            replicas=[str(t) for t in twin_replicas], key=str(signing), admin_key=str(admin)
        )
        tree["vault"] = vault
        tree["state_dir"] = str(self.state_dir)
        _rewrite_ports(tree, ports)
        self._rewrite_scratch(tree)
        tree = _drop_none(tree)
        text = (
            f"# The sandbox twin {self.name!r} of {self.production_path}, made by "
            "`bastion twin up`.\n# Its own state, vault replicas, keys and ports; "
            "`bastion twin down` removes it.\n" + _dump(tree)
        )
        # It must load: the schema is checked on the tree itself (the text is that tree,
        # dumped; parsing it back would cost more than the rest of the twin).
        try:
            Manifest.model_validate(tree, context={"base_dir": self.root})
        except ValidationError as exc:  # pragma: no cover - a bug in the rewrite above
            raise UsageError(f"twin: the twin manifest would not load: {exc}") from None
        self.manifest_path.write_text(text)
        record = TwinRecord(
            name=self.name,
            production=str(self.production_path),
            manifest=str(self.manifest_path),
            root=str(self.root),
            state_dir=str(self.state_dir),
            ports=ports,
            replicas=tuple(views),
            created=datetime.now(UTC).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 4),
        )
        (self.root / RECORD).write_text(json.dumps(record.to_json(), indent=1) + "\n")
        EventLog.in_state_dir(self.state_dir).emit(
            ek.TWIN_UP, subject=self.name, production=str(self.production_path)
        )
        return record

    def _rewrite_scratch(self, tree: dict[str, Any]) -> None:
        """A worker slot's scratch directory is written to: the twin's is its own."""
        for job, spec in (tree.get("jobs") or {}).items():
            for slot in spec.get("slots") or []:
                if slot.get("scratch"):
                    slot["scratch"] = str(self.state_dir / "scratch" / job / slot["name"])

    # -- status, scope, down --------------------------------------------------------------

    def status(self) -> TwinStatus:
        try:
            record: TwinRecord | None = self.record()
        except UsageError:
            record = None
        ports = sorted(record.ports.values()) if record else []
        listening = {p: not port_free(p) for p in ports}
        pids = _listeners({p for p, on in listening.items() if on})
        return TwinStatus(self.name, str(self.root), record, listening, pids)

    def scope(self, *, pids: tuple[int, ...] = ()) -> Scope:
        """The fault scope of a drill against this twin: its directory (state, vault,
        manifest), its ports, the processes listening on them plus ``pids``, and copy-up
        over its vault so a fault never writes into an inode production shares."""
        from bastion.drill.faults.scope import Scope  # the drill package is heavy: on demand

        record = self.record()
        found = _listeners(set(record.ports.values()))
        return Scope.of(
            pids=[*found, *pids],
            paths=[self.root],
            ports=record.ports.values(),
            name=f"twin {self.name}",
            copy_up=[self.state_dir / "vault"],
        )

    def down(self) -> list[str]:
        """Remove the twin (refused while something listens on its ports: stop it first).
        Returns the paths removed.

        A twin that ``up`` never finished (it was killed midway, so there is no
        ``twin.json``) is removed too, when its directory holds only what ``up`` makes.
        """
        if self.root.is_dir() and not (self.root / RECORD).exists():
            left = {p.name for p in self.root.iterdir()}
            if not left <= {MANIFEST, RECORD, "state"}:
                raise UsageError(
                    f"twin {self.name!r}: {self.root} has no {RECORD} and holds "
                    f"{sorted(left - {MANIFEST, RECORD, 'state'})}, which twin up does not "
                    "make; remove it by hand if it is yours to remove"
                )
            ports: list[int] = []
        else:
            record = self.record()
            ports = list(record.ports.values())
        busy = [p for p in ports if not port_free(p)]
        if busy:
            pids = _listeners(set(busy))
            raise UsageError(
                f"twin {self.name!r}: port(s) {busy} are still in use (pids {list(pids)}); "
                "stop the twin's processes (e.g. its `bastion serve -f "
                f"{self.manifest_path}`) first"
            )
        removed = [str(self.root)]
        shutil.rmtree(self.root)
        if _rmdir_quietly(self.root.parent):
            removed.append(str(self.root.parent))
        EventLog.in_state_dir(self.production.state_dir).emit(
            ek.TWIN_DOWN, subject=self.name, root=str(self.root)
        )
        return removed


def _replica_name(i: int) -> str:
    return chr(ord("a") + i) if i < 26 else f"r{i}"


def _rmdir_quietly(path: Path) -> bool:
    try:
        path.rmdir()
    except OSError:
        return False
    return True


def _dump(tree: dict[str, Any]) -> str:
    """The twin manifest's text: JSON, which is YAML 1.2 (the manifest loader reads it as
    any other ``bastion.yaml``, with located errors). It is written by ``twin up``, not by
    hand: ruamel's pure-Python emitter took ~25 ms of a ~0.12 s ``twin up``, JSON 0.4 ms."""
    return json.dumps(tree, indent=2) + "\n"


def _drop_none(value: Any) -> Any:
    """The tree without None values: an unset optional field stays unset."""
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_none(v) for v in value]
    return value


def _rewrite_ports(tree: dict[str, Any], ports: dict[int, int]) -> None:
    control = tree.get("control") or {}
    listen = control.get("listen")
    if isinstance(listen, str) and ":" in listen:
        host, _, port = listen.rpartition(":")
        if int(port) in ports:
            control["listen"] = f"{host}:{ports[int(port)]}"
    for spec in (tree.get("services") or {}).values():
        listen = spec.get("listen")
        if isinstance(listen, str) and ":" in listen:
            host, _, port = listen.rpartition(":")
            if int(port) in ports:
                spec["listen"] = f"{host}:{ports[int(port)]}"
        gateways = spec.get("gateways")
        if isinstance(gateways, list):  # the same rewrite, so listen stays among them
            moved = []
            for address in gateways:
                host, _, port = str(address).rpartition(":")
                moved.append(f"{host}:{ports[int(port)]}" if int(port) in ports else address)
            spec["gateways"] = moved
        for backend in spec.get("backends") or []:
            url = backend.get("url")
            if not isinstance(url, str):
                continue
            parts = urlsplit(url)
            if parts.port in ports and parts.hostname:
                host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
                netloc = f"{host}:{ports[parts.port]}"
                backend["url"] = urlunsplit(parts._replace(netloc=netloc))
