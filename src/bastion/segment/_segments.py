"""Segments of a manifest: their namespaces and tokens, quarantine and release.

Owns: each segment's vault namespace (``namespace``), minting its tokens
(``mint_token``: prefixes must lie in the namespace, never while quarantined), and the
two operations on a whole segment:

``quarantine(manifest, name)``, in the order that closes the breach fastest:

1. its tokens are refused: ``state.json`` records it quarantined and every token issued
   before now revoked (the vault server reads that on its next request);
2. its backends leave every running gateway (``POST /bastion/segments/quarantine`` on
   each service's ``listen``, in parallel): the other segments' backends keep serving;
3. its protected directories are frozen (the vault guard's ``freeze_tree``; the modes
   before are kept in the state for release);
4. its jobs are stopped (SIGTERM to each running supervisor, which stops its worker).

``release(manifest, name)`` after its check: every protected directory the guard knows
must still hold its last good snapshot's files (names and sizes), unless ``force``;
then the directories thaw, the backends rejoin each gateway, and the segment is no
longer quarantined. Tokens issued before the quarantine stay refused: mint new ones.

Must never: touch another segment's backends, directories or jobs; signal a process it
cannot show is that job's supervisor; report a step done that failed (each step's
outcome is in the report).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.errors import CheckFailed, NotFoundError, UsageError
from bastion.names import KINDS
from bastion.segment._state import SegmentState
from bastion.segment._token import MAX_TTL_S, OPS, TokenKey, inspect_token, mint

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = [
    "QuarantineReport",
    "ReleaseReport",
    "mint_token",
    "namespace",
    "namespaces",
    "quarantine",
    "release",
    "revoke_token",
    "token_key_path",
]


def _segment(manifest: Manifest, name: str) -> None:
    if name not in manifest.segments:
        declared = ", ".join(manifest.segments) or "none"
        raise NotFoundError(
            f"segment {name!r} is not in {manifest.path or 'the manifest'} (segments: "
            f"{declared}); declare it under segments:"
        )


def namespace(manifest: Manifest, name: str) -> tuple[str, ...]:
    """The vault name prefixes segment ``name`` owns: its ``prefixes``, or by default
    ``<kind>/<name>/`` for every kind and ``ckpt/<job>/`` for each of its jobs."""
    _segment(manifest, name)
    spec = manifest.segment_spec(name)
    if spec is not None and spec.prefixes:
        return tuple(spec.prefixes)
    jobs = [f"ckpt/{job}/" for job, j in manifest.jobs.items() if j.segment == name]
    return (*(f"{kind}/{name}/" for kind in KINDS), *jobs)


def namespaces(manifest: Manifest) -> dict[str, tuple[str, ...]]:
    return {name: namespace(manifest, name) for name in manifest.segments}


def token_key_path(manifest: Manifest) -> Path:
    """The key block 0 of every token is signed with: ``<state_dir>/keys/token.key``."""
    return Path(manifest.state_dir) / "keys" / "token.key"


def _events(manifest: Manifest) -> Any:
    from bastion.events import EventLog

    return EventLog.in_state_dir(manifest.state_dir)


def mint_token(
    manifest: Manifest,
    segment: str,
    *,
    prefixes: Sequence[str] = (),
    ops: Sequence[str] = OPS,
    ttl_s: float = MAX_TTL_S,
    clock: Callable[[], float] = time.time,
) -> str:
    """A token for ``segment`` (see ``bastion.segment._token.mint``); ``prefixes`` empty:
    the whole namespace. A prefix outside the namespace, or a quarantined segment, is a
    ``UsageError``."""
    space = namespace(manifest, segment)
    chosen = tuple(prefixes) or space
    for prefix in chosen:
        if not any(prefix.startswith(p) for p in space):
            raise UsageError(
                f"--prefix {prefix!r} is outside the namespace of segment {segment!r} "
                f"({', '.join(space)}); name one under it, or add it to "
                f"segments.{segment}.prefixes"
            )
    state = SegmentState(manifest.state_dir)
    if state.quarantined(segment):
        raise UsageError(
            f"segment {segment!r} is quarantined: no tokens until `bastion segment release "
            f"{segment}`"
        )
    token = mint(
        TokenKey.load_or_make(token_key_path(manifest)),
        segment,
        prefixes=chosen,
        ops=ops,
        ttl_s=ttl_s,
        clock=clock,
    )
    claims = inspect_token(token)[0]
    with contextlib.closing(_events(manifest)) as log:
        log.emit(
            ek.SEGMENT_TOKEN_MINTED,
            segment,
            segment=segment,
            prefixes=claims["pre"],
            ops=claims["ops"],
            expires=claims["exp"],
            id=claims["id"],
        )
    return token


def revoke_token(manifest: Manifest, token_or_id: str) -> str:
    """Revoke a token (or a block id): it and every token attenuated from it are refused
    on the server's next request. Returns the id revoked."""
    token_id = token_or_id
    if token_or_id.startswith("bst1."):
        token_id = str(inspect_token(token_or_id)[-1]["id"])
    SegmentState(manifest.state_dir).revoke(token_id)
    with contextlib.closing(_events(manifest)) as log:
        log.emit(ek.SEGMENT_TOKEN_REVOKED, "segment", id=token_id)
    return token_id


