"""Ray worker slots: a training job's worker on a node of a Ray cluster.

Owns: ``RaySlot`` (the ``WorkerSlot`` of ``backend: ray``), ``RayChild`` (a
``supervise.Child`` whose process runs on a Ray node), ``WorkerHost`` (the detached Ray
actor that starts that process on its node and answers for it), and stopping a run's
actors that a killed driver left behind.

The seam is as narrow as it could be made. The actor starts the job's own command as a
subprocess on its node, so the training script, its heartbeat file, SIGTERM's emergency
checkpoint and the vault it checkpoints to are exactly what they are on one machine;
the supervisor keeps its whole state machine (heartbeat timeout, grace, SIGKILL,
backoff, budget) and only talks to a ``RayChild`` instead of a local pid:

- ``poll()``: a watcher thread asks the actor for the process's status every
  ``poll_s``; the actor's own heartbeat file (on its node) comes back with it and is
  mirrored into the job's local heartbeat file (content, and the beat's age as mtime),
  so hang detection, ``exiting`` notes and steps lost read the same file as for a local
  worker. The job's log comes back the same way.
- ``signal(sig)``: sent to the process group on the node by the actor.
- node loss: the actor dies with its node, Ray raises ``RayActorError`` on the next
  status call (as soon as the GCS marks the node dead: at once for a drained node,
  after its health checks for a crashed one, ``health_check_period_ms`` x
  ``health_check_failure_threshold``, 3 s x 5 by default), and the child exits as
  ``gone``: the supervisor restarts it with its backoff on another alive node that has
  the job's resources (``NodeAffinitySchedulingStrategy(soft=False)``, never the lost
  node). No collective is involved, so no 30-minute NCCL/gloo timeout (ray#22349).
  A node that stops answering without being declared dead stops the mirrored heartbeat,
  and the usual hang path (SIGTERM, grace, SIGKILL, which kills the actor) takes over.

Actors are detached and named from the job (``train.<job>.<digest of the state
directory>.<run>.<attempt>``, namespace ``bastion``), so a worker outlives a killed
driver as a local worker outlives a killed supervisor, and the next driver finds it by
that name and stops it politely (its emergency checkpoint), then resumes from the newest
verified checkpoint in the vault, as on one machine. The subprocess dies with its actor
(``PR_SET_PDEATHSIG``, armed from the actor's thread that waits for it).

Starting an attempt waits, in the supervisor's thread, for the actor to answer (up to
60 s: Ray starts a worker process on the node first); an actor that cannot be placed
in that time is a lost attempt, restarted with the backoff. There is no warm standby on
a Ray node, so a restart pays the interpreter's and torch's start-up there.

What a node needs: the job's command, working directory, manifest, state directory
and vault replicas at the same paths as the driver (a shared file system, or replicas
that are shared, e.g. S3, with the event log on PostgreSQL). On one machine
(``ray.cluster_utils.Cluster``, the tests) they are the same files.

Must never: import ray before a Ray slot is used (``bastion[ray]`` is optional), kill
an actor whose process may still run without first asking it to stop (its emergency
checkpoint) unless it cannot be reached, or place a worker on a node Ray says is dead.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal as _signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bastion.errors import UnavailableError, UsageError
from bastion.supervise import HEARTBEAT_ENV, Child, Exit, ProcessSpec
from bastion.supervise._child import _die_with_parent
from bastion.supervise._ray import NAMESPACE, join

__all__ = ["NAMESPACE", "RayChild", "RaySlot", "WorkerHost", "connect", "run_name", "stop_orphans"]


def _api() -> Any:
    """``ray``, typed ``Any``: its own annotations are partial, and mypy strict would
    need a cast at every call."""
    import ray

    return ray


def connect(address: str, *, where: str) -> Any:
    """Join the Ray cluster at ``address`` (``supervise._ray.join``) and return ``ray``."""
    return join(address, where=where)


def run_name(job: str, state_dir: str | Path) -> str:
    """The prefix of every actor name of ``job`` (deterministic: a restarted driver with
    the same manifest finds them)."""
    digest = hashlib.sha256(str(Path(state_dir).resolve()).encode()).hexdigest()[:8]
    return f"train.{job}.{digest}"


class WorkerHost:
    """The Ray actor on a node: starts one process there and answers for it.

    Its methods never block for long (``stop`` blocks up to its grace period), and the
    actor runs them concurrently (``max_concurrency``), so a status call is answered
    while a stop is waiting."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="bastion-ray-worker-"))
        self.heartbeat = self.dir / "heartbeat"
        self.log = self.dir / "job.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.rc: int | None = None
        self.error: str | None = None
        self.reset_ns = 0
        self._done = threading.Event()

    def start(self, argv: list[str], cwd: str | None, env: dict[str, str]) -> dict[str, Any]:
        ray = _api()
        self.heartbeat.write_bytes(b"")
        self.reset_ns = self.heartbeat.stat().st_mtime_ns
        full = {**os.environ, **env, HEARTBEAT_ENV: str(self.heartbeat)}
        ready = threading.Event()
        # The process is forked by a thread that lives exactly as long as it does (it
        # waits for it): PR_SET_PDEATHSIG fires when the forking *thread* ends, so the
        # process dies with this actor (a lost node, ray.kill) and never outlives it.
        thread = threading.Thread(
            target=self._run, args=(argv, cwd, full, ready), name="bastion-worker", daemon=True
        )
        thread.start()
        ready.wait(60.0)
        ctx = ray.get_runtime_context()
        return {
            "pid": self.proc.pid if self.proc else 0,
            "error": self.error,
            "node": ctx.get_node_id(),
            "node_ip": ray.util.get_node_ip_address(),
            "created": time.time(),
        }

    def _run(
        self, argv: list[str], cwd: str | None, env: dict[str, str], ready: threading.Event
    ) -> None:
        try:
            with self.log.open("ab") as out:
                self.proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(),  # noqa: PLW1509
                )
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc.strerror or exc}"
            ready.set()
            self._done.set()
            return
        ready.set()
        self.rc = self.proc.wait()
        self._done.set()

    def status(self, log_offset: int) -> dict[str, Any]:
        beat = b""
        age: float | None = None
        beaten = False
        with contextlib.suppress(OSError):
            st = self.heartbeat.stat()
            beat = self.heartbeat.read_bytes()[:64]
            age = max(0.0, time.time() - st.st_mtime)  # this node's clock, as mtime is
            beaten = st.st_mtime_ns > self.reset_ns
        log = b""
        with contextlib.suppress(OSError), self.log.open("rb") as f:
            f.seek(log_offset)
            log = f.read(256 * 1024)
        return {
            "rc": self.rc,
            "error": self.error,
            "heartbeat": beat,
            "age": age,
            "beaten": beaten,
            "log": log,
        }

    def signal(self, sig: int) -> bool:
        if self.proc is None or self.rc is not None:
            return False
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, grace_s: float) -> str:
        """SIGTERM (+SIGCONT), ``grace_s``, SIGKILL; what happened (``exited``: it was
        not running, ``stopped``, ``killed``)."""
        if self.proc is None or self.rc is not None:
            return "exited"
        self.signal(_signal.SIGTERM)
        self.signal(_signal.SIGCONT)
        if self._done.wait(grace_s):
            return "stopped"
        self.signal(_signal.SIGKILL)
        self._done.wait(30.0)
        return "killed"


