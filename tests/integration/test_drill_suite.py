"""The reference drill suite (issue 15, part 5) against the twin of the example.

Isolation is checked the hard way, as for the twin itself: every file of production's
state directory and vault replicas (bytes and mode; the event log by its rows) and
whether anything listens on production's ports, taken just before and just after each
scenario's experiment (the suite's ``on_scenario`` hook), must be the same. The fast
subset runs in ``make test``; the whole suite in its short mode runs with
``BASTION_FULL_SUITE=1`` (it trains the example twice and starts six gateways).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import random
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from bastion.drill.suite import SCENARIOS, SUITE_FORMAT, run_suite, scenario_names
from bastion.drill.suite import _run as suite_run
from bastion.manifest import load
from bastion.twin._ports import port_free
from bastion.vault import Vault
from tests.helpers import commit_model, run_bastion

FAST = ["poisoned-data", "swapped-model", "vault-replica-lost", "ransomware-dataset", "disk-full"]


def _rows(db: Path) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        dump = "\n".join(conn.iterdump())
    return hashlib.sha256(dump.encode()).hexdigest()


def _fingerprint(root: Path, skip: tuple[Path, ...]) -> dict[str, str]:
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        found[str(here.relative_to(root)) + "/"] = oct(stat.S_IMODE(here.stat().st_mode))
        for name in filenames:
            path = here / name
            if name.endswith(("-wal", "-shm")):
                continue
            info = path.lstat()
            if name.endswith(".db"):
                digest = _rows(path)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
            found[str(path.relative_to(root))] = f"{digest} {oct(stat.S_IMODE(info.st_mode))}"
    for port in (8700, 8801):  # the example's own ports
        found[f"port {port}"] = "free" if port_free(port) else "taken"
    return found


def _production(example: Path, rng: random.Random) -> Path:
    """The example with a model and its dataset in the vault (what the demo's vault and
    train scenes leave); its manifest path."""
    commit_model(example, rng.randrange(2**31))
    manifest = load(example / "bastion.yaml")
    shards = {p.name: p for p in sorted((example / "dataset").glob("*.csv"))}
    Vault.from_manifest(manifest).commit("dataset/digits", files=shards)
    return example / "bastion.yaml"


class _Watch:
    """The test's own fingerprints around every scenario (the suite's hook)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.skip = (state / "twin", state / "drills")
        self.before: dict[str, dict[str, str]] = {}
        self.changed: dict[str, list[str]] = {}

    def __call__(self, name: str, when: str) -> None:
        now = _fingerprint(self.state, self.skip)
        if when == "before":
            self.before[name] = now
            return
        old = self.before[name]
        self.changed[name] = sorted(k for k in old.keys() | now.keys() if old.get(k) != now.get(k))


def _check(result: Any, watch: _Watch, state: Path) -> None:
    ran = [s for s in result.scenarios if s.verdict != "skipped"]
    assert ran
    for s in ran:
        assert watch.changed[s.name] == [], (s.name, watch.changed[s.name][:10])
        assert s.isolation == "production unchanged", s
        journal = json.loads(Path(s.journal).read_text())
        assert journal["bastion"]["suite"]["scenario"] == s.name
        assert journal["bastion"]["suite"]["suite"] == result.suite
        assert journal["bastion"]["suite"]["verdict"] == s.verdict
        assert Path(s.journal).parent == state / "drills" / "suite" / result.suite
        assert "twin suite" in journal["bastion"]["scope"]
    assert not (state / "twin").exists(), "the suite left its twin behind"


