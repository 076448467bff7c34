"""Running the reference suite: a twin, every scenario in it, a verdict for each.

Owns: ``run_suite``. It makes a sandbox twin of the manifest's system (``bastion.twin``),
runs each applicable scenario's experiment with ``run_experiment`` in the twin's scope
and log, writes each one's journal (the drill journal, plus a ``bastion.suite``
section) and the suite's summary under ``<state_dir>/drills/suite/<suite id>/``, and
removes the twin. Around every scenario it takes a fingerprint of production (the
state directory's files outside the twin and the suite's own output, every vault
replica's files, which of production's ports something listens on): a scenario after
which production is not what it was is ``errored``, whatever it measured.

Verdicts:

- ``passed``: the experiment ran to its end, the steady state held or came back, and
  every target (the manifest's ``recovery.<loss>``: ``rto_s``, and ``rpo_s`` for a
  scenario that can lose data) was met;
- ``failed``: it ran, and the system missed a target or never recovered;
- ``errored``: the experiment itself broke (setup failed, the steady state did not hold
  before the fault, an activity raised, a fault was refused or never injected, the
  run was interrupted, production changed); never counted as passed;
- ``skipped``: the scenario does not apply to this system (the reason says why).

Must never: count an errored scenario as passed, leave the twin behind (unless asked),
or write into production beyond the suite's own output and its three kinds of events
(``drill.suite.started``, ``drill.suite.scenario``, ``drill.suite.finished``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bastion import event_kinds as ek
from bastion.drill.suite._scenarios import SCENARIOS, Scenario, SuiteEnv, scenario_names
from bastion.errors import BastionError, UsageError
from bastion.events import EventLog

__all__ = [
    "SUITE_FORMAT",
    "ScenarioResult",
    "SuiteResult",
    "fingerprint",
    "run_suite",
    "select",
]

SUITE_FORMAT = "bastion.drill.suite/1"
VERDICTS = ("passed", "failed", "errored", "skipped")
TWIN_NAME = "suite"


@dataclass(frozen=True)
class ScenarioResult:
    """One scenario's outcome. ``measurements`` are the drill's (from events);
    ``targets`` what it was judged against; ``journal`` the journal's path."""

    name: str
    title: str
    layer: str
    verdict: str
    reason: str
    loss: str
    stateful: bool
    time_to_detect_s: float | None = None
    detected_by: str | None = None
    rto_s: float | None = None
    rpo_s: float | None = None
    targets: dict[str, float] = field(default_factory=dict)
    measurements: dict[str, Any] = field(default_factory=dict)
    problems: tuple[str, ...] = ()
    isolation: str = "not checked"
    journal: str | None = None
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["problems"] = list(self.problems)
        return doc


@dataclass(frozen=True)
class SuiteResult:
    """The suite's outcome: one result per scenario, in the suite's order."""

    suite: str
    manifest: str
    twin: str
    short: bool
    started: str
    seconds: float
    directory: str
    scenarios: tuple[ScenarioResult, ...]

    @property
    def counts(self) -> dict[str, int]:
        return {v: sum(1 for s in self.scenarios if s.verdict == v) for v in VERDICTS}

    @property
    def exit_code(self) -> int:
        """0 when nothing failed or errored (skips are not failures), else 1."""
        c = self.counts
        return 1 if c["failed"] or c["errored"] else 0

    def to_json(self) -> dict[str, Any]:
        return {
            "format": SUITE_FORMAT,
            "suite": self.suite,
            "manifest": self.manifest,
            "twin": self.twin,
            "short": self.short,
            "started": self.started,
            "seconds": round(self.seconds, 3),
            "directory": self.directory,
            "counts": self.counts,
            "exit_code": self.exit_code,
            "scenarios": [s.to_json() for s in self.scenarios],
        }


def select(only: Iterable[str] | None) -> list[Scenario]:
    """The scenarios named in ``only`` (all when None or empty), in the suite's order;
    ``UsageError`` (exit 2) naming an unknown one and listing the known."""
    if not only:
        return list(SCENARIOS)
    wanted = [w.strip() for item in only for w in str(item).split(",") if w.strip()]
    known = scenario_names()
    unknown = [w for w in wanted if w not in known]
    if unknown:
        import difflib

        hints = []
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise UsageError(
            f"drill suite: unknown scenario {', '.join(hints)}; the scenarios are: "
            f"{', '.join(known)}"
        )
    if not wanted:
        raise UsageError("drill suite: --only names no scenario; give e.g. --only replica-killed")
    return [s for s in SCENARIOS if s.name in wanted]


