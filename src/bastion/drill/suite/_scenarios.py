"""The reference scenarios: each one a Chaos Toolkit experiment written for the twin.

Owns: ``SCENARIOS``, the twelve scenarios in the suite's order, and ``SuiteEnv``, what a
scenario needs to know about the twin it runs against (its manifest, ports, vault
contents, the service and job it drills). A scenario says whether it applies to the
system (``skip_reason``: no training job, no local model backend, nothing in the vault
to attack...) and builds its experiment (``build``): processes it starts in the twin,
the steady state it checks, the fault, the system's recovery it waits for, and which
events count as detection.

The experiments use only the twin's paths and ports (``SuiteEnv`` holds them), and the
suite runs them in the twin's scope: an experiment that reached production would be
refused before it changed anything.

Must never: build an experiment that names a production path or port, or count as
applicable a scenario whose experiment could only error (skip it, saying why).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.twin import Twin, TwinRecord

__all__ = ["SCENARIOS", "Scenario", "SuiteEnv", "scenario_names"]

_ACTIONS = "bastion.drill.actions"
_PROBES = "bastion.drill.probes"
_STEPS = "bastion.drill.suite.steps"
#: a digits image of zeros: what the example's model reads (64 comma-separated values)
_PIXELS = ",".join(["0"] * 64)


@dataclass
class SuiteEnv:
    """What the scenarios know about the twin: filled once per suite run."""

    production: Manifest
    twin: Twin
    record: TwinRecord
    twin_manifest: Path
    short: bool
    snapshots: list[str] = field(default_factory=list)
    _vault: Any = field(default=None, repr=False)

    # -- timings ---------------------------------------------------------------------------
    @property
    def hold_s(self) -> float:
        """How long a fault stays on before it is reverted."""
        return 1.0 if self.short else 5.0

    @property
    def frequency_s(self) -> float:
        return 0.25 if self.short else 0.5

    @property
    def work(self) -> Path:
        """The twin's scratch space for the suite's working copies."""
        return self.twin.state_dir / "suite"

    # -- what the system has ---------------------------------------------------------------
    def twin_port(self, port: int) -> int | None:
        return self.record.ports.get(port)

    def model_service(self) -> tuple[str, int, str] | None:
        """The first service with a local model backend: its name, the twin's listen
        port, and the backend's model ref."""
        for name, service in self.production.services.items():
            local = next((b for b in service.backends if b.model is not None), None)
            if local is None:
                continue
            port = self.twin_port(int(service.listen.rpartition(":")[2]))
            if port is not None:
                return name, port, str(local.model)
        return None

    def vendor(self) -> tuple[str, int, str] | None:
        """A vendor backend on a loopback URL of a model service, which the suite can
        stand in for on the twin's port: (service, twin port, backend name)."""
        found = self.model_service()
        if found is None:
            return None
        service = self.production.services[found[0]]
        for backend in service.backends:
            if backend.url is None:
                continue
            parts = urlsplit(str(backend.url))
            port = self.twin_port(parts.port or 80) if parts.port else None
            if port is not None:
                return found[0], port, backend.name
        return None

    def latency_ms(self, service: str) -> float:
        """The service's promised p99 latency (its latency SLO), else 500 ms."""
        for slo in self.production.slos:
            if slo.service == service and slo.p99_ms is not None:
                return float(slo.p99_ms)
        return 500.0

    def job(self) -> str | None:
        return next(iter(self.production.jobs), None)

    def has(self, ref: str) -> bool:
        """Whether the twin's vault resolves ``ref`` (a name, ``name@label`` or
        ``name@version``)."""
        name, _, at = ref.partition("@")
        if name not in self.snapshots:
            return False
        if not at:
            return True
        from bastion.errors import BastionError

        try:
            self.vault().snapshot(ref)
        except BastionError:
            return False
        return True

    def vault(self) -> Any:
        """The twin's vault, for reading what it holds (never written through here)."""
        from bastion.manifest import load
        from bastion.vault import Vault

        if self._vault is None:
            self._vault = Vault.from_manifest(load(self.twin_manifest), create=False)
        return self._vault

    def csv_header(self, ref: str) -> list[str] | None:
        """The header of the first CSV file of snapshot ``ref`` (None: it has none)."""
        snap = self.vault().snapshot(ref)
        first = next((f for f in sorted(snap.files) if f.endswith(".csv")), None)
        if first is None:
            return None
        text = bytes(self.vault().read(snap, first)[:65536]).decode("utf-8", "replace")
        return [c.strip() for c in text.splitlines()[0].split(",")] if text else []

    def dataset(self) -> str | None:
        """The dataset to attack: a training job's input, else the first dataset in the
        vault (as ``name@latest``)."""
        for job in self.production.jobs.values():
            for ref in job.inputs.values():
                if str(ref).startswith("dataset/") and self.has(str(ref)):
                    return str(ref)
        name = next((n for n in self.snapshots if n.startswith("dataset/")), None)
        return None if name is None else f"{name}@latest"

    def missing_inputs(self, job: str) -> list[str]:
        return [str(r) for r in self.production.jobs[job].inputs.values() if not self.has(str(r))]