class RayChild(Child):
    """A ``Child`` whose process runs on a Ray node, under a ``WorkerHost`` actor."""

    local = False

    def __init__(
        self,
        spec: ProcessSpec,
        *,
        heartbeat_path: Path | None,
        extra_env: Mapping[str, str],
        actor_name: str,
        node: str,
        options: Mapping[str, Any],
        on_lost: Any = None,
        poll_s: float = 0.25,
        start_timeout_s: float = 60.0,
        call_timeout_s: float = 5.0,
    ) -> None:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = _api()

        self.spec = spec
        self.heartbeat_path = heartbeat_path
        self.is_standby = False
        self.ready_path = None
        self._oom_before = None
        self._log = None
        self._proc = None  # type: ignore[assignment]  # the process is on another node
        self.exit: Exit | None = None
        self.pid = 0
        self.actor_name = actor_name
        self.node = node
        self.node_ip = ""
        #: why the child was lost (its node or actor died, or it could not start)
        self.lost: str | None = None
        self.lost_ns: int | None = None
        self.poll_s = poll_s
        self.call_timeout_s = call_timeout_s
        self._on_lost = on_lost
        self._beaten = False
        self._stop = threading.Event()
        self._created = time.time()
        self._reset_heartbeat()
        self.started_mono = time.monotonic()
        host = ray.remote(WorkerHost).options(
            name=actor_name,
            namespace=NAMESPACE,
            lifetime="detached",  # outlives a killed driver, as a local worker does
            max_restarts=0,  # a restart is the supervisor's decision, with its backoff
            max_concurrency=4,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False),
            **options,
        )
        self._actor = host.remote()
        env = {**spec.env, **extra_env}
        try:
            info = ray.get(
                self._actor.start.remote(list(spec.argv), str(spec.cwd) if spec.cwd else None, env),
                timeout=start_timeout_s,
            )
        except Exception as exc:
            self._lose(f"could not start on node {node}: {type(exc).__name__}: {exc}")
            return
        if info.get("error"):
            self._kill_actor()
            raise UsageError(
                f"{spec.name}: command {spec.argv[0]!r} could not start on Ray node "
                f"{node} ({info['error']}); check the job's command, working directory "
                "and that they exist on every node"
            )
        self.pid = int(info["pid"])
        self.node_ip = str(info.get("node_ip", ""))
        self._created = float(info.get("created", self._created))
        self._watcher = threading.Thread(
            target=self._watch, name=f"bastion-ray-{spec.name}", daemon=True
        )
        self._watcher.start()

    # -- what the supervisor calls ---------------------------------------------------------
    def placement(self) -> dict[str, Any]:
        return {
            "backend": "ray",
            "node": self.node,
            "node_ip": self.node_ip,
            "actor": self.actor_name,
        }

    @property
    def create_time(self) -> float:
        return self._created

    def poll(self) -> Exit | None:
        return self.exit

    def wait(self, timeout: float | None = None) -> Exit | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.exit is None:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            self._stop.wait(min(self.poll_s, left) if left is not None else self.poll_s)
        return self.exit

    def first_beat_seen(self) -> bool:
        return self._beaten

    def signal(self, sig: int) -> bool:
        """Send ``sig`` to the process group on its node. SIGKILL waits for the actor's
        answer; an actor that does not answer is killed (with it, the process)."""
        if self.exit is not None:
            return False
        ray = _api()
        ref = self._actor.signal.remote(sig)
        if sig != _signal.SIGKILL:
            return True  # the watcher sees the exit; actor calls keep their order
        try:
            return bool(ray.get(ref, timeout=self.call_timeout_s))
        except Exception as exc:
            self._lose(f"actor did not answer SIGKILL ({type(exc).__name__}); killed it")
            return True

    # -- the watcher ----------------------------------------------------------------------
    def _watch(self) -> None:
        from ray.exceptions import GetTimeoutError, RayActorError, RayError

        ray = _api()

        offset = 0
        while self.exit is None:
            try:
                st = ray.get(self._actor.status.remote(offset), timeout=self.call_timeout_s)
            except GetTimeoutError:
                continue  # silent: the mirrored heartbeat goes stale, the hang path acts
            except RayActorError as exc:
                self._lose(self._why_dead(exc))
                return
            except RayError as exc:
                self._lose(f"{type(exc).__name__}: {exc}")
                return
            offset += self._append_log(st["log"])
            self._mirror(st)
            if st["rc"] is not None:
                self._finish(int(st["rc"]))
                self._kill_actor()
                return
            self._stop.wait(self.poll_s)

    def _why_dead(self, exc: Exception) -> str:
        ray = _api()
        with contextlib.suppress(Exception):
            for n in ray.nodes():
                if n.get("NodeID") == self.node and not n.get("Alive"):
                    return f"node {self.node} ({self.node_ip}) is dead"
        return f"actor {self.actor_name} died: {str(exc).splitlines()[0][:200]}"

    def _mirror(self, st: Mapping[str, Any]) -> None:
        if self.heartbeat_path is None or not st.get("beaten") or st.get("age") is None:
            return
        try:
            fd = os.open(self.heartbeat_path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.pwrite(fd, bytes(st["heartbeat"]), 0)
            finally:
                os.close(fd)
            at = time.time() - float(st["age"])
            os.utime(self.heartbeat_path, (at, at))
        except OSError:
            return
        self._beaten = True

    def _append_log(self, chunk: bytes) -> int:
        if not chunk:
            return 0
        if self.spec.log_path is not None:
            with contextlib.suppress(OSError):
                self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
                with self.spec.log_path.open("ab") as out:
                    out.write(chunk)
        return len(chunk)

    def _lose(self, why: str) -> None:
        if self.exit is not None:
            return
        self.lost = why
        self.lost_ns = time.monotonic_ns()
        self._kill_actor()
        self.exit = Exit(
            code=None, signal=None, unknown=True, runtime_s=time.monotonic() - self.started_mono
        )
        self._stop.set()
        if self._on_lost is not None:
            self._on_lost(self)

    def _kill_actor(self) -> None:
        ray = _api()
        with contextlib.suppress(Exception):
            ray.kill(self._actor, no_restart=True)


class RaySlot:
    """A job's worker on a node of the Ray cluster at ``address`` that has
    ``resources``; the same node while it lives, another one after it is lost."""

    def __init__(
        self,
        name: str,
        address: str,
        resources: Mapping[str, float] | None = None,
        *,
        scratch: Path | None = None,
        where: str = "",
    ) -> None:
        self.name = name
        self.address = address
        self.resources = dict(resources or {}) or {"CPU": 1.0}
        self.scratch = scratch
        self.where = where or f"worker slot {name!r}"
        self.node: str | None = None
        #: nodes lost under this slot: never used again (a node's id is not reused)
        self.lost_nodes: set[str] = set()

    def preflight(self) -> None:
        """Refuse to start (``UsageError``, exit 2) without ray or a reachable cluster."""
        connect(self.address, where=self.where)

    def check(self) -> str | None:
        try:
            connect(self.address, where=self.where)
        except UsageError as exc:
            return str(exc)
        if not self.candidates():
            return (
                f"no alive Ray node at {self.address} has {self._wanted()} "
                f"(lost here: {len(self.lost_nodes)}); add a node or lower resources"
            )
        return None

    def env(self) -> dict[str, str]:
        out = {"BASTION_SLOT": self.name}
        if self.scratch is not None:
            out["BASTION_SCRATCH"] = str(self.scratch)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "backend": "ray",
            "address": self.address,
            "resources": dict(self.resources),
        }

    def _wanted(self) -> str:
        return ", ".join(f"{k}={v:g}" for k, v in sorted(self.resources.items()))

    def candidates(self) -> list[str]:
        """Alive nodes with every resource the job needs, this slot's node first."""
        ray = _api()
        out: list[str] = []
        for n in ray.nodes():
            have = n.get("Resources", {})
            if not n.get("Alive") or n["NodeID"] in self.lost_nodes:
                continue
            if all(have.get(k, 0.0) >= v for k, v in self.resources.items()):
                out.append(n["NodeID"])
        out.sort(key=lambda node: node != self.node)
        return out

    def _options(self) -> dict[str, Any]:
        rest = dict(self.resources)
        opts: dict[str, Any] = {"num_cpus": rest.pop("CPU", 0.0), "num_gpus": rest.pop("GPU", 0.0)}
        if "memory" in rest:
            opts["memory"] = rest.pop("memory")
        if rest:
            opts["resources"] = rest
        return opts

    def launch(
        self, spec: ProcessSpec, heartbeat_path: Path | None, env: Mapping[str, str]
    ) -> RayChild:
        from bastion.train._env import ENV_JOB, ENV_RUN_ID, ENV_STATE_DIR

        nodes = self.candidates()
        if not nodes:
            raise UnavailableError(
                f"{self.where}: no alive Ray node at {self.address} has {self._wanted()}; "
                "add a node or lower resources"
            )
        self.node = nodes[0]
        prefix = run_name(spec.env.get(ENV_JOB, spec.name), spec.env.get(ENV_STATE_DIR, "."))
        actor = f"{prefix}.{spec.env.get(ENV_RUN_ID, 'run')}.{env.get('BASTION_ATTEMPT', '1')}"
        return RayChild(
            spec,
            heartbeat_path=heartbeat_path,
            extra_env=env,
            actor_name=actor,
            node=self.node,
            options=self._options(),
            on_lost=self._lost,
        )

    def _lost(self, child: RayChild) -> None:
        if child.lost is not None and child.lost.startswith("node "):
            self.lost_nodes.add(child.node)
            if self.node == child.node:
                self.node = None


def stop_orphans(prefix: str, grace_s: float) -> list[tuple[str, str]]:
    """Stop every actor named under ``prefix`` (a killed driver's workers): SIGTERM, so
    each writes its emergency checkpoint, ``grace_s``, SIGKILL; then the actor. Returns
    ``(actor, outcome)`` pairs; outcome as ``WorkerHost.stop``, or ``gone``."""
    ray = _api()
    out: list[tuple[str, str]] = []
    names = sorted(
        a["name"]
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a.get("namespace") == NAMESPACE and str(a.get("name", "")).startswith(prefix + ".")
    )
    for name in names:
        outcome = "gone"
        try:
            actor = ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            out.append((name, outcome))
            continue
        with contextlib.suppress(Exception):
            outcome = str(ray.get(actor.stop.remote(grace_s), timeout=grace_s + 35.0))
        with contextlib.suppress(Exception):
            ray.kill(actor, no_restart=True)
        out.append((name, outcome))
    return out
