"""The experiment runner: Chaos Toolkit's runner, with Bastion's faults, scope and measurements.

Owns: loading an experiment (Chaos Toolkit's format, YAML or JSON, plus an ``extensions``
entry named ``bastion``), running it with chaoslib's ``Runner`` in continuous-hypothesis
mode (the steady state is checked before, every ``frequency_s`` during, and after the
method), turning each steady-state sample into ``drill.steady_state.broken`` /
``drill.steady_state.restored`` events, and writing the journal with a ``bastion``
section: measurements read from those events, targets met or missed, what was aborted,
refused or reverted by the safety net.

Why chaoslib: people who run chaos experiments already know its format, and its runner
already has continuous hypotheses, background activities, rollbacks and controls. What
it lacks (scope, RTO/RPO read from events, a safety net that reverts whatever is left)
is what this module adds around it.

The ``bastion`` extension::

    extensions:
      - name: bastion
        scope: {paths: [data], ports: [8801], pids: []}   # relative to the experiment
        manifest: ../bastion.yaml                          # use the system's event log
        free_ports: [web_port]                             # picked now, usable as ${web_port}
        setup: [[python, -m, bastion, vault, protect, data, --name, dataset/x]]  # must exit 0
        processes:                                         # started before the run, in scope
          web: {command: [python, -m, http.server, "${web_port}"], ready_port: "${web_port}"}
          api: {command: [python, -m, bastion, serve], ready_url: /healthz, ready_port: 8700}
          guard: {command: [python, -m, bastion, vault, guard], ready_event: vault.guard.started}
        upstreams: {vendor-b: {port: 8801}}                # OpenAI-compatible fault upstreams
        proxies: {db: {upstream_port: 8900, listen_port: 8901}}  # TCP fault proxies
        detect: [vault.guard.*, train.restarted]           # events that count as detection
        targets: {rto_s: 30, time_to_detect_s: 2, files_lost: 0}
        frequency_s: 0.5                                   # steady-state sampling period
        seed: 1234

Exit codes: 0 the steady state held or came back and every target was met; 1 it broke
and never recovered, deviated, was aborted, or missed a target; 2 the experiment is
invalid or a fault was pointed outside the scope.

Must never: leave a fault injected after the run (the safety net reverts it and says so);
run two drills at once in one process; run off the main thread (Chaos Toolkit interrupts
a run with signals, which only the main thread receives).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion import event_kinds as ek
from bastion.drill import control
from bastion.drill.context import DrillContext, activate, current
from bastion.drill.faults import Scope
from bastion.drill.measure import check_targets, measure
from bastion.errors import ScopeError, UsageError
from bastion.events import EventLog, add_secret, redact

if TYPE_CHECKING:
    from bastion.drill.kpi import KpiComparison
    from bastion.manifest import Manifest

__all__ = [
    "DrillResult",
    "bastion_settings",
    "load_experiment",
    "raise_for_refusals",
    "run_experiment",
    "validate",
]

_Update = Callable[[str, dict[str, Any]], None]


@dataclass
class DrillResult:
    """What a drill found. ``exit_code`` follows Bastion's convention (0, 1, 2)."""

    title: str
    status: str
    exit_code: int
    measurements: dict[str, Any]
    journal: dict[str, Any]
    journal_path: Path | None
    problems: list[str] = field(default_factory=list)
    aborted: str | None = None