@dataclass(frozen=True)
class Scenario:
    """One reference scenario. ``loss``: the key of the manifest's ``recovery`` whose
    targets it is judged against (``software``, ``site``...); ``stateful``: whether it
    can lose data, so its RPO (seconds) is measured and judged; ``layer``:
    infrastructure or ml."""

    name: str
    title: str
    layer: str
    loss: str
    stateful: bool
    skip_reason: Callable[[SuiteEnv], str | None]
    build: Callable[[SuiteEnv], dict[str, Any]]
    #: run before the experiment (in the twin); returns what undoes it afterwards
    prepare: Callable[[SuiteEnv], Callable[[], None]] | None = None
    #: what the journal says that the verdict alone does not (added to the reason)
    note: Callable[[dict[str, Any]], str | None] | None = None


# -- building blocks ----------------------------------------------------------------------


def _py(module: str, func: str, /, **arguments: Any) -> dict[str, Any]:
    return {"type": "python", "module": module, "func": func, "arguments": arguments}


def _probe(name: str, module: str, func: str, /, **arguments: Any) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": name,
        "tolerance": True,
        "provider": _py(module, func, **arguments),
    }


def _step(name: str, module: str, func: str, /, **arguments: Any) -> dict[str, Any]:
    return {"type": "action", "name": name, "provider": _py(module, func, **arguments)}


def _paused(activity: dict[str, Any], after_s: float) -> dict[str, Any]:
    return {**activity, "pauses": {"after": after_s}}


def _background(activity: dict[str, Any]) -> dict[str, Any]:
    return {**activity, "background": True}


def _revert(name: str | None = None) -> dict[str, Any]:
    args = {} if name is None else {"name": name}
    return _step(f"revert-{name or 'everything'}", _ACTIONS, "revert", **args)


def _recovered(env: SuiteEnv, timeout_s: float | None = None) -> dict[str, Any]:
    timeout = timeout_s if timeout_s is not None else (20.0 if env.short else 60.0)
    return _step("wait-until-steady", _ACTIONS, "wait_recovered", timeout_s=timeout)


def _experiment(
    env: SuiteEnv,
    scenario: str,
    title: str,
    *,
    steady: list[dict[str, Any]] | None,
    method: list[dict[str, Any]],
    detect: list[str] | None = None,
    processes: dict[str, Any] | None = None,
    upstreams: dict[str, Any] | None = None,
    proxies: dict[str, Any] | None = None,
    free_ports: list[str] | None = None,
    setup: list[list[str]] | None = None,
) -> dict[str, Any]:
    bastion: dict[str, Any] = {
        "name": "bastion",
        "subject": f"suite:{scenario}",
        "frequency_s": env.frequency_s,
        "detect": list(detect or []),
    }
    optional = {
        "processes": processes,
        "upstreams": upstreams,
        "proxies": proxies,
        "free_ports": free_ports,
        "setup": setup,
    }
    bastion.update({k: v for k, v in optional.items() if v})
    experiment: dict[str, Any] = {
        "version": "1.0.0",
        "title": title,
        "description": f"bastion drill suite: {scenario}, against the twin {env.twin.name!r}",
        "tags": ["bastion-suite", scenario],
        "extensions": [bastion],
        "method": method,
        "rollbacks": [_revert()],
    }
    if steady:
        experiment["steady-state-hypothesis"] = {"title": title, "probes": steady}
    return experiment