def test_the_fast_scenarios_pass_on_the_example_twin_and_leave_production_unchanged(
    example_copy: Path, rng: random.Random, seed: int
) -> None:
    path = _production(example_copy, rng)
    state = Path(load(path).state_dir)
    watch = _Watch(state)
    result = run_suite(path, short=True, only=FAST, seed=seed, on_scenario=watch)
    assert [s.name for s in result.scenarios] == [n for n in scenario_names() if n in FAST]
    _check(result, watch, state)
    by = {s.name: s for s in result.scenarios}
    for name in FAST:
        if name == "disk-full" and by[name].verdict == "skipped":
            continue  # needs root and mount: the reason says so
        s = by[name]
        assert s.verdict == "passed", (name, s.reason, s.problems)
        assert s.time_to_detect_s is not None, name
        assert s.rto_s is not None
        assert s.rto_s <= s.targets["rto_s"]
    # judged against the manifest's recovery targets: software, and site for a replica
    assert by["vault-replica-lost"].targets == {"rto_s": 300.0, "rpo_s": 300.0}
    assert by["swapped-model"].targets == {"rto_s": 30.0, "rpo_s": 60.0}
    assert by["poisoned-data"].targets == {"rto_s": 30.0}  # loses nothing: no RPO
    assert by["ransomware-dataset"].detected_by == "vault.guard.ransomware"
    assert by["ransomware-dataset"].rpo_s == 0.0
    # production's log has the suite's own record, and none of the drills' events
    with contextlib.closing(sqlite3.connect(state / "events.db")) as conn:
        kinds = [row[0] for row in conn.execute("SELECT kind FROM events")]
    assert kinds.count("drill.suite.scenario") == len(FAST)
    assert "drill.suite.started" in kinds
    assert "drill.suite.finished" in kinds
    assert "drill.started" not in kinds
    summary = json.loads((Path(result.directory) / "suite.json").read_text())
    assert summary == json.loads(json.dumps(result.to_json()))


def test_the_suite_json_output(example_copy: Path, rng: random.Random) -> None:
    _production(example_copy, rng)
    done = run_bastion(
        "drill", "suite", "--short", "--json", "--only", "swapped-model,poisoned-data",
        "--seed", "3", cwd=example_copy, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["format"] == SUITE_FORMAT
    assert doc["exit_code"] == 0
    assert doc["short"] is True
    assert doc["counts"] == {"passed": 2, "failed": 0, "errored": 0, "skipped": 0}
    assert set(doc) >= {"suite", "manifest", "twin", "started", "seconds", "directory"}
    first, second = doc["scenarios"]  # the suite's order, not the command line's
    assert (first["name"], second["name"]) == ("poisoned-data", "swapped-model")
    for s in doc["scenarios"]:
        for key in ("verdict", "reason", "time_to_detect_s", "detected_by", "rto_s", "rpo_s"):
            assert key in s
        assert s["verdict"] == "passed", s
        assert s["measurements"]["injected"] is True
        assert s["isolation"] == "production unchanged"
        journal = json.loads(Path(s["journal"]).read_text())
        assert journal["bastion"]["suite"]["scenario"] == s["name"]
        assert journal["bastion"]["measurements"]["rto_s"] == s["rto_s"]
    assert first["stateful"] is False
    assert first["rpo_s"] is None  # a poisoned version loses nothing: RPO n/a
    assert second["rpo_s"] == 0.0
    assert second["targets"] == {"rto_s": 30.0, "rpo_s": 60.0}
    assert Path(doc["directory"], "suite.json").is_file()


def test_skipped_when_it_does_not_apply_never_failed(tmp_path: Path) -> None:
    """A user's own manifest: nothing in its vault, no job, no service. Every scenario
    that does not apply is skipped with its reason, and the suite exits 0."""
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nsystem: mine\nvault:\n  replicas: [.bastion/vault/a, .bastion/vault/b]\n"
    )
    assert run_bastion("init", str(tmp_path), cwd=tmp_path).returncode == 0
    names = [n for n in scenario_names() if n != "disk-full"]
    done = run_bastion(
        "drill", "suite", "--short", "--json", "--only", ",".join(names), cwd=tmp_path
    )
    assert done.returncode == 0, done.stdout + done.stderr
    doc = json.loads(done.stdout)
    assert doc["counts"]["skipped"] == len(names) == 11
    reasons = {s["name"]: s["reason"] for s in doc["scenarios"]}
    assert "no training job" in reasons["training-worker-killed"]
    assert "no service with a local model backend" in reasons["replica-killed"]
    assert "no dataset in the vault" in reasons["ransomware-dataset"]
    assert "no snapshot" in reasons["vault-replica-lost"]