def load_experiment(path: str | Path) -> dict[str, Any]:
    """Read and validate an experiment file (YAML or JSON); ``UsageError`` names the
    file and the problem."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"experiment {path} does not exist; give the path to a .yaml or .json")
    text = path.read_text()
    try:
        if path.suffix == ".json":
            experiment = json.loads(text)
        else:
            from ruamel.yaml import YAML

            experiment = _plain(YAML(typ="safe").load(text))
    except Exception as exc:
        raise UsageError(f"{path}: not valid {path.suffix.lstrip('.') or 'YAML'}: {exc}") from None
    if not isinstance(experiment, dict):
        raise UsageError(f"{path}: an experiment is a mapping with title, method, ...")
    validate(experiment, where=str(path))
    return experiment


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def validate(experiment: dict[str, Any], *, where: str = "experiment") -> None:
    from chaoslib.exceptions import ChaosException
    from chaoslib.experiment import ensure_experiment_is_valid

    for key, kind in (("title", str), ("method", list)):
        if not isinstance(experiment.get(key), kind):
            raise UsageError(
                f"{where}: `{key}` must be a {'string' if kind is str else 'list of activities'}"
                " (Chaos Toolkit's experiment format)"
            )
    for key in ("rollbacks", "controls", "extensions"):
        if key in experiment and not isinstance(experiment[key], list):
            raise UsageError(f"{where}: `{key}` must be a list")
    hypo = experiment.get("steady-state-hypothesis")
    if hypo is not None and not (
        isinstance(hypo, dict) and isinstance(hypo.get("probes", []), list)
    ):
        raise UsageError(f"{where}: `steady-state-hypothesis` must have a title and a probes list")
    try:
        ensure_experiment_is_valid(experiment)
    except (ChaosException, TypeError, AttributeError, KeyError, ValueError) as exc:
        raise UsageError(
            f"{where}: {exc} (see chaostoolkit.org/reference/api/experiment)"
        ) from None


def bastion_settings(experiment: dict[str, Any]) -> dict[str, Any]:
    for ext in experiment.get("extensions", []) or []:
        if isinstance(ext, dict) and ext.get("name") == "bastion":
            return ext
    return {}


def _ready_url(name: str, spec: dict[str, Any]) -> str | None:
    """``ready_url`` as a full URL: a path alone (``/healthz``) is on ``ready_port``."""
    url = spec.get("ready_url")
    if url is None:
        return None
    url = str(url)
    if url.startswith("/"):
        port = spec.get("ready_port")
        if port is None:
            raise UsageError(
                f"drill setup: process {name!r}: ready_url {url!r} is a path; give ready_port "
                "too, or a whole URL (http://127.0.0.1:PORT/healthz)"
            )
        return f"http://127.0.0.1:{int(port)}{url}"
    if not url.startswith(("http://", "https://")):
        raise UsageError(
            f"drill setup: process {name!r}: ready_url {url!r} is not an http:// URL or a path"
        )
    return url


def _gateway_ready(url: str, manifest: Manifest | None) -> tuple[bool, str]:
    """Whether the Bastion gateway at ``url``'s origin serves from its primary backends.

    A gateway's ``/healthz`` is liveness: it answers 200 while any backend, a fallback
    included, can take a request. A drill must not start its steady state on the fallback
    while the primary replicas are still loading, so for a Bastion gateway ready means:
    every primary backend (tier 0; the manifest's, when the drill knows the manifest) has
    an upstream that is up. Anything that is not a Bastion gateway is ready on a 2xx.
    """
    import urllib.parse
    import urllib.request

    parts = urllib.parse.urlsplit(url)
    status_url = f"{parts.scheme}://{parts.netloc}/bastion/status"
    try:
        with urllib.request.urlopen(status_url, timeout=1) as resp:  # noqa: S310 - loopback
            status = json.loads(resp.read())
        pool = status["pool"]
        upstreams = list(pool["upstreams"])
    except (OSError, ValueError, KeyError, TypeError):
        return True, ""  # not a Bastion gateway
    wanted: set[str] = set()
    service = manifest.services.get(str(status.get("service"))) if manifest else None
    if service is not None:
        wanted = {b.name for b in service.backends if b.tier_index == 0}
    else:
        wanted = {str(u.get("group") or u.get("name")) for u in upstreams if u.get("tier") == 0}
    if not wanted:
        return False, "no primary (tier 0) backend has started yet"

    def up(u: dict[str, Any]) -> bool:
        breaker = u.get("breaker") or {}
        return not u.get("needs_probe") and breaker.get("state", "closed") != "open"

    waiting = sorted(
        g
        for g in wanted
        if not any(up(u) and (u.get("group") or u.get("name")) == g for u in upstreams)
    )
    if waiting:
        return False, f"primary backend(s) not up yet: {', '.join(waiting)}"
    return True, ""


def _wait_ready(
    name: str, spec: dict[str, Any], proc: Any, manifest: Manifest | None = None
) -> None:
    """Wait (deadline, not sleep) until a started process answers on its ready port/URL."""
    import urllib.error
    import urllib.request

    port = spec.get("ready_port")
    url = _ready_url(name, spec)
    event = spec.get("ready_event")
    if port is None and url is None and event is None:
        return
    ctx = current()
    why = "it never answered"
    deadline = time.monotonic() + float(spec.get("ready_timeout_s", 30))
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log = current().events.path.parent / "drill" / f"{name}.log"
            raise UsageError(
                f"drill setup: process {name!r} exited with {proc.returncode} before it was "
                f"ready; check its command (its output is in {log})"
            )
        if event is not None:
            if ctx.events.query(kind=str(event), after_id=ctx.started_event_id):
                return
            threading.Event().wait(0.05)
            continue
        try:
            if url is not None:
                with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback
                    pass  # 2xx (urlopen raises HTTPError for the rest)
                ready, why = _gateway_ready(url, manifest)
                if ready:
                    return
            else:
                with socket.create_connection(("127.0.0.1", int(port or 0)), timeout=1):
                    return
        except urllib.error.HTTPError as exc:
            why = f"{url} answered {exc.code}"
        except OSError:
            pass
        threading.Event().wait(0.05)
    raise UsageError(
        f"drill setup: process {name!r} was not ready within the timeout ({why}); raise "
        "ready_timeout_s, or check its log"
    )


def _setup(
    ctx: DrillContext,
    settings: dict[str, Any],
    experiment: dict[str, Any],
    manifest: Manifest | None = None,
) -> None:
    """Start what the experiment declares (processes, upstreams, proxies) before the
    steady state is first checked; publish their ports as configuration values."""
    from bastion.drill import actions

    config = experiment.setdefault("configuration", {})
    for name in settings.get("free_ports") or []:
        # A free port for each name, published as ${name} (in commands and, through Chaos
        # Toolkit's configuration, in every activity's arguments) and put in scope.
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            config[str(name)] = int(sock.getsockname()[1])
        ctx.widen_port(config[str(name)])

    def fill(text: Any) -> Any:
        if not isinstance(text, str):
            return text
        for key, value in config.items():
            text = text.replace("${" + str(key) + "}", str(value))
        return int(text) if text.isdigit() else text

    for command in settings.get("setup") or []:
        # One-shot preparation (protect a directory, make a key): must exit 0.
        argv = [str(fill(c)) for c in command]
        argv = [sys.executable if argv[0] == "python" else argv[0], *argv[1:]]
        done = subprocess.run(
            argv, cwd=ctx.base, capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise UsageError(
                f"drill setup: {' '.join(command)} exited {done.returncode}: {' | '.join(tail)}"
            )
    for name, raw in (settings.get("processes") or {}).items():
        spec = {
            k: ([fill(c) for c in v] if isinstance(v, list) else fill(v)) for k, v in raw.items()
        }
        cwd = spec.get("cwd")
        env = spec.get("env")
        for key, value in (env or {}).items() if isinstance(env, dict) else ():
            if redact({str(key): "x"}) != {str(key): "x"}:  # a secret-looking name
                add_secret(str(value))  # hidden wherever it shows up: events, journal
        actions.start_process(
            str(name),
            [str(c) for c in spec["command"]],
            cwd=None if cwd is None else str(cwd),
            env=None if not isinstance(env, dict) else {str(k): str(v) for k, v in env.items()},
        )
        _wait_ready(str(name), spec, ctx.processes[str(name)], manifest)
        config[f"{name}_pid"] = ctx.processes[str(name)].pid
    for name, spec in (settings.get("upstreams") or {}).items():
        url = actions.start_upstream(str(name), port=int(fill((spec or {}).get("port", 0))))
        config[f"{name}_url"] = url
        config[f"{name}_port"] = ctx.upstreams[str(name)].port
    for name, spec in (settings.get("proxies") or {}).items():
        port = actions.start_proxy(
            str(name),
            int(fill(spec["upstream_port"])),
            listen_port=int(fill(spec.get("listen_port", 0))),
        )
        config[f"{name}_port"] = port


class _Handler:
    """Chaos Toolkit run events -> steady-state samples, drill.* events, live updates."""

    def __init__(self, ctx: DrillContext, on_update: _Update | None) -> None:
        self.ctx = ctx
        self.on_update = on_update
        self.previous: bool | None = None

    def _tell(self, what: str, **data: Any) -> None:
        if self.on_update is not None:
            self.on_update(what, data)

    def _sample(self, state: dict[str, Any] | None, phase: str) -> None:
        if state is None:
            return
        met = bool(state.get("steady_state_met"))
        sample = self.ctx.record_sample(met, phase)
        failing = [
            p["activity"].get("name", "?")
            for p in state.get("probes", [])
            if not p.get("tolerance_met")
        ]
        if self.previous is not False and not met and phase != "before":
            self.ctx.events.emit(
                ek.DRILL_STEADY_STATE_BROKEN, subject=self.ctx.subject, phase=phase, probes=failing
            )
        elif self.previous is False and met:
            self.ctx.events.emit(
                ek.DRILL_STEADY_STATE_RESTORED, subject=self.ctx.subject, phase=phase
            )
        self.previous = met
        self._tell("sample", met=met, phase=phase, mono_ns=sample.mono_ns, failing=failing)

    # chaoslib.run.RunEventHandler's interface (duck-typed; see EventHandlerRegistry)
    def started(self, experiment: Any, journal: Any) -> None:
        self._tell("phase", phase="started")

    def running(self, *args: Any) -> None: ...
    def finish(self, journal: Any) -> None: ...
    def interrupted(self, experiment: Any, journal: Any) -> None: ...
    def signal_exit(self) -> None: ...
    def start_continuous_hypothesis(self, frequency: int) -> None: ...
    def continuous_hypothesis_completed(self, *args: Any) -> None: ...
    def start_hypothesis_after(self, experiment: Any) -> None: ...
    def method_completed(self, *args: Any) -> None: ...
    def start_cooldown(self, duration: int) -> None: ...
    def cooldown_completed(self) -> None: ...

    def start_hypothesis_before(self, experiment: Any) -> None:
        self._tell("phase", phase="steady state before")

    def hypothesis_before_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._sample(state, "before")

    def continuous_hypothesis_iteration(self, iteration_index: int, state: Any) -> None:
        self._sample(state, "during")

    def hypothesis_after_completed(self, experiment: Any, state: Any, journal: Any) -> None:
        self._sample(state, "after")

    def start_method(self, experiment: Any) -> None:
        self.ctx.events.emit(ek.DRILL_METHOD_STARTED, subject=self.ctx.subject)
        self._tell("phase", phase="method")

    def start_rollbacks(self, experiment: Any) -> None:
        control.stop_watching()
        self.ctx.events.emit(ek.DRILL_ROLLBACKS_STARTED, subject=self.ctx.subject)
        self._tell("phase", phase="rollbacks")

    def rollbacks_completed(self, experiment: Any, journal: Any) -> None:
        self._tell("phase", phase="rollbacks done")

    def start_activity(self, activity: Any) -> None:
        self._tell("activity.start", name=activity.get("name", "?"), type=activity.get("type"))

    def activity_completed(self, activity: Any, run: Any) -> None:
        self._tell(
            "activity.done",
            name=activity.get("name", "?"),
            type=activity.get("type"),
            status=run.get("status"),
            output=run.get("output"),
        )


def _with_abort_control(experiment: dict[str, Any]) -> dict[str, Any]:
    """The experiment with Bastion's abort control declared (a divergence from the
    control twin aborts through it), unless it declares it already."""
    controls = list(experiment.get("controls") or [])
    if any((c.get("provider") or {}).get("module") == "bastion.drill.control" for c in controls):
        return experiment
    controls.append(
        {
            "name": "bastion-abort",
            "provider": {"type": "python", "module": "bastion.drill.control", "arguments": {}},
        }
    )
    return {**experiment, "controls": controls}


def _diverged_abort(reason: str) -> None:
    from bastion.drill.control import abort

    abort(f"the KPIs diverged from the control twin's: {reason}")


def run_experiment(
    experiment: str | Path | dict[str, Any],
    *,
    base: Path | None = None,
    state_dir: Path | None = None,
    journal_path: Path | None = None,
    seed: int | None = None,
    on_update: _Update | None = None,
    scope: Scope | None = None,
    control_twin: KpiComparison | None = None,
) -> DrillResult:
    """Run one experiment; return what it found and write its journal (when a path is
    given). ``base``: the directory relative paths in the experiment resolve against
    (default: the experiment file's directory); ``state_dir``: where the event log is
    (default: ``<base>/.bastion``). ``scope``: the blast radius instead of the
    experiment's own ``bastion.scope`` (a sandbox twin's, ``bastion drill run --twin``:
    then a fault aimed at anything but the twin is refused). ``control_twin``: a control twin
    beside the experiment's (ChAP, ``--control``): the same load on both, started before
    the steady state is checked; the run is aborted the moment their KPIs diverge, and
    the journal's ``bastion.kpis`` shows both side by side."""
    from chaoslib.run import Runner
    from chaoslib.types import Schedule, Strategy

    if threading.current_thread() is not threading.main_thread():
        raise UsageError(
            "a drill runs on the main thread (Chaos Toolkit interrupts it with signals)"
        )
    if isinstance(experiment, str | Path):
        base = base or Path(experiment).resolve().parent
        experiment = load_experiment(experiment)
    else:
        validate(experiment)
        base = base or Path.cwd()
    settings = bastion_settings(experiment)
    seed = seed if seed is not None else settings.get("seed")
    if control_twin is not None:
        experiment = _with_abort_control(experiment)
    if scope is None:
        scope = Scope.from_config(settings.get("scope"), base=base)
    title = str(experiment.get("title", "drill"))
    subject = str(settings.get("subject", ""))
    manifest: Manifest | None = None
    if settings.get("manifest"):
        # The system's own event log, so detections by its parts land in the same log;
        # relative to the experiment file, wherever the drill is run from.
        from bastion.manifest import load

        manifest = load(base / str(settings["manifest"]))
        if state_dir is None:
            state_dir = manifest.state_dir
    events = EventLog.in_state_dir(state_dir or base / ".bastion")
    ctx = DrillContext(base=base, scope=scope, events=events, subject=subject, seed=seed)
    frequency = float(settings.get("frequency_s", 0.5))
    started = events.emit(ek.DRILL_STARTED, subject=subject, title=title, scope=scope.describe())
    ctx.started_event_id = started.id
    chaos_log = logging.getLogger("chaostoolkit")
    quiet = logging.NullHandler()
    chaos_log.addHandler(quiet)
    chaos_log.propagate = False
    # A late abort signal must never kill the process after Chaos Toolkit's handler is gone.
    previous_usr1 = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    safety_net: list[str] = []
    kpis: dict[str, Any] | None = None
    started_s = time.monotonic()
    started_wall = time.time()
    try:
        with activate(ctx):
            try:
                _setup(ctx, settings, experiment, manifest)
                if control_twin is not None:
                    control_twin.on_diverge = _diverged_abort
                    control_twin.start()
                handler = _Handler(ctx, on_update)
                runner = Runner(
                    Strategy.CONTINUOUS, Schedule(continuous_hypothesis_frequency=frequency)
                )
                runner.register_event_handler(handler)
                rollbacks = settings.get("rollbacks", "always")
                journal: dict[str, Any] = runner.run(
                    experiment, settings={"runtime": {"rollbacks": {"strategy": rollbacks}}}
                )
                control.stop_watching()
            finally:
                if control_twin is not None:
                    kpis = control_twin.stop()
                safety_net = ctx.close()
    finally:
        control.stop_watching()
        signal.signal(signal.SIGUSR1, previous_usr1)
        chaos_log.removeHandler(quiet)
        chaos_log.propagate = True
    run_events = events.query(after_id=started.id)
    hypothesis = experiment.get("steady-state-hypothesis") or {}
    measured = measure(
        run_events,
        detect=settings.get("detect", []),
        has_hypothesis=bool(hypothesis.get("probes")),
    )
    targets = {str(k): float(v) for k, v in (settings.get("targets") or {}).items()}
    misses = check_targets(measured, targets)
    status = str(journal.get("status"))
    problems: list[str] = []
    exit_code = 0
    if ctx.refusals:
        problems += [str(r) for r in ctx.refusals]
        exit_code = 2
    else:
        if ctx.aborted is not None:
            problems.append(f"aborted: {ctx.aborted}")
        if status == "failed":
            problems.append(
                "the steady state did not hold before the method, or a probe failed: "
                + "; ".join(_failing_probes(journal))
            )
        if journal.get("deviated"):
            problems.append("the steady state did not hold after the method (deviated)")
        if measured["recovered"] is False:
            problems.append("the steady state broke and never recovered")
        problems += [f"target missed: {m}" for m in misses]
        if safety_net:
            problems.append(
                f"left injected after the rollbacks (reverted by Bastion): {safety_net}"
            )
        exit_code = 1 if problems else 0
    if kpis is not None and kpis.get("divergence") and ctx.aborted is None:
        problems.append(f"the KPIs diverged from the control twin's: {kpis['divergence']}")
        exit_code = exit_code or 1
    journal["bastion"] = {
        "kpis": kpis,
        "measurements": measured,
        "targets": targets,
        "targets_missed": misses,
        "aborted": ctx.aborted,
        "scope": scope.describe(),
        "refused": [str(r) for r in ctx.refusals],
        "safety_net_reverted": safety_net,
        "samples": [{"mono_ns": s.mono_ns, "met": s.met, "phase": s.phase} for s in ctx.samples],
        "load": ctx.load,
        "exit_code": exit_code,
        "problems": problems,
        "events": [e.to_json() for e in run_events],
        "wall_s": time.monotonic() - started_s,
        "cost": _drill_cost(state_dir or base / ".bastion", started_wall, time.time()),
    }
    events.emit(
        ek.DRILL_FINISHED,
        subject=subject,
        title=title,
        status=status,
        exit_code=exit_code,
        data={k: v for k, v in measured.items() if isinstance(v, int | float | bool | None)},
    )
    events.close()
    journal = _journal_safe(journal)
    if journal_path is not None:
        journal_path.parent.mkdir(parents=True, exist_ok=True)
        journal_path.write_text(json.dumps(journal, indent=2, default=str))
    return DrillResult(
        title=title,
        status=status,
        exit_code=exit_code,
        measurements=measured,
        journal=journal,
        journal_path=journal_path,
        problems=problems,
        aborted=ctx.aborted,
    )