def _gateway(env: SuiteEnv) -> tuple[dict[str, Any], str, int]:
    """The twin's gateway as a drill process (its replicas its descendants)."""
    found = env.model_service()
    assert found is not None
    service, port, _ = found
    process = {
        "command": ["python", "-m", "bastion", "serve", service, "-f", str(env.twin_manifest)],
        "ready_url": "/healthz",
        "ready_port": port,
        "ready_timeout_s": 120,
    }
    return {"gateway": process}, service, port


def _answers(port: int, timeout_s: float = 2.0) -> dict[str, Any]:
    return _probe(
        "service-answers",
        _PROBES,
        "chat_ok",
        url=f"http://127.0.0.1:{port}",
        timeout_s=timeout_s,
        content=_PIXELS,
    )


def _load(env: SuiteEnv, port: int, duration_s: float) -> dict[str, Any]:
    body = '{"inputs": [' + _PIXELS + "]}"
    return _background(
        _step(
            "client-load",
            _ACTIONS,
            "http_load",
            url=f"http://127.0.0.1:{port}/v1/predict",
            duration_s=duration_s,
            rps=10 if env.short else 20,
            method="POST",
            body=body,
            timeout_s=2.0,
        )
    )


def _no_model_service(env: SuiteEnv) -> str | None:
    found = env.model_service()
    if found is None:
        return "no service with a local model backend (services.*.backends[].model)"
    if not env.has(found[2]):
        return f"the model {found[2]} the service serves is not in the vault"
    return None


def _no_vendor(env: SuiteEnv) -> str | None:
    reason = _no_model_service(env)
    if reason is not None:
        return reason
    if env.vendor() is None:
        return "no vendor backend on a loopback URL for the suite to stand in for"
    return None


# -- infrastructure -----------------------------------------------------------------------


def _replica_killed(env: SuiteEnv) -> dict[str, Any]:
    processes, _, port = _gateway(env)
    lasting = env.hold_s * 3 + 6
    return _experiment(
        env,
        "replica-killed",
        "A killed model replica is replaced while the service keeps answering",
        steady=[_answers(port)],
        processes=processes,
        detect=["serve.replica.exited", "serve.backend.ejected"],
        method=[
            _load(env, port, lasting),
            _step(
                "kill-a-replica",
                _ACTIONS,
                "inject",
                fault="process.kill",
                name="kill",
                process="gateway",
                match="bastion.serve.replica",
            ),
            _probe(
                "wait-for-the-replacement",
                _PROBES,
                "wait_for_event",
                kind="serve.replica.started",
                timeout_s=60,
            ),
            _recovered(env),
        ],
    )


def _replica_hung(env: SuiteEnv) -> dict[str, Any]:
    processes, _, port = _gateway(env)
    return _experiment(
        env,
        "replica-hung",
        "A hung model replica is ejected and the service keeps answering",
        steady=[_answers(port)],
        processes=processes,
        detect=["serve.backend.ejected", "serve.replica.hang"],
        method=[
            _load(env, port, env.hold_s * 3 + 4),
            _paused(
                _step(
                    "hang-a-replica",
                    _ACTIONS,
                    "inject",
                    fault="process.hang",
                    name="hang",
                    process="gateway",
                    match="bastion.serve.replica",
                ),
                env.hold_s * 2,
            ),
            _revert("hang"),
            _recovered(env),
        ],
    )


def _vendor(env: SuiteEnv, scenario: str, status: int, title: str) -> dict[str, Any]:
    processes, _, port = _gateway(env)
    found = env.vendor()
    assert found is not None
    _, vendor_port, _ = found
    fault = {"status": status}
    if status == 429:
        fault["retry_after"] = 1
    return _experiment(
        env,
        scenario,
        title,
        steady=[_answers(port)],
        processes=processes,
        upstreams={"vendor": {"port": vendor_port}},
        detect=["serve.backend.ejected"],
        method=[
            _load(env, port, env.hold_s * 2 + 4),
            _paused(
                _step(
                    f"vendor-answers-{status}",
                    _ACTIONS,
                    "inject",
                    fault="http.fault",
                    name="vendor",
                    upstream="vendor",
                    **fault,
                ),
                env.hold_s * 2,
            ),
            _probe("requests-the-vendor-failed", _STEPS, "upstream_faulted", name="vendor"),
            _revert("vendor"),
            _recovered(env),
        ],
    )