def test_an_errored_scenario_is_never_a_pass(
    example_copy: Path, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _production(example_copy, rng)
    production = load(path)
    target = Path(production.state_dir) / "vault" / "a" / "objects"
    poisoned = next(s for s in SCENARIOS if s.name == "poisoned-data")

    def aimed_at_production(env: Any) -> dict[str, Any]:
        experiment = poisoned.build(env)
        experiment["method"].insert(
            0,
            {
                "type": "action",
                "name": "flip-production",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.actions",
                    "func": "inject",
                    "arguments": {"fault": "storage.flip_bytes", "targets": str(target)},
                },
            },
        )
        return experiment

    def raises(env: Any) -> dict[str, Any]:
        raise RuntimeError("the experiment could not be written")

    broken = [
        dataclasses.replace(poisoned, name="refused", build=aimed_at_production),
        dataclasses.replace(poisoned, name="unbuildable", build=raises),
    ]
    monkeypatch.setattr(suite_run, "select", lambda only: broken)
    state = Path(production.state_dir)
    watch = _Watch(state)
    result = run_suite(path, short=True, on_scenario=watch)
    verdicts = {s.name: s.verdict for s in result.scenarios}
    assert verdicts == {"refused": "errored", "unbuildable": "errored"}
    assert result.counts["passed"] == 0
    assert result.exit_code == 1
    refused = result.scenarios[0]
    assert "refused" in refused.reason
    assert watch.changed["refused"] == []


def _judge(**result: Any) -> tuple[str, str, list[str]]:
    journal = {"status": "completed", "run": [], "bastion": {}}
    journal.update(result.pop("journal", {}))
    fake = dataclasses.make_dataclass("Fake", ["journal", "measurements", "problems", "exit_code"])(
        journal=journal,
        measurements={"injected": True, "recovered": True, "rto_s": 1.0, "rpo_s": 0.0}
        | result.pop("measurements", {}),
        problems=[],
        exit_code=result.pop("exit_code", 0),
    )
    scenario = next(s for s in SCENARIOS if s.name == "swapped-model")
    return suite_run._judge(
        scenario, fake, {"rto_s": 30.0, "rpo_s": 60.0}, result.pop("changed", [])
    )


@pytest.mark.parametrize(
    ("broken", "why"),
    [
        ({"journal": {"status": "failed"}}, "did not hold before"),
        ({"journal": {"status": "interrupted"}}, "ended interrupted"),
        ({"journal": {"status": "aborted"}}, "ended aborted"),
        ({"exit_code": 2}, "refused"),
        ({"journal": {"run": [{"status": "failed", "activity": {"name": "x"}}]}}, "activity"),
        ({"measurements": {"injected": False}}, "no fault was injected"),
        ({"journal": {"bastion": {"aborted": "too many files"}}}, "aborted"),
        ({"changed": ["vault/a/objects/ab/x"]}, "isolation"),
        ({"measurements": {"recovered": None, "rto_s": None}}, "no RTO measured"),
    ],
)
def test_every_way_an_experiment_breaks_is_errored(broken: dict[str, Any], why: str) -> None:
    verdict, reason, _ = _judge(**broken)
    assert verdict == "errored"
    assert why in reason


def test_missed_targets_fail_and_met_ones_pass() -> None:
    assert _judge()[0] == "passed"
    missed = _judge(journal={"bastion": {"targets_missed": ["rto_s: measured 40, target 30"]}})
    assert missed[0] == "failed"
    assert _judge(measurements={"recovered": False, "rto_s": None})[0] == "failed"
    assert _judge(measurements={"rpo_s": None})[0] == "failed"  # data lost for good


