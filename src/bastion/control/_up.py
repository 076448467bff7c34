"""`bastion up`: run everything the manifest declares under one supervision tree.

Owns: ``Up``, the control process. Each service's gateway runs as its own ``bastion
serve SERVICE`` process (so its replicas and its port outlive a killed ``bastion up``),
the vault guard as ``bastion vault guard``, and a budgeted ``bastion vault scrub`` on a
schedule, each under a ``bastion.supervise.Supervisor`` (restart always, exit 2 fatal).
Every child's pid and start time is written to ``children.json`` as it starts; a
``bastion up`` started after a SIGKILL adopts the ones still running
(``Child.adopt``: same pid *and* start time) and starts only what is missing, so there is
never a second copy of a gateway or a replica. ``reload()`` reads the manifest again and
changes only what changed: a new service starts, a removed one stops, a service whose
backends or replica bounds changed is told by SIGHUP to apply them in place
(``serve.runner.reload_plan``) and acknowledges it, anything else restarts that one
gateway. A manifest that does not load, or a change that cannot be made (a port in use),
changes nothing and is reported. Also: ``status`` (what runs, from the files and the
processes, whether ``bastion up`` itself runs or not) and ``down`` (stop it all, leaving
no process behind, even when ``bastion up`` was killed).

Must never: start a second copy of a child that runs, kill a process it did not start
(a pid is trusted only with its start time), or apply half a reload.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import signal
import socket
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.control._files import RELOAD_ACK_ENV, UpFiles, read_json, write_private_json
from bastion.errors import BastionError, CheckFailed, UsageError
from bastion.events import EventLog, Relay
from bastion.manifest import Manifest, load
from bastion.supervise import Backoff, Child, ProcessSpec, RestartBudget, Supervisor

__all__ = ["Up", "down", "status"]

_BASTION = [sys.executable, "-m", "bastion"]


def _gateway_ok(listen: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://{listen}/healthz", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def _port_free(listen: str) -> str:
    """ "" when ``listen`` can be bound now, else why not."""
    host, _, port = listen.rpartition(":")
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, int(port)))
        except OSError as exc:
            return os.strerror(exc.errno).lower() if exc.errno else str(exc)
    return ""


def _objectives_of(manifest: Manifest, service: str) -> list[Any]:
    from bastion.slo import objectives

    return [o for o in objectives(manifest) if o.service == service]


def _log_tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


@dataclass
class _Scrub:
    """The scheduled scrub: one child at a time, started every ``every_s``."""

    every_s: float
    max_seconds: float
    next_at: float
    child: Child | None = None
    runs: int = 0
    last: dict[str, Any] = field(default_factory=dict)


class Up:
    """The control process over one manifest. ``start()`` then ``run(stop)``; or
    ``serve_forever()`` from the CLI (SIGTERM/SIGINT stop, SIGHUP reloads)."""

    def __init__(self, manifest: Manifest, *, api: bool = True) -> None:
        if manifest.path is None:
            raise UsageError("bastion up needs a manifest loaded from a file")
        self.manifest = manifest
        self.path: Path = manifest.path
        self.files = UpFiles(manifest.state_dir)
        self.files.make()
        self.log = EventLog.in_state_dir(manifest.state_dir)
        # the supervisors' events go to the log, and each start or end of a child
        # rewrites children.json
        self.events = Relay(self._on_child_event)
        self.sups: dict[str, Supervisor] = {}
        self.started_at = time.time()
        self.generation = 0
        self.last_reload: dict[str, Any] | None = None
        self.phase = "starting"
        self.api_enabled = api
        self.api: Any = None
        self.api_url = ""
        self._lock_fd: int | None = None
        self._mutex = threading.RLock()
        self._files_lock = threading.Lock()
        self._reload_requested = threading.Event()
        first = manifest.control.scrub
        self.scrub = (
            _Scrub(first.every_s, first.max_seconds, time.monotonic() + first.first_after_s)
            if first is not None and self._has_vault(manifest)
            else None
        )
        self.jobs: dict[str, dict[str, Any]] = {}
        self._job_children: dict[str, Child] = {}
        self._next_job = 0

    # -- what runs ---------------------------------------------------------------------
    @staticmethod
    def _has_vault(manifest: Manifest) -> bool:
        return manifest.vault is not None or bool(manifest.jobs)

    def _wanted(self, manifest: Manifest) -> dict[str, ProcessSpec]:
        """Each child the manifest asks for, by name."""
        out = self._gateways(manifest)
        guard = self._guard(manifest)
        if guard is not None:
            out["guard"] = guard
        return out

    def _gateways(self, manifest: Manifest) -> dict[str, ProcessSpec]:
        """Each service's gateway child, by name."""
        out: dict[str, ProcessSpec] = {}
        for name in manifest.services:
            child = f"serve:{name}"
            out[child] = ProcessSpec(
                argv=[*_BASTION, "serve", name, "-f", str(self.path)],
                name=child,
                env={RELOAD_ACK_ENV: str(self.files.ack(child))},
                log_path=self.files.logs / f"serve-{name}.log",
            )
        return out

    def _guard(self, manifest: Manifest) -> ProcessSpec | None:
        """The vault guard's child, when the manifest wants one and something is protected
        (opening the vault to know that takes a while: ``start`` asks after the gateways
        are on their way)."""
        if not (manifest.control.guard and self._protected(manifest)):
            return None
        return ProcessSpec(
            argv=[*_BASTION, "vault", "guard", "--restore", "-f", str(self.path)],
            name="guard",
            log_path=self.files.logs / "guard.log",
        )

    @staticmethod
    def _protected(manifest: Manifest) -> bool:
        try:
            from bastion.vault import Vault
            from bastion.vault._guard import load_protected

            return bool(load_protected(Vault.from_manifest(manifest)))
        except BastionError:
            return False

    def _supervisor(self, spec: ProcessSpec) -> Supervisor:
        return Supervisor(
            spec,
            backoff=Backoff(initial=0.2, factor=2.0, cap=10.0, jitter=0.2),
            budget=RestartBudget(max_restarts=20, window_s=600),
            restart_on="always",
            grace_s=15.0,
            fatal_exit_codes=(2,),  # bad configuration (a port in use): a restart fails too
            healthy_after_s=60.0,
            events=self.events,
            kind_prefix="control.child.",
            subject=spec.name,
        )

    def _on_child_event(
        self, kind: str, subject: str, at_ns: int | None, data: dict[str, Any]
    ) -> None:
        self.log.emit(kind, subject, at_ns=at_ns, **data)
        if kind.endswith((".started", ".adopted", ".stopped", ".exited")):
            self._write_children()

    def _write_children(self) -> None:
        # its own lock: supervisor threads call this while a reload (holding _mutex)
        # waits for one of them to stop
        with self._files_lock:
            doc: dict[str, Any] = {}
            for name, sup in list(self.sups.items()):
                child = sup.child
                if child is not None and child.exit is None:
                    doc[name] = {
                        "pid": child.pid,
                        "create_time": child.create_time,
                        "argv": list(child.spec.argv),
                    }
            scrub = self.scrub.child if self.scrub is not None else None
            if scrub is not None and scrub.exit is None:
                doc["scrub"] = {
                    "pid": scrub.pid,
                    "create_time": scrub.create_time,
                    "argv": list(scrub.spec.argv),
                }
            write_private_json(self.files.children, doc)

    # -- life cycle ----------------------------------------------------------------------
    def _take_lock(self) -> None:
        fd = os.open(self.files.lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = self.files.running_pid()
            raise UsageError(
                f"`bastion up` is already running on {self.manifest.state_dir}"
                + (f" (pid {other})" if other else "")
                + "; see `bastion status`, or stop it with `bastion down`"
            ) from None
        self._lock_fd = fd
        import psutil

        write_private_json(
            self.files.pid,
            {"pid": os.getpid(), "create_time": psutil.Process().create_time()},
        )

    def start(self) -> None:
        """Take the state directory, start the API, adopt or start every child."""
        self._take_lock()
        started: list[str] = []
        try:
            if self.api_enabled:
                self._check_api_port()  # it starts once the children are on their way
            previous = read_json(self.files.children) or {}
            adopted: list[str] = []
            # the gateways first: their replicas take the longest to be healthy, and the
            # guard's decision (it opens the vault) and the API can wait until they start
            wanted = self._gateways(self.manifest)
            for name, spec in wanted.items():
                self._adopt_or_start(name, spec, previous, adopted, started)
            guard = self._guard(self.manifest)
            if guard is not None:
                wanted["guard"] = guard
                self._adopt_or_start("guard", guard, previous, adopted, started)
            # a child the manifest no longer asks for (changed while we were down): stop it
            for name, rec in previous.items() if isinstance(previous, dict) else []:
                if name in wanted or not isinstance(rec, dict):
                    continue
                spec = ProcessSpec(argv=rec.get("argv") or ["?"], name=name)
                child = Child.adopt(spec, int(rec["pid"]), create_time=float(rec["create_time"]))
                if child is None:
                    continue
                if name == "scrub" and self.scrub is not None:
                    self.scrub.child = child  # let it finish its budget; no second one
                else:
                    child.terminate(15.0)
            if self.api_enabled:
                self._start_api()
            self._write_children()
            self.log.emit(
                ek.CONTROL_UP_STARTED,
                self.manifest.system,
                pid=os.getpid(),
                adopted=adopted,
                started=started,
                api=self.api_url,
            )
            self._save_state()
        except BaseException:
            for name in started:  # what this call started, not what it adopted
                if name in self.sups:
                    self.sups.pop(name).stop(timeout=60)
            self._write_children()
            self.close()
            raise

    def _adopt_or_start(
        self,
        name: str,
        spec: ProcessSpec,
        previous: Any,
        adopted: list[str],
        started: list[str],
    ) -> None:
        """Supervise child ``name``: the one a killed ``bastion up`` left running (same pid
        and start time in ``previous``, the children file), or a new one."""
        sup = self._supervisor(spec)
        rec = previous.get(name) if isinstance(previous, dict) else None
        child = (
            Child.adopt(spec, int(rec["pid"]), create_time=float(rec["create_time"]))
            if isinstance(rec, dict)
            else None
        )
        self.sups[name] = sup
        if child is not None:
            sup.adopt(child)
            adopted.append(name)
        else:
            self._check_port(name)
            started.append(name)
        sup.start()

    def _check_api_port(self) -> None:
        listen = self.manifest.control.listen
        why = _port_free(listen)
        if why:
            raise UsageError(
                f"the control API cannot listen on {listen}: {why} (is another `bastion up` "
                f"or another program on that port?); stop it, or change control.listen in "
                f"{self.path}"
            )

    def _check_port(self, child: str) -> None:
        if not child.startswith("serve:"):
            return
        name = child.split(":", 1)[1]
        listen = self.manifest.services[name].listen
        why = _port_free(listen)
        if why:
            raise UsageError(
                f"service {name!r} cannot listen on {listen}: {why} (is another program, or "
                f"another `bastion serve`, on that port?); stop it, or change "
                f"services.{name}.listen in {self.path}"
            )

    def _start_api(self) -> None:
        from bastion.control._api import ApiServer

        self.api = ApiServer(self)
        self.api_url = self.api.start()

    def wait_ready(self, timeout_s: float = 120.0) -> float:
        """Block until every gateway answers ``/healthz`` (seconds it took); a child that
        failed (exit 2) is a ``UsageError`` with the end of its log."""
        t0 = time.monotonic()
        deadline = t0 + timeout_s
        while True:
            pending = []
            for name, sup in list(self.sups.items()):
                if sup.finished:
                    log = sup.child.spec.log_path if sup.child else None
                    raise UsageError(
                        f"{name} did not start: {sup.reason}"
                        + (f"; its log {log} ends: {_log_tail(log)}" if log else "")
                    )
                if name.startswith("serve:"):
                    listen = self.manifest.services[name.split(":", 1)[1]].listen
                    if not _gateway_ok(listen):
                        pending.append(name)
            if not pending:
                took = time.monotonic() - t0
                self.phase = "ready"
                self.log.emit(ek.CONTROL_UP_READY, self.manifest.system, seconds=round(took, 3))
                self._save_state()
                return took
            if time.monotonic() > deadline:
                raise UsageError(
                    f"not healthy within {timeout_s:g} s: {', '.join(pending)}; see their logs "
                    f"in {self.files.logs}"
                )
            time.sleep(0.02)  # a refused /healthz costs little; readiness is what `up` waits on

    def request_reload(self) -> None:
        """Ask for a reload from a signal handler; the loop in ``run`` does it."""
        self._reload_requested.set()

    def run(self, stop: threading.Event) -> None:
        """Keep things going until ``stop``: reloads, the scrub schedule, drill jobs."""
        while not stop.is_set():
            if self._reload_requested.is_set():
                self._reload_requested.clear()
                self.reload()
            self._tick_scrub()
            self._tick_jobs()
            stop.wait(0.1)

    def serve_forever(self) -> None:
        """The CLI's loop: SIGTERM/SIGINT stop everything, SIGHUP reloads."""
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        signal.signal(signal.SIGINT, lambda *_: stop.set())
        signal.signal(signal.SIGHUP, lambda *_: self.request_reload())
        try:
            self.run(stop)
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop every child (SIGTERM, grace, SIGKILL), then the API; forget the pids."""
        self.phase = "stopping"
        self._save_state()
        sups = list(self.sups.values())
        for sup in sups:
            sup.request_stop()
        for sup in sups:
            sup.stop(timeout=60)
        if self.scrub is not None and self.scrub.child is not None:
            self.scrub.child.terminate(10.0)
        for child in self._job_children.values():
            child.terminate(10.0)
        self.sups.clear()
        self._write_children()
        self.log.emit(ek.CONTROL_UP_STOPPED, self.manifest.system)
        self.phase = "stopped"
        self._save_state()
        self.close()

    def close(self) -> None:
        if self.api is not None:
            self.api.stop()
            self.api = None
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                self.files.pid.unlink()
            os.close(self._lock_fd)
            self._lock_fd = None
        self.log.close()

    # -- state ---------------------------------------------------------------------------
    def _save_state(self) -> None:
        write_private_json(
            self.files.state,
            {
                "pid": os.getpid(),
                "phase": self.phase,
                "started_at": self.started_at,
                "generation": self.generation,
                "last_reload": self.last_reload,
                "api": self.api_url,
                "manifest": str(self.path),
                "scrub": self.scrub_statistics(),
            },
        )

    def scrub_statistics(self) -> dict[str, Any] | None:
        if self.scrub is None:
            return None
        s = self.scrub
        return {
            "every_s": s.every_s,
            "max_seconds": s.max_seconds,
            "running": s.child is not None and s.child.exit is None,
            "runs": s.runs,
            "next_in_s": round(max(0.0, s.next_at - time.monotonic()), 1),
            "last": s.last,
        }

    # -- the scheduled scrub ---------------------------------------------------------------
    def _tick_scrub(self) -> None:
        s = self.scrub
        if s is None:
            return
        if s.child is not None:
            exit_ = s.child.poll()
            if exit_ is None:
                return
            s.last = {"code": exit_.code, "seconds": round(exit_.runtime_s, 3), "at": time.time()}
            self.log.emit(ek.CONTROL_SCRUB_FINISHED, "vault", **s.last)
            s.child = None
            self._write_children()
            self._save_state()
        if time.monotonic() < s.next_at:
            return
        s.next_at = time.monotonic() + s.every_s
        s.runs += 1
        spec = ProcessSpec(
            argv=[
                *_BASTION,
                "vault",
                "scrub",
                "--max-seconds",
                f"{s.max_seconds:g}",
                "--json",
                "-f",
                str(self.path),
            ],
            name="scrub",
            log_path=self.files.logs / "scrub.log",
        )
        s.child = Child(spec)
        self._write_children()
        self._save_state()

    # -- drills started from the API -------------------------------------------------------
    def start_drill(self, experiment: Path) -> dict[str, Any]:
        """Run ``bastion drill run EXPERIMENT`` as a child; its journal in the state dir."""
        with self._mutex:
            self._next_job += 1
            job = f"drill-{int(time.time())}-{self._next_job}"
            journal = self.files.root / "drills" / f"{job}.json"
            journal.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            spec = ProcessSpec(
                argv=[
                    *_BASTION,
                    "drill",
                    "run",
                    str(experiment),
                    "-f",
                    str(self.path),
                    "--journal",
                    str(journal),
                    "--no-live",
                ],
                name=job,
                log_path=self.files.logs / f"{job}.log",
            )
            self._job_children[job] = Child(spec)
            self.jobs[job] = {
                "id": job,
                "kind": "drill",
                "experiment": str(experiment),
                "journal": str(journal),
                "state": "running",
                "code": None,
                "started_at": time.time(),
            }
            return dict(self.jobs[job])

    def _tick_jobs(self) -> None:
        with self._mutex:
            for job, child in list(self._job_children.items()):
                exit_ = child.poll()
                if exit_ is not None:
                    self.jobs[job].update(state="passed" if exit_.ok else "failed", code=exit_.code)
                    del self._job_children[job]

    # -- actions ---------------------------------------------------------------------------
    def restart(self, child: str) -> None:
        """Stop a child politely and start it again at once (asked for, so it spends no
        restart budget and waits no backoff: ``Supervisor.request_restart``)."""
        sup = self.sups.get(child)
        if sup is None or sup.child is None or sup.child.exit is not None:
            raise CheckFailed(
                f"{child} is not running under this `bastion up` now (see /api/system); "
                "try again once it is"
            )
        sup.request_restart("restart asked for through the control API")

    # -- reload --------------------------------------------------------------------------
    def reload(self) -> dict[str, Any]:
        """Apply the manifest file as it is now; all of it, or nothing (see the module)."""
        with self._mutex:
            try:
                result = self._reload()
            except BastionError as exc:
                result = {"ok": False, "error": str(exc)}
            self.generation += 1
            result["generation"] = self.generation
            result["at"] = time.time()
            self.last_reload = result
            self.log.emit(
                ek.CONTROL_RELOAD_APPLIED if result["ok"] else ek.CONTROL_RELOAD_FAILED,
                self.manifest.system,
                **result,
            )
            self._save_state()
            return result

    def _reload(self) -> dict[str, Any]:
        from bastion.serve.runner import reload_plan

        raw = self.path.read_bytes()
        new = load(self.path)  # a ManifestError (located) leaves everything as it was
        if new.state_dir != self.manifest.state_dir:
            raise UsageError(
                f"state_dir changed ({self.manifest.state_dir} -> {new.state_dir}): a reload "
                "cannot move the running system; `bastion down`, then `bastion up`"
            )
        if new.control.listen != self.manifest.control.listen:
            raise UsageError(
                f"control.listen changed ({self.manifest.control.listen} -> "
                f"{new.control.listen}): the API does not move on a reload; `bastion down`, "
                "then `bastion up` (nothing was changed)"
            )
        digest = hashlib.sha256(raw).hexdigest()
        old = self.manifest
        wanted = self._wanted(new)
        added = [n for n in wanted if n not in self.sups]
        removed = [n for n in self.sups if n not in wanted]
        in_place, restart = [], []
        for name in old.services.keys() & new.services.keys():
            plan, _why = reload_plan(old.services[name], new.services[name])
            if plan == "same" and _objectives_of(old, name) != _objectives_of(new, name):
                plan = "in_place"  # its gateway's SLO evaluator takes the new objectives
            if plan == "in_place":
                in_place.append(f"serve:{name}")
            elif plan == "restart":
                restart.append(f"serve:{name}")
        # check what could fail before changing anything
        for child in added:
            if child.startswith("serve:"):
                name = child.split(":", 1)[1]
                listen = new.services[name].listen
                why = _port_free(listen)
                if why:
                    raise UsageError(
                        f"new service {name!r} cannot listen on {listen}: {why}; free the "
                        f"port or change services.{name}.listen in {self.path} (nothing "
                        "was changed)"
                    )
        for child in restart:
            name = child.split(":", 1)[1]
            if old.services[name].listen != new.services[name].listen:
                listen = new.services[name].listen
                why = _port_free(listen)
                if why:
                    raise UsageError(
                        f"service {name!r} cannot move to {listen}: {why} (nothing was changed)"
                    )
        # in place first: those gateways keep answering while they change
        slos = {}
        for child in in_place:
            slos[child] = self._reload_child(child, digest)
        self.manifest = new
        for child in removed:
            sup = self.sups.pop(child)
            sup.stop(timeout=60)
        for child in restart:
            sup = self.sups.pop(child)
            sup.stop(timeout=60)
            self.sups[child] = self._supervisor(wanted[child])
            self.sups[child].start()
        for child in added:
            self.sups[child] = self._supervisor(wanted[child])
            self.sups[child].start()
        if new.control.scrub != old.control.scrub:
            running = self.scrub.child if self.scrub is not None else None
            sched = new.control.scrub
            self.scrub = (
                _Scrub(sched.every_s, sched.max_seconds, time.monotonic() + sched.first_after_s)
                if sched is not None and self._has_vault(new)
                else None
            )
            if self.scrub is not None:
                self.scrub.child = running  # a scrub under way finishes its budget
            elif running is not None:
                running.terminate(10.0)
        self._write_children()
        started = [c for c in (*restart, *added) if c.startswith("serve:")]
        self._wait_children(started)
        return {
            "ok": True,
            "digest": digest,
            "added": added,
            "removed": removed,
            "reloaded": in_place,
            "restarted": restart,
            "slos": slos,
        }

    def _reload_child(self, child: str, digest: str) -> list[str]:
        """SIGHUP one gateway and wait for its acknowledgement; the SLO ids it now
        evaluates."""
        sup = self.sups[child]
        ack = self.files.ack(child)
        with contextlib.suppress(FileNotFoundError):
            ack.unlink()
        if sup.child is None or not sup.child.signal(signal.SIGHUP):
            raise UsageError(f"{child} is not running, so it cannot reload; see `bastion status`")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            doc = read_json(ack)
            if isinstance(doc, dict):
                if not doc.get("ok"):
                    raise UsageError(f"{child} refused the reload: {doc.get('error')}")
                if doc.get("digest") != digest:
                    raise UsageError(
                        f"{child} read a different manifest (the file changed during the "
                        "reload); run `bastion reload` again"
                    )
                return [str(i) for i in doc.get("slos") or []]
            time.sleep(0.02)
        raise UsageError(f"{child} did not acknowledge the reload within 60 s")

    def _wait_children(self, children: list[str]) -> None:
        deadline = time.monotonic() + 120
        for child in children:
            listen = self.manifest.services[child.split(":", 1)[1]].listen
            sup = self.sups[child]
            while not _gateway_ok(listen):
                if sup.finished:
                    log = sup.child.spec.log_path if sup.child else None
                    raise UsageError(
                        f"{child} did not start: {sup.reason}"
                        + (f"; its log ends: {_log_tail(log)}" if log else "")
                    )
                if time.monotonic() > deadline:
                    raise UsageError(f"{child} did not answer within 120 s")
                time.sleep(0.05)

    # -- statistics ------------------------------------------------------------------------
    def children(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name, sup in list(self.sups.items()):
            st = sup.statistics()
            out[name] = {
                "state": st.state,
                "pid": st.child.pid if st.child and st.child.running else None,
                "restarts": st.restarts,
                "uptime_s": st.child.uptime_s if st.child and st.child.running else 0.0,
                "reason": st.reason,
            }
        return out


def status(manifest: Manifest) -> dict[str, Any]:
    """What runs for this manifest's state directory, whether ``bastion up`` runs or not:
    the control process, each recorded child (alive by pid and start time) and each
    service's gateway (does it answer ``/healthz``)."""
    files = UpFiles(manifest.state_dir)
    pid = files.running_pid()
    state = read_json(files.state) or {}
    recorded = read_json(files.children) or {}
    children = {}
    for name, rec in recorded.items() if isinstance(recorded, dict) else []:
        if not isinstance(rec, dict):
            continue
        alive = (
            Child.adopt(
                ProcessSpec(argv=rec.get("argv") or ["?"], name=name),
                int(rec["pid"]),
                create_time=float(rec["create_time"]),
            )
            is not None
        )
        children[name] = {"pid": int(rec["pid"]), "running": alive}
    services = {
        name: {"listen": svc.listen, "healthy": _gateway_ok(svc.listen, timeout=0.5)}
        for name, svc in manifest.services.items()
    }
    return {
        "system": manifest.system,
        "up": {
            "running": pid is not None,
            "pid": pid,
            "phase": state.get("phase") if pid is not None else "stopped",
            "api": state.get("api") if pid is not None else None,
            "generation": state.get("generation", 0),
            "last_reload": state.get("last_reload"),
        },
        "children": children,
        "services": services,
        "healthy": pid is not None and all(s["healthy"] for s in services.values()),
    }


def down(manifest: Manifest, *, timeout_s: float = 90.0) -> dict[str, Any]:
    """Stop ``bastion up`` (SIGTERM: it stops its children) and then any recorded child
    still running (when ``bastion up`` had been killed). Returns what was stopped."""
    files = UpFiles(manifest.state_dir)
    pid = files.running_pid()
    stopped_up = False
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while files.running_pid() is not None:
            if time.monotonic() > deadline:
                raise UsageError(
                    f"`bastion up` (pid {pid}) did not stop within {timeout_s:g} s; see "
                    f"{files.logs}"
                )
            time.sleep(0.05)
        stopped_up = True
    leftovers = []
    recorded = read_json(files.children) or {}
    for name, rec in recorded.items() if isinstance(recorded, dict) else []:
        if not isinstance(rec, dict):
            continue
        child = Child.adopt(
            ProcessSpec(argv=rec.get("argv") or ["?"], name=name),
            int(rec["pid"]),
            create_time=float(rec["create_time"]),
        )
        if child is not None:
            child.terminate(15.0)
            leftovers.append(name)
    write_private_json(files.children, {})
    return {"up": pid if stopped_up else None, "children_stopped": leftovers}