# -- production's fingerprint -------------------------------------------------------------


def _hash_file(path: Path) -> str:
    h = hashlib.blake2b(digest_size=16)
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _tree(root: Path, skip: tuple[Path, ...], out: dict[str, str], *, logs: bool) -> None:
    if not root.exists():
        out[str(root)] = "absent"
        return
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if here / d not in skip)
        out[str(here) + "/"] = oct(here.stat().st_mode & 0o7777)
        for name in sorted(filenames):
            path = here / name
            if not logs and (".db" in name):
                continue  # the system's own logs: a running system writes them
            info = path.lstat()
            digest = _hash_file(path) if path.is_file() else "-"
            out[str(path)] = f"{digest} {oct(info.st_mode & 0o7777)} {info.st_size}"


def fingerprint(
    manifest: Any, *, skip: tuple[Path, ...] = (), logs: bool = False
) -> dict[str, str]:
    """Production as a drill must leave it: the hash and mode of every file of its state
    directory (without ``skip``: the twin, the suite's output; and without its SQLite
    logs unless ``logs``) and of every local vault replica, and which of its ports
    something listens on."""
    from bastion.store._url import parse_replica_url
    from bastion.twin._ports import owned_ports, port_free
    from bastion.vault._manifest import vault_replicas

    out: dict[str, str] = {}
    state = Path(manifest.state_dir)
    _tree(state, skip, out, logs=logs)
    for entry in vault_replicas(manifest):
        url = parse_replica_url(entry)
        if url.is_local:
            where = Path(url.location)
            if not where.is_absolute():
                where = Path(manifest.base_dir) / where
            if not where.is_relative_to(state):
                _tree(where, skip, out, logs=logs)
    tree = manifest.model_dump(mode="json", by_alias=True)
    for owned in owned_ports(tree):
        out[f"port:{owned.port}"] = "free" if port_free(owned.port) else "listening"
    return out


def _difference(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))


# -- the run ------------------------------------------------------------------------------


def _suite_id() -> str:
    return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(2)}"


def _targets(env: SuiteEnv, scenario: Scenario) -> tuple[dict[str, float], str]:
    recovery = env.production.recovery
    key = scenario.loss if scenario.loss in recovery else "software"
    target = recovery.get(key)
    if target is None:
        return {}, "no recovery: targets in the manifest"
    out = {"rto_s": float(target.rto_s)}
    if scenario.stateful:
        out["rpo_s"] = float(target.rpo_s)
    return out, f"recovery.{key}"


def _judge(
    scenario: Scenario, result: Any, targets: dict[str, float], changed: list[str]
) -> tuple[str, str, list[str]]:
    """The verdict of one run: (verdict, reason, problems)."""
    journal = result.journal
    bastion = journal.get("bastion") or {}
    m = result.measurements
    problems = list(result.problems)
    if changed:
        return "errored", f"twin isolation broken: production changed: {changed[:5]}", problems
    if result.exit_code == 2 or bastion.get("refused"):
        return "errored", f"a fault was refused by the twin's scope: {problems[:1]}", problems
    status = str(journal.get("status"))
    if status != "completed":
        if status == "failed":
            why = "the steady state did not hold before the fault (or a probe raised)"
        else:
            why = f"the experiment ended {status}"
        return "errored", f"{why}: {'; '.join(problems) or 'see the journal'}", problems
    broken = [
        f"{run.get('activity', {}).get('name', '?')}: {_last_line(run.get('exception'))}"
        for run in journal.get("run") or []
        if run.get("status") == "failed"
    ]
    if broken:
        return "errored", f"an activity failed: {broken[0]}", problems + broken
    if not m.get("injected"):
        return "errored", "no fault was injected", problems
    if bastion.get("aborted"):
        return "errored", f"aborted: {bastion['aborted']}", problems
    if "rto_s" in targets and m.get("recovered") is None:
        return "errored", "no RTO measured: the experiment has no steady state", problems
    misses = list(bastion.get("targets_missed") or [])
    if scenario.stateful and "rpo_s" in targets and m.get("rpo_s") is None:
        misses.append("rpo_s: no recovery point measured (data lost for good, or no event to read)")
    if m.get("recovered") is False:
        misses.append("the steady state broke and never came back")
    if journal.get("deviated"):
        misses.append("the steady state did not hold after the method")
    if misses:
        return "failed", "; ".join(misses), problems
    if not targets:
        return "passed", "recovered (no recovery: targets in the manifest to judge it by)", problems
    if m.get("time_to_detect_s") is None:
        return (
            "passed",
            "every target met; nothing had to detect it (the steady state held)",
            problems,
        )
    return "passed", "every target met", problems