def _vendor_note(journal: dict[str, Any]) -> str | None:
    """Whether the vendor's fault reached anything: on a system where the vendor is a
    fallback, with healthy primaries no request goes to it while it fails."""
    for run in journal.get("run") or []:
        if run.get("activity", {}).get("name") == "requests-the-vendor-failed":
            if run.get("output") == 0:
                return (
                    "no request reached the vendor while it failed (a fallback, and the "
                    "primaries were healthy)"
                )
            return f"the vendor failed {run.get('output')} request(s)"
    return None


def _vendor_429(env: SuiteEnv) -> dict[str, Any]:
    return _vendor(
        env, "vendor-429", 429, "The vendor's rate limiting (429) does not reach the clients"
    )


def _vendor_outage(env: SuiteEnv) -> dict[str, Any]:
    return _vendor(env, "vendor-outage", 503, "A vendor outage (503) does not reach the clients")


def _network_latency(env: SuiteEnv) -> dict[str, Any]:
    processes, service, port = _gateway(env)
    budget_ms = env.latency_ms(service)
    return _experiment(
        env,
        "network-latency",
        f"Latency on the network path breaks the {budget_ms:g} ms objective only while it lasts",
        steady=[
            _probe(
                "answers-within-the-latency-objective",
                _PROBES,
                "chat_ok",
                url="http://127.0.0.1:${client_port}",
                timeout_s=max(0.05, budget_ms / 1000 * 2),
                content=_PIXELS,
            )
        ],
        processes=processes,
        proxies={"client": {"upstream_port": port}},
        method=[
            _paused(
                _step(
                    "add-latency",
                    _ACTIONS,
                    "inject",
                    fault="network.toxic",
                    name="latency",
                    proxy="client",
                    type="latency",
                    attributes={"latency_ms": budget_ms * 4, "jitter_ms": budget_ms / 10},
                ),
                env.hold_s * 2,
            ),
            _revert("latency"),
            _recovered(env),
        ],
    )


_SMALL_DISK_LIMIT = 256 << 20


def _tree_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def _needs_small_disk(env: SuiteEnv) -> str | None:
    import os
    import shutil

    if len(env.record.replicas) < 2:
        return "the vault has fewer than two replicas (a full disk under it is an outage)"
    if os.geteuid() != 0 or not shutil.which("mount"):
        return "filling a disk safely needs a small tmpfs for a twin replica (mount, as root)"
    size = _tree_bytes(Path(env.record.replicas[-1].twin))
    if size > _SMALL_DISK_LIMIT:
        return f"the twin's replica holds {size} bytes, too many to move onto a small tmpfs"
    return None


def _small_disk(env: SuiteEnv) -> Callable[[], None]:
    """Move the twin's last replica onto a tmpfs just larger than it (its content
    copied), so filling it fills that replica's disk and nothing else's. Undo: unmount
    (the twin's replica is its old self again) and repair it from the others."""
    import shutil
    import subprocess

    from bastion.errors import UsageError

    replica = Path(env.record.replicas[-1].twin)
    aside = replica.parent / f".{replica.name}-before-disk-full"
    shutil.copytree(replica, aside, symlinks=True)
    size = _tree_bytes(aside) + (8 << 20)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(replica)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        shutil.rmtree(aside, ignore_errors=True)
        raise UsageError(f"disk-full: cannot mount a small tmpfs: {done.stderr.strip()}")
    shutil.copytree(aside, replica, symlinks=True, dirs_exist_ok=True)
    shutil.rmtree(aside, ignore_errors=True)

    def undo() -> None:
        subprocess.run(["umount", str(replica)], capture_output=True, check=False)
        from bastion.manifest import load
        from bastion.vault import Vault

        Vault.from_manifest(load(env.twin_manifest)).scrub(repair=True)

    return undo