def _drill_cost(state_dir: Path, since: float, until: float) -> dict[str, Any] | None:
    """What the gateways spent during the drill (``serve._spend``): the total, by cause,
    and the extra that retries, hedges, fallbacks and shadows cost, per currency; None
    when no gateway of this state directory accounts spend."""
    from bastion.serve._spend import cost_between, spend_path

    if not spend_path(state_dir).exists():
        return None
    found = cost_between(state_dir, since, until, period="drill")
    return {
        "currencies": list(found.currencies),
        "total": found.total,
        "by_cause": found.by_cause,
        "by_vendor": found.by_vendor,
        "extra": found.extra,
        "estimated": found.estimated,
    }


def _journal_safe(journal: dict[str, Any]) -> dict[str, Any]:
    """The journal with no environment value in it: Chaos Toolkit copies the experiment
    (its processes' ``env:``, each activity's ``env`` argument) into the journal, and a
    journal is shared as evidence. Names stay (they say what was set), values go, and
    everything else passes through ``redact`` (keys, tokens and ``*_env`` values)."""

    def hide_env(value: Any) -> Any:
        if isinstance(value, dict):
            return {
                k: (
                    {str(n): "***" for n in v}
                    if k == "env" and isinstance(v, dict)
                    else hide_env(v)
                )
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [hide_env(v) for v in value]
        return value

    safe: dict[str, Any] = redact(hide_env(journal))
    return safe


def _failing_probes(journal: dict[str, Any]) -> list[str]:
    """Each probe that failed or missed its tolerance, with why, for the report."""
    out = []
    states = journal.get("steady_states") or {}
    for phase in ("before", "after"):
        state = states.get(phase) or {}
        for run in state.get("probes", []):
            if run.get("tolerance_met", True):
                continue
            name = run.get("activity", {}).get("name", "?")
            why = run.get("exception")
            detail = str(why[-1]).strip() if why else f"got {run.get('output')!r}"
            out.append(f"{phase}: probe {name!r}: {detail}")
    return out or ["see the journal"]


def raise_for_refusals(result: DrillResult) -> None:
    """Turn a run whose faults were refused into the ``ScopeError`` the CLI reports."""
    if result.exit_code == 2 and result.problems:
        raise ScopeError(result.problems[0])