def _last_line(exception: Any) -> str:
    if isinstance(exception, list) and exception:
        return str(exception[-1]).strip()
    return str(exception or "?").strip()


def _env(manifest_path: Path, twin: Any, short: bool) -> SuiteEnv:
    from bastion.manifest import load
    from bastion.vault import Vault

    twin_manifest = load(twin.manifest_path)
    with contextlib.closing(EventLog.in_state_dir(twin.state_dir)) as events:
        try:
            names = Vault.from_manifest(twin_manifest, events=events, create=False).names()
        except BastionError:
            names = []
    return SuiteEnv(
        production=load(manifest_path),
        twin=twin,
        record=twin.record(),
        twin_manifest=twin.manifest_path,
        short=short,
        snapshots=list(names),
    )


_Progress = Callable[[str, dict[str, Any]], None]


def run_suite(
    manifest: str | Path,
    *,
    short: bool = False,
    only: Iterable[str] | None = None,
    seed: int | None = None,
    output: Path | None = None,
    keep_twin: bool = False,
    on_progress: _Progress | None = None,
    on_scenario: Callable[[str, str], None] | None = None,
) -> SuiteResult:
    """Run the reference suite against a fresh twin of ``manifest``'s system.

    ``short``: short holds and sampling (seconds per scenario, for a demo or CI);
    ``only``: scenario names (comma-separated or a list) to run, the rest not run at all;
    ``output``: where the journals go (default ``<state_dir>/drills/suite/<suite id>``);
    ``keep_twin``: leave the twin (named ``suite``) for a look afterwards;
    ``on_progress(what, data)``: ``scenario.started`` / ``scenario.finished`` updates;
    ``on_scenario(name, "before"|"after")``: called just before and after each
    scenario's experiment (a test takes its own fingerprints there).
    """
    from bastion.drill.runner import run_experiment
    from bastion.manifest import load
    from bastion.twin import Twin

    path = Path(manifest)
    chosen = select(only)
    production = load(path)
    twin = Twin(path, TWIN_NAME)
    if twin.exists():
        raise UsageError(
            f"drill suite: a twin named {TWIN_NAME!r} already exists at {twin.root} (a suite "
            f"left it, or someone made it); remove it with `bastion twin down --name "
            f"{TWIN_NAME} -f {path}`"
        )
    suite = _suite_id()
    state = Path(production.state_dir)
    out_dir = output or state / "drills" / "suite" / suite
    started_wall = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.monotonic()
    prod_log = EventLog.in_state_dir(state)
    prod_log.emit(
        ek.DRILL_SUITE_STARTED,
        subject=suite,
        suite=suite,
        scenarios=[s.name for s in chosen],
        short=short,
        twin=str(twin.root),
    )

    def tell(what: str, **data: Any) -> None:
        if on_progress is not None:
            on_progress(what, data)

    results: list[ScenarioResult] = []
    skip = (twin.root, out_dir.resolve(), (state / "drills").resolve())
    twin.up()
    try:
        env = _env(path, twin, short)
        out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        for scenario in chosen:
            tell("scenario.started", name=scenario.name, title=scenario.title)
            result = _run_one(
                scenario, env, suite, out_dir, seed, skip, run_experiment, on_scenario
            )
            results.append(result)
            prod_log.emit(
                ek.DRILL_SUITE_SCENARIO,
                subject=scenario.name,
                suite=suite,
                scenario=scenario.name,
                verdict=result.verdict,
                reason=result.reason[:300],
                time_to_detect_s=result.time_to_detect_s,
                rto_s=result.rto_s,
                rpo_s=result.rpo_s,
                journal=result.journal,
            )
            tell("scenario.finished", **result.to_json())
    finally:
        if not keep_twin:
            _twin_down(twin)
    done = SuiteResult(
        suite=suite,
        manifest=str(path.resolve()),
        twin=str(twin.root),
        short=short,
        started=started_wall,
        seconds=time.monotonic() - started,
        directory=str(out_dir),
        scenarios=tuple(results),
    )
    (out_dir / "suite.json").write_text(json.dumps(done.to_json(), indent=2) + "\n")
    prod_log.emit(
        ek.DRILL_SUITE_FINISHED,
        subject=suite,
        suite=suite,
        directory=str(out_dir),
        counts=done.counts,
    )
    prod_log.close()
    return done