def _disk_full(env: SuiteEnv) -> dict[str, Any]:
    replica = Path(env.record.replicas[-1].twin)
    manifest = str(env.twin_manifest)
    return _experiment(
        env,
        "disk-full",
        "A full disk under one vault replica: writes come back once there is room",
        steady=[
            _probe("vault-takes-writes", _STEPS, "write_ok", manifest=manifest),
            _probe("vault-intact", _STEPS, "vault_intact", manifest=manifest),
        ],
        detect=["vault.degraded"],
        method=[
            _background(
                _step(
                    "writes",
                    _STEPS,
                    "write_load",
                    manifest=manifest,
                    duration_s=env.hold_s * 2 + 3,
                    every_s=0.2,
                )
            ),
            _paused(
                _step(
                    "fill-the-disk",
                    _ACTIONS,
                    "inject",
                    fault="storage.fill",
                    name="fill",
                    path=str(replica),
                    leave_bytes=0,
                    max_bytes=64 << 20,
                ),
                env.hold_s * 2,
            ),
            _revert("fill"),
            _step("scrub-and-repair", _STEPS, "vault_repair", manifest=manifest),
            _recovered(env),
        ],
    )


def _no_vault(env: SuiteEnv) -> str | None:
    if not env.snapshots:
        return "the vault holds no snapshot to lose"
    if len(env.record.replicas) < 2:
        return "the vault has fewer than two replicas: losing one is losing the data"
    return None


def _vault_replica_lost(env: SuiteEnv) -> dict[str, Any]:
    last = Path(env.record.replicas[-1].twin)
    parts = [str(last / p) for p in ("objects", "snapshots", "config") if (last / p).exists()]
    return _experiment(
        env,
        "vault-replica-lost",
        "A lost vault replica is rebuilt from the others and nothing is lost",
        steady=[_probe("vault-intact", _STEPS, "vault_intact", manifest=str(env.twin_manifest))],
        # the scrub probe is the detector (a scheduled scrub's stand-in); the repair
        # that follows is the recovery, not a detection
        detect=["vault.integrity.failed"],
        method=[
            _paused(
                _step(
                    "lose-a-replica",
                    _ACTIONS,
                    "inject",
                    fault="storage.delete",
                    name="replica",
                    targets=parts,
                    max_files=1_000_000,
                ),
                env.hold_s,
            ),
            _step("scrub-and-repair", _STEPS, "vault_repair", manifest=str(env.twin_manifest)),
            _recovered(env),
        ],
    )


# -- machine learning ---------------------------------------------------------------------


def _no_job(env: SuiteEnv) -> str | None:
    job = env.job()
    if job is None:
        return "no training job (jobs:)"
    missing = env.missing_inputs(job)
    if missing:
        return f"job {job}'s inputs are not in the vault: {', '.join(missing)}"
    return None


def _trainer(env: SuiteEnv, job: str) -> dict[str, Any]:
    return {
        "trainer": {
            "command": [
                "python",
                "-m",
                "bastion",
                "train",
                "run",
                "--fresh",
                "-f",
                str(env.twin_manifest),
                job,
            ],
            "ready_event": "train.checkpoint.saved",
            "ready_timeout_s": 180,
        }
    }


def _checkpoints_flow(within_s: float = 6.0) -> dict[str, Any]:
    return _probe(
        "checkpoints-flow",
        _PROBES,
        "recent_event",
        kind="train.checkpoint.saved",
        within_s=within_s,
    )


def _worker_killed(env: SuiteEnv) -> dict[str, Any]:
    job = env.job()
    assert job is not None
    return _experiment(
        env,
        "training-worker-killed",
        f"A killed training worker of {job} resumes from its last checkpoint",
        steady=[_checkpoints_flow()],
        processes=_trainer(env, job),
        detect=["train.exited", "train.restarting"],
        method=[
            _step(
                "kill-the-worker",
                _ACTIONS,
                "inject",
                fault="process.kill",
                name="kill",
                process="trainer",
                match=_worker_match(env, job),
            ),
            _probe(
                "wait-for-the-resume",
                _PROBES,
                "wait_for_event",
                kind="train.restored",
                timeout_s=120,
            ),
            _recovered(env, 120),
        ],
    )


def _worker_match(env: SuiteEnv, job: str) -> str:
    """What the worker's command line contains: its program (``train.py``)."""
    command = env.production.jobs[job].command
    script = next((c for c in command[1:] if not c.startswith("-")), command[0])
    return Path(script).name