@dataclass
class QuarantineReport:
    """What ``quarantine`` did.

    Attributes:
        segment: the segment.
        gateways: per service: the backends moved out, or why its gateway was not
            reached (``not running: ...``).
        backends: every backend taken out, as ``service/backend``.
        frozen: protected directories frozen.
        jobs: per job of the segment: ``stopped`` (SIGTERM sent to its supervisor),
            ``not running``, or why it was left alone.
        tokens_refused_s: seconds from the call to the revocation being on disk.
        backends_out_s: seconds from the call to every reachable gateway answering.
        seconds: the whole call.
    """

    segment: str
    gateways: dict[str, list[str] | str] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    frozen: list[str] = field(default_factory=list)
    jobs: dict[str, str] = field(default_factory=dict)
    tokens_refused_s: float = 0.0
    backends_out_s: float = 0.0
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReleaseReport:
    """What ``release`` did: the backends put back (``service/backend``), the
    directories thawed, and the gateways not reached."""

    segment: str
    backends: list[str] = field(default_factory=list)
    thawed: list[str] = field(default_factory=list)
    gateways: dict[str, list[str] | str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _gateway_call(
    manifest: Manifest, action: str, segment: str, timeout_s: float
) -> dict[str, list[str] | str]:
    def call(service: str) -> tuple[str, list[str] | str]:
        spec = manifest.services[service]
        headers = {"Content-Type": "application/json"}
        if spec.auth is not None:
            keys = [k for k in os.environ.get(spec.auth.keys_env or "", "").split(",") if k]
            if keys:
                headers["Authorization"] = f"Bearer {keys[0]}"
        req = urllib.request.Request(
            f"http://{spec.listen}/bastion/segments/{action}",
            data=json.dumps({"segment": segment}).encode(),
            headers=headers,
            method="POST",
        )
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 (http:// built here)
                return service, list(json.loads(resp.read())["backends"])
        except urllib.error.HTTPError as exc:
            return service, f"refused: HTTP {exc.code}"
        except (OSError, ValueError, KeyError) as exc:
            reason = getattr(exc, "reason", exc)
            return service, f"not running: {reason}"

    services = list(manifest.services)
    if not services:
        return {}
    with ThreadPoolExecutor(max_workers=min(16, len(services))) as pool:
        return dict(pool.map(call, services))


def _protected(manifest: Manifest, segment: str) -> list[Path]:
    base = manifest.base_dir
    spec = manifest.segment_spec(segment)
    dirs = spec.protect if spec is not None else []
    return [(p if p.is_absolute() else base / p).resolve() for p in dirs]


def _stop_job(manifest: Manifest, job: str) -> str:
    import psutil

    path = Path(manifest.state_dir) / "train" / job / "supervisor.json"
    try:
        state = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return "not running"
    pid = state.get("supervisor_pid")
    if state.get("status") != "running" or not isinstance(pid, int) or pid <= 0:
        return "not running"
    try:
        proc = psutil.Process(pid)
        # the supervisor wrote the state file after it started: a pid reused by another
        # process since would be younger than the file
        if proc.create_time() > path.stat().st_mtime + 1.0:
            return f"left alone: pid {pid} is not its supervisor any more"
        proc.send_signal(signal.SIGTERM)
    except psutil.NoSuchProcess:
        return "not running"
    except psutil.Error as exc:
        return f"left alone: {exc}"
    return "stopped"


def quarantine(
    manifest: Manifest,
    name: str,
    *,
    timeout_s: float = 2.0,
    stop_jobs: bool = True,
    clock: Callable[[], float] = time.time,
) -> QuarantineReport:
    """Quarantine segment ``name`` (see the module). Idempotent: a second call does
    each step again (a gateway started since, a directory re-written)."""
    from bastion.vault._guard import freeze_tree

    _segment(manifest, name)
    started = time.perf_counter()
    report = QuarantineReport(name)
    state = SegmentState(manifest.state_dir)
    with state.update() as data:
        rec = data["segments"].setdefault(name, {})
        rec.update(quarantined=True, revoked_before=clock(), since=clock())
    report.tokens_refused_s = time.perf_counter() - started
    report.gateways = _gateway_call(manifest, "quarantine", name, timeout_s)
    report.backends = sorted(
        f"{svc}/{b}" for svc, got in report.gateways.items() if isinstance(got, list) for b in got
    )
    report.backends_out_s = time.perf_counter() - started
    frozen: dict[Path, int] = {}
    for directory in _protected(manifest, name):
        if directory.is_dir():
            freeze_tree(directory, frozen)
            report.frozen.append(str(directory))
    with state.update() as data:
        rec = data["segments"].setdefault(name, {})
        kept = dict(rec.get("frozen", {}))
        for path, mode in frozen.items():
            kept.setdefault(str(path), mode)
        rec["frozen"] = kept
    if stop_jobs:
        for job, spec in manifest.jobs.items():
            if spec.segment == name:
                report.jobs[job] = _stop_job(manifest, job)
    report.seconds = time.perf_counter() - started
    with contextlib.closing(_events(manifest)) as log:
        log.emit(
            ek.SEGMENT_QUARANTINED,
            name,
            segment=name,
            backends=report.backends,
            jobs=report.jobs,
            frozen=report.frozen,
            seconds=round(report.seconds, 6),
        )
    return report


def _check(manifest: Manifest, name: str) -> list[str]:
    """What stands in the way of releasing ``name``: each protected directory the guard
    knows must hold its last snapshot's files (names and sizes)."""
    from bastion.errors import BastionError
    from bastion.vault import Vault, load_protected

    dirs = set(_protected(manifest, name))
    if not dirs:
        return []
    problems = []
    vault = Vault.from_manifest(manifest, create=False)
    for protected in load_protected(vault):
        if protected.directory not in dirs:
            continue
        try:
            snap = vault.snapshot(protected.name)
        except BastionError as exc:
            problems.append(f"{protected.directory}: no good snapshot to check against ({exc})")
            continue
        from bastion.vault import CANARY

        root = protected.directory
        have = {
            p.relative_to(root).as_posix(): p.stat().st_size
            for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name != CANARY
        }
        want = {p: e.size for p, e in snap.files.items()}
        if have != want:
            diff = sorted(set(have) ^ set(want)) or sorted(
                p for p in have if have[p] != want.get(p)
            )
            problems.append(
                f"{root} differs from {snap.ref} ({', '.join(diff[:3])}); restore it "
                f"(`bastion vault restore {snap.ref} {root} --force`)"
            )
    return problems


def release(
    manifest: Manifest, name: str, *, force: bool = False, timeout_s: float = 2.0
) -> ReleaseReport:
    """Release segment ``name`` after its check (see the module); ``CheckFailed`` if the
    check finds a problem (nothing is changed), unless ``force``."""
    from bastion.vault._guard import unfreeze_tree

    _segment(manifest, name)
    state = SegmentState(manifest.state_dir)
    if not state.quarantined(name):
        raise UsageError(f"segment {name!r} is not quarantined (nothing to release)")
    problems = [] if force else _check(manifest, name)
    if problems:
        raise CheckFailed(
            f"segment {name!r} stays quarantined: " + "; ".join(problems) + " (or --force)"
        )
    report = ReleaseReport(name)
    with state.update() as data:
        rec = data["segments"].setdefault(name, {})
        frozen = {Path(p): int(m) for p, m in rec.pop("frozen", {}).items()}
        report.thawed = sorted({str(p) for p in frozen if p in set(_protected(manifest, name))})
        unfreeze_tree(frozen)
        rec["quarantined"] = False
        rec["released"] = time.time()
    report.gateways = _gateway_call(manifest, "release", name, timeout_s)
    report.backends = sorted(
        f"{svc}/{b}" for svc, got in report.gateways.items() if isinstance(got, list) for b in got
    )
    with contextlib.closing(_events(manifest)) as log:
        log.emit(
            ek.SEGMENT_RELEASED, name, segment=name, backends=report.backends, thawed=report.thawed
        )
    return report