def _twin_down(twin: Any) -> None:
    """Remove the twin, waiting (with a deadline) for its ports to be let go of."""
    deadline = time.monotonic() + 30
    while True:
        try:
            twin.down()
            return
        except UsageError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _run_one(  # noqa: PLR0917 - one private call site
    scenario: Scenario,
    env: SuiteEnv,
    suite: str,
    out_dir: Path,
    seed: int | None,
    skip: tuple[Path, ...],
    run_experiment: Any,
    on_scenario: Callable[[str, str], None] | None,
) -> ScenarioResult:
    common: dict[str, Any] = {
        "name": scenario.name,
        "title": scenario.title,
        "layer": scenario.layer,
        "loss": scenario.loss,
        "stateful": scenario.stateful,
    }
    reason = scenario.skip_reason(env)
    if reason is not None:
        return ScenarioResult(verdict="skipped", reason=reason, **common)
    targets, source = _targets(env, scenario)
    begun = time.monotonic()
    journal_path = out_dir / f"{scenario.name}.json"
    before = fingerprint(env.production, skip=skip)
    if on_scenario is not None:
        on_scenario(scenario.name, "before")
    undo: Callable[[], None] | None = None
    try:
        if scenario.prepare is not None:
            undo = scenario.prepare(env)
        experiment = scenario.build(env)
        experiment["extensions"][0]["targets"] = targets
        result = run_experiment(
            experiment,
            base=env.twin.root,
            state_dir=env.twin.state_dir,
            seed=seed,
            scope=env.twin.scope(),
        )
    except (BastionError, OSError, ValueError, KeyError, RuntimeError) as exc:
        if undo is not None:
            with contextlib.suppress(Exception):
                undo()
        after = fingerprint(env.production, skip=skip)
        if on_scenario is not None:
            on_scenario(scenario.name, "after")
        changed = _difference(before, after)
        note = f"; and production changed: {changed[:5]}" if changed else ""
        return ScenarioResult(
            verdict="errored",
            reason=f"the experiment could not run: {exc}{note}",
            targets=targets,
            isolation="broken" if changed else "production unchanged",
            seconds=time.monotonic() - begun,
            **common,
        )
    if undo is not None:
        try:
            undo()
        except Exception as exc:  # reported as the scenario's problem
            result.problems.append(f"undoing the scenario's preparation failed: {exc}")
    after = fingerprint(env.production, skip=skip)
    if on_scenario is not None:
        on_scenario(scenario.name, "after")
    changed = _difference(before, after)
    verdict, why, problems = _judge(scenario, result, targets, changed)
    if scenario.note is not None:
        extra = scenario.note(result.journal)
        if extra:
            why = f"{why}; {extra}"
    m = result.measurements
    journal = result.journal
    journal.setdefault("bastion", {})["suite"] = {
        "format": SUITE_FORMAT,
        "suite": suite,
        "scenario": scenario.name,
        "title": scenario.title,
        "layer": scenario.layer,
        "verdict": verdict,
        "reason": why,
        "targets": targets,
        "targets_from": source,
        "stateful": scenario.stateful,
        "twin": str(env.twin.root),
        "isolation": "broken" if changed else "production unchanged",
        "production_changed": changed[:20],
    }
    journal_path.write_text(json.dumps(journal, indent=2, default=str))
    return ScenarioResult(
        verdict=verdict,
        reason=why,
        time_to_detect_s=m.get("time_to_detect_s"),
        detected_by=m.get("detected_by"),
        rto_s=m.get("rto_s"),
        rpo_s=m.get("rpo_s") if scenario.stateful else None,
        targets=targets,
        measurements={k: v for k, v in m.items() if isinstance(v, int | float | bool | str | None)},
        problems=tuple(problems),
        isolation="broken" if changed else "production unchanged",
        journal=str(journal_path),
        seconds=time.monotonic() - begun,
        **common,
    )