def _corrupt_checkpoint(env: SuiteEnv) -> dict[str, Any]:
    job = env.job()
    assert job is not None
    match = _worker_match(env, job)
    return _experiment(
        env,
        "corrupt-checkpoint",
        f"A corrupt checkpoint of {job} is refused and training resumes from the one before",
        steady=[_checkpoints_flow()],
        processes=_trainer(env, job),
        detect=["train.checkpoint.corrupt"],
        method=[
            _probe("two-checkpoints", _STEPS, "wait_checkpoints", count=2, timeout_s=120),
            _step(
                "freeze-the-worker",
                _ACTIONS,
                "inject",
                fault="process.hang",
                name="freeze",
                process="trainer",
                match=match,
            ),
            _step(
                "corrupt-the-newest-checkpoint",
                _STEPS,
                "corrupt_latest_checkpoint",
                manifest=str(env.twin_manifest),
                job=job,
            ),
            _step(
                "kill-the-worker",
                _ACTIONS,
                "inject",
                fault="process.kill",
                name="kill",
                process="trainer",
                match=match,
            ),
            _probe(
                "wait-for-the-resume",
                _PROBES,
                "wait_for_event",
                kind="train.restored",
                timeout_s=120,
            ),
            _recovered(env, 120),
        ],
    )


def _no_dataset(env: SuiteEnv) -> str | None:
    if env.dataset() is None:
        return "no dataset in the vault (dataset/...) to attack"
    return None


def _ransomware(env: SuiteEnv) -> dict[str, Any]:
    ref = env.dataset()
    assert ref is not None
    name = ref.partition("@")[0]
    copy = env.work / "ransomware" / Path(name).name
    guarded = f"{name}-suite-guarded"
    return _experiment(
        env,
        "ransomware-dataset",
        f"Ransomware on a working copy of {name} is detected by the guard and undone",
        steady=[
            _probe(
                "working-copy-intact",
                _STEPS,
                "matches_snapshot",
                manifest=str(env.twin_manifest),
                directory=str(copy),
                ref=f"{guarded}@latest",
            )
        ],
        setup=[
            ["python", "-m", _STEPS, "protect", str(env.twin_manifest), ref, str(copy), guarded]
        ],
        processes={
            "guard": {
                "command": [
                    "python",
                    "-m",
                    "bastion",
                    "vault",
                    "guard",
                    "--restore",
                    "-f",
                    str(env.twin_manifest),
                ],
                "ready_event": "vault.guard.started",
                "ready_timeout_s": 60,
            }
        },
        detect=["vault.guard.ransomware"],
        method=[
            _step("baseline", _PROBES, "snapshot_files", root=str(copy), name="shards"),
            _step(
                "attack",
                _ACTIONS,
                "inject",
                fault="ransomware.process",
                name="attack",
                root=str(copy),
                files_per_s=20,
                wait_s=3,
                keyfile=str(env.work / "ransomware.key.jsonl"),
            ),
            _probe(
                "wait-for-the-restore",
                _PROBES,
                "wait_for_event",
                kind="vault.guard.restored",
                timeout_s=30,
            ),
            _probe("files-lost", _PROBES, "files_lost", name="shards"),
            _recovered(env),
        ],
    )


def _no_labels(env: SuiteEnv) -> str | None:
    reason = _no_dataset(env)
    if reason is not None:
        return reason
    ref = env.dataset()
    assert ref is not None
    header = env.csv_header(ref)
    if header is None:
        return f"{ref} has no CSV file: the label flip works on CSV tables"
    if "label" not in header:
        return f"{ref}'s tables have no 'label' column to poison (columns: {header[:6]})"
    return None


def _poisoned_data(env: SuiteEnv) -> dict[str, Any]:
    ref = env.dataset()
    assert ref is not None
    name = ref.partition("@")[0]
    from bastion.manifest import load
    from bastion.vault import Vault

    trusted = Vault.from_manifest(load(env.twin_manifest)).snapshot(ref)
    latest = f"{name}@latest"
    return _experiment(
        env,
        "poisoned-data",
        f"Poisoned labels in a new version of {name} are refused by the data gate",
        steady=[
            _probe(
                "latest-passes-the-data-gate",
                _STEPS,
                "data_gate_passes",
                manifest=str(env.twin_manifest),
                ref=latest,
                against=trusted.ref,
            )
        ],
        method=[
            _step(
                "poison-a-new-version",
                _STEPS,
                "poison_dataset",
                manifest=str(env.twin_manifest),
                ref=trusted.ref,
                workdir=str(env.work / "poisoned" / Path(name).name),
                fraction=0.3,
            ),
            # held until the data gate (the steady-state probe) has looked at it
            _step(
                "until-the-gate-refuses-it",
                _STEPS,
                "wait_broken",
                timeout_s=max(env.hold_s, 20.0 if env.short else 60.0),
            ),
            _step(
                "move-latest-back-to-the-trusted-version",
                _STEPS,
                "relabel",
                manifest=str(env.twin_manifest),
                name=name,
                version=trusted.version,
            ),
            _recovered(env),
        ],
    )