def test_bad_input_is_exit_2_naming_the_thing(example_copy: Path, rng: random.Random) -> None:
    unknown = run_bastion("drill", "suite", "--only", "replica-kiled", cwd=example_copy)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr
    assert "unknown scenario 'replica-kiled' (did you mean 'replica-killed'?)" in unknown.stderr
    assert "vault-replica-lost" in unknown.stderr  # the list of known ones
    nothing = run_bastion("drill", "suite", "--only", ",", cwd=example_copy)
    assert nothing.returncode == 2
    assert "names no scenario" in nothing.stderr
    missing = run_bastion("drill", "suite", "-f", "nope.yaml", cwd=example_copy)
    assert missing.returncode == 2
    assert "nope.yaml does not exist" in missing.stderr
    _production(example_copy, rng)
    assert run_bastion("twin", "up", "--name", "suite", cwd=example_copy).returncode == 0
    taken = run_bastion("drill", "suite", "--only", "poisoned-data", cwd=example_copy)
    assert taken.returncode == 2
    assert "already exists" in taken.stderr
    assert "bastion twin down --name suite" in taken.stderr
    listed = run_bastion("drill", "suite", "--list", "--json", cwd=example_copy)
    assert [r["name"] for r in json.loads(listed.stdout)] == scenario_names()
    assert len(scenario_names()) >= 12


@pytest.mark.slow
@pytest.mark.skipif(
    os.environ.get("BASTION_FULL_SUITE") != "1",
    reason="the whole suite trains the example twice and starts six gateways (minutes); "
    "run it with BASTION_FULL_SUITE=1",
)
def test_the_whole_short_suite_on_the_example_twin(
    example_copy: Path, rng: random.Random, seed: int
) -> None:
    path = _production(example_copy, rng)
    state = Path(load(path).state_dir)
    watch = _Watch(state)
    result = run_suite(path, short=True, seed=seed, on_scenario=watch)
    assert len(result.scenarios) == len(SCENARIOS) >= 12
    _check(result, watch, state)
    for s in result.scenarios:
        assert s.verdict in ("passed", "skipped"), (s.name, s.reason, s.problems)


def test_summary_lines_say_each_verdict_and_why() -> None:
    from bastion.drill.suite import ScenarioResult, SuiteResult, summary_lines

    ran = ScenarioResult(
        name="swapped-model", title="t", layer="ml", verdict="failed", reason="rto_s: 40 > 30",
        loss="software", stateful=True, time_to_detect_s=0.5, detected_by="vault.integrity.failed",
        rto_s=40.0, rpo_s=0.0,
    )  # fmt: skip
    skipped = ScenarioResult(
        name="replica-killed", title="t", layer="infrastructure", verdict="skipped",
        reason="no service with a local model backend", loss="software", stateful=False,
    )  # fmt: skip
    result = SuiteResult("s1", "m", "t", True, "now", 1.0, "/d", (ran, skipped))
    assert result.counts == {"passed": 0, "failed": 1, "errored": 0, "skipped": 1}
    assert result.exit_code == 1
    lines = summary_lines(result)
    assert lines[0].startswith("swapped-model: failed; detected 0.50 s by vault.integrity.failed")
    assert "RTO 40.00 s, RPO 0.00 s (rto_s: 40 > 30)" in lines[0]
    assert lines[1] == "replica-killed: skipped (no service with a local model backend)"
    assert lines[2] == "suite s1: 1 failed, 1 skipped; journals in /d"


def test_a_dataset_without_labels_skips_the_poisoning(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(
        "version: 1\nsystem: mine\nvault:\n  replicas: [.bastion/vault/a, .bastion/vault/b]\n"
    )
    assert run_bastion("init", str(tmp_path), cwd=tmp_path).returncode == 0
    (tmp_path / "t.csv").write_text("a,b\n1,2\n3,4\n")
    vault = Vault.from_manifest(load(tmp_path / "bastion.yaml"))
    vault.commit("dataset/plain", files={"t.csv": tmp_path / "t.csv"})
    result = run_suite(tmp_path / "bastion.yaml", short=True, only=["poisoned-data"])
    (only,) = result.scenarios
    assert only.verdict == "skipped"
    assert "no 'label' column" in only.reason
    assert result.exit_code == 0