def _no_model(env: SuiteEnv) -> str | None:
    found = env.model_service()
    if found is not None and env.has(found[2]):
        return None if len(env.record.replicas) >= 2 else "the vault has fewer than two replicas"
    if any(n.startswith("model/") for n in env.snapshots):
        return None if len(env.record.replicas) >= 2 else "the vault has fewer than two replicas"
    return "no model in the vault (model/...)"


def _swapped_model(env: SuiteEnv) -> dict[str, Any]:
    found = env.model_service()
    if found is not None and env.has(found[2]):
        ref = found[2]
    else:
        ref = f"{next(n for n in env.snapshots if n.startswith('model/'))}@latest"
    return _experiment(
        env,
        "swapped-model",
        f"A swapped copy of {ref} on one replica is found by a scrub and repaired",
        steady=[_probe("vault-intact", _STEPS, "vault_intact", manifest=str(env.twin_manifest))],
        detect=["vault.integrity.failed"],
        method=[
            _paused(
                _step(
                    "swap-the-model",
                    _STEPS,
                    "swap_object",
                    manifest=str(env.twin_manifest),
                    ref=ref,
                ),
                env.hold_s,
            ),
            _step("scrub-and-repair", _STEPS, "vault_repair", manifest=str(env.twin_manifest)),
            _recovered(env),
        ],
    )


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        "replica-killed",
        "a model replica killed (SIGKILL)",
        "infrastructure",
        "software",
        False,
        _no_model_service,
        _replica_killed,
    ),
    Scenario(
        "replica-hung",
        "a model replica hung (SIGSTOP)",
        "infrastructure",
        "software",
        False,
        _no_model_service,
        _replica_hung,
    ),
    Scenario(
        "vendor-429",
        "the vendor answers 429",
        "infrastructure",
        "software",
        False,
        _no_vendor,
        _vendor_429,
        note=_vendor_note,
    ),
    Scenario(
        "vendor-outage",
        "the vendor is down (503)",
        "infrastructure",
        "software",
        False,
        _no_vendor,
        _vendor_outage,
        note=_vendor_note,
    ),
    Scenario(
        "network-latency",
        "latency on the client's network path",
        "infrastructure",
        "software",
        False,
        _no_model_service,
        _network_latency,
    ),
    Scenario(
        "disk-full",
        "the disk under a vault replica fills",
        "infrastructure",
        "software",
        True,
        _needs_small_disk,
        _disk_full,
        _small_disk,
    ),
    Scenario(
        "corrupt-checkpoint",
        "the newest checkpoint corrupt",
        "ml",
        "software",
        True,
        _no_job,
        _corrupt_checkpoint,
    ),
    Scenario(
        "training-worker-killed",
        "the training worker killed (SIGKILL)",
        "ml",
        "software",
        True,
        _no_job,
        _worker_killed,
    ),
    Scenario(
        "ransomware-dataset",
        "ransomware on a copy of the dataset",
        "ml",
        "software",
        True,
        _no_dataset,
        _ransomware,
    ),
    Scenario(
        "poisoned-data",
        "poisoned labels in a new dataset version",
        "ml",
        "software",
        False,
        _no_labels,
        _poisoned_data,
    ),
    Scenario(
        "swapped-model",
        "a swapped model on one replica",
        "ml",
        "software",
        True,
        _no_model,
        _swapped_model,
    ),
    Scenario(
        "vault-replica-lost",
        "a vault replica lost",
        "infrastructure",
        "site",
        True,
        _no_vault,
        _vault_replica_lost,
    ),
)


def scenario_names() -> list[str]:
    return [s.name for s in SCENARIOS]
