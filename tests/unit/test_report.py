"""The readiness report's rules, on a real event log in a temporary state directory: the
score stays within 0-100 whatever its parts say, an errored, aborted or unfinished drill
is never a pass, stale evidence counts as nothing, every edit of a signed report fails
verification, and the vendor concentration puts spend beside unavailability."""

from __future__ import annotations

import json
import math
import re
import sqlite3
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion import event_kinds as ek
from bastion.errors import IntegrityError, UsageError
from bastion.events import Event, EventLog
from bastion.manifest import loads
from bastion.map import map_manifest, to_json
from bastion.report import (
    FILES,
    SIGNATURE,
    VERDICTS,
    Part,
    build_report,
    drill_verdict,
    html,
    schema_path,
    score,
    verdict_passes,
    verify_report,
    write_report,
)
from bastion.vault._keys import Signer, Verifier, make_key

MANIFEST = """\
version: 1
system: shop
state_dir: state
components:
  - {id: vendor-x, kind: vendor-api, location: third-party, provider: vendor-x, availability: 0.99}
  - {id: vendor-y, kind: vendor-api, location: third-party, provider: vendor-y, availability: 0.999}
services:
  chat:
    backends:
      - {name: x, url: "https://x.example/v1", provider: vendor-x}
      - {name: y, url: "https://y.example/v1", provider: vendor-y, tier: fallback}
slos:
  - {id: chat-availability, service: chat, objective: 0.99}
"""

weights = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(-5, 1000).map(float)
)
values = st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))
parts = st.lists(
    st.builds(
        Part,
        id=st.sampled_from(["drills", "slos", "map", "changes"]),
        title=st.just("a part"),
        weight=weights,
        value=values,
        stale=st.booleans(),
    ),
    max_size=8,
)


@given(parts)
@settings(max_examples=300, deadline=None)
def test_the_score_stays_within_0_and_100(found: list[Part]) -> None:
    value = score(found)
    assert math.isfinite(value)
    assert 0.0 <= value <= 100.0
    for p in found:
        assert 0.0 <= p.counted <= 1.0
        if p.value is None or p.stale:
            assert p.counted == 0.0


def test_the_score_is_the_weighted_mean_of_what_counts() -> None:
    assert score([Part("drills", "", 40, 1.0), Part("slos", "", 60, 0.5)]) == 70.0
    assert score([Part("drills", "", 40, 1.0), Part("slos", "", 60, None)]) == 40.0
    assert score([Part("drills", "", 40, 1.0, stale=True)]) == 0.0
    assert score([Part("drills", "", 40, 7.0), Part("slos", "", -3, 1.0)]) == 100.0
    assert score([]) == 0.0


def _finished(status: str | None, code: object) -> Event:
    return Event(ek.DRILL_FINISHED, data={"status": status, "exit_code": code})


@given(
    status=st.one_of(
        st.none(),
        st.sampled_from(["completed", "failed", "aborted", "interrupted"]),
        st.text(max_size=8),
    ),
    code=st.one_of(st.none(), st.integers(-3, 4), st.text(max_size=2)),
    aborted=st.booleans(),
    finished=st.booleans(),
)
def test_only_a_completed_run_with_exit_0_and_no_abort_passes(
    status: str | None, code: object, aborted: bool, finished: bool
) -> None:
    verdict = drill_verdict(_finished(status, code) if finished else None, aborted)
    assert verdict in VERDICTS
    if verdict_passes(verdict):
        assert finished
        assert not aborted
        assert status == "completed"
        assert code == 0


def _dump(db: Path) -> list[str]:
    conn = sqlite3.connect(db)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def _world(tmp_path: Path) -> tuple[object, EventLog]:
    manifest = loads(MANIFEST, base_dir=tmp_path)
    return manifest, EventLog.in_state_dir(manifest.state_dir)


def _drill(
    log: EventLog, title: str, *, status: str | None, code: int = 0, aborted: bool = False
) -> None:
    log.emit(ek.DRILL_STARTED, "chat", title=title, scope={})
    log.emit(ek.DRILL_FAULT_INJECTED, "chat", fault="http.status", name="f")
    log.emit(ek.DRILL_STEADY_STATE_BROKEN, "chat", phase="during", probes=["ok"])
    log.emit("serve.backend.ejected", "chat", backend="x")
    if aborted:
        log.emit(ek.DRILL_ABORTED, "chat", reason="abort condition")
    log.emit(ek.DRILL_STEADY_STATE_RESTORED, "chat", phase="during")
    if status is not None:
        log.emit(
            ek.DRILL_FINISHED,
            "chat",
            title=title,
            status=status,
            exit_code=code,
            data={"rto_s": 1.0},
        )


def test_an_errored_aborted_or_unfinished_drill_is_never_a_pass(tmp_path: Path) -> None:
    manifest, log = _world(tmp_path)
    _drill(log, "passes", status="completed")
    _drill(log, "refused", status="completed", code=2)  # a fault outside its scope
    _drill(log, "aborted but says 0", status="completed", aborted=True)
    _drill(log, "interrupted", status="interrupted", code=0)
    _drill(log, "failed", status="failed", code=1)
    _drill(log, "crashed", status=None)  # never said it finished
    log.close()
    before = _dump(tmp_path / "state" / "events.db")
    doc = build_report(manifest)  # type: ignore[arg-type]
    assert _dump(tmp_path / "state" / "events.db") == before  # it only reads: no table, no alert
    verdicts = {d["title"]: d["verdict"] for d in doc["drills"]}
    assert verdicts == {
        "passes": "pass",
        "refused": "error",
        "aborted but says 0": "aborted",
        "interrupted": "aborted",
        "failed": "fail",
        "crashed": "unfinished",
    }
    part = next(p for p in doc["score"]["parts"] if p["id"] == "drills")
    assert (part["passed"], part["total"]) == (1, 6)
    assert part["counted"] == pytest.approx(1 / 6)
    # each figure is traceable to its events, and every drill but the pass is a finding
    crashed = next(d for d in doc["drills"] if d["title"] == "crashed")
    assert [p["kind"] for p in crashed["timeline"]][:2] == [
        ek.DRILL_STARTED,
        ek.DRILL_FAULT_INJECTED,
    ]
    assert crashed["broken"][0]["restored"] is True
    assert "serve.backend.ejected" in {p["kind"] for p in crashed["timeline"]}
    drill_findings = [f for f in doc["findings"] if f["source"] == "drill"]
    assert len(drill_findings) == 5
    assert all(f["event_ids"] for f in drill_findings)
    jsonschema.validate(doc, json.loads(schema_path().read_text()))


def test_a_later_pass_is_the_retest_and_old_evidence_is_stale(tmp_path: Path) -> None:
    manifest, log = _world(tmp_path)
    _drill(log, "vendor-x outage", status="failed", code=1)
    _drill(log, "vendor-x outage", status="completed")
    log.close()
    doc = build_report(manifest)  # type: ignore[arg-type]
    failed = next(f for f in doc["findings"] if f["source"] == "drill")
    assert failed["retest"]["verdict"] == "pass"
    assert failed["retest"]["drill"] == doc["drills"][1]["id"]
    part = next(p for p in doc["score"]["parts"] if p["id"] == "drills")
    assert (part["passed"], part["total"]) == (1, 1)  # the latest run of each drill counts
    # forty days on, the same run is stale evidence: it counts as nothing
    later = build_report(manifest, now=doc["generated_ts"] + 40 * 86400)  # type: ignore[arg-type]
    stale = next(p for p in later["score"]["parts"] if p["id"] == "drills")
    assert stale["stale"] is True
    assert stale["evidence"] == "stale"
    assert stale["value"] == 1.0  # what it said, shown; and counted as nothing
    assert stale["counted"] == 0.0
    assert stale["age_s"] > 39 * 86400


def test_vendor_concentration_sets_spend_beside_unavailability(tmp_path: Path) -> None:
    manifest = loads(MANIFEST, base_dir=tmp_path)
    spend = {("chat", "x"): {"USD": 9.0}, ("chat", "y"): {"USD": 1.0, "EUR": 2.0}}
    report = map_manifest(manifest, spend=spend)
    vendors = {v.vendor: v for v in report.vendors}
    assert vendors["vendor-x"].spend_share == {"USD": pytest.approx(0.9)}
    assert vendors["vendor-y"].spend_share == {"EUR": 1.0, "USD": pytest.approx(0.1)}
    for v in vendors.values():
        assert all(0 <= s <= 1 for s in v.unavailability_share.values())
    # the only cut set of chat is {vendor-x, vendor-y}: both are in all of it
    assert vendors["vendor-x"].unavailability_share == {"chat": 1.0}
    assert vendors["vendor-x"].concentrated
    doc = to_json(report)
    assert {v["vendor"] for v in doc["vendors"]} == {"vendor-x", "vendor-y"}
    warning = next(f for f in report.findings if f.subject == "vendor:vendor-x")
    assert warning.severity == "warning"
    assert "90% of the USD spend" in warning.message
    # no spend log: shares of unavailability only, and no concentration finding
    bare = map_manifest(manifest)
    assert all(v.spend_share == {} for v in bare.vendors)
    assert not [f for f in bare.findings if f.subject.startswith("vendor:")]


@pytest.fixture
def signed(tmp_path: Path) -> tuple[Path, Verifier]:
    manifest, log = _world(tmp_path)
    _drill(log, "passes", status="completed")
    log.close()
    make_key(tmp_path / "keys" / "signing.key")
    out = tmp_path / "report"
    write_report(build_report(manifest), out, Signer(tmp_path / "keys" / "signing.key"))  # type: ignore[arg-type]
    return out, Verifier.for_key_file(tmp_path / "keys" / "signing.key")


@pytest.mark.parametrize("name", [*FILES, SIGNATURE])
def test_any_edit_after_signing_fails_verify(signed: tuple[Path, Verifier], name: str) -> None:
    out, verifier = signed
    assert verify_report(out, verifier).files == FILES
    path = out / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match=re.escape(name)):
        verify_report(out, verifier)


def test_a_report_signed_by_another_key_or_incomplete_fails(
    signed: tuple[Path, Verifier], tmp_path: Path
) -> None:
    out, verifier = signed
    make_key(tmp_path / "other.key")
    with pytest.raises(IntegrityError, match="not the vault's key"):
        verify_report(out, Verifier.for_key_file(tmp_path / "other.key"))
    (out / "junit.xml").unlink()
    with pytest.raises(IntegrityError, match=r"junit\.xml: missing"):
        verify_report(out, verifier)
    (out / SIGNATURE).unlink()
    with pytest.raises(UsageError, match="not a signed report"):
        verify_report(out, verifier)
    with pytest.raises(UsageError, match="no such directory"):
        verify_report(tmp_path / "nowhere", verifier)


def test_the_schema_refuses_a_score_out_of_bounds(signed: tuple[Path, Verifier]) -> None:
    out, _ = signed
    doc = json.loads((out / "report.json").read_text())
    schema = json.loads(schema_path().read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(doc, schema)
    doc["score"]["value"] = 100.5
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(doc, schema)


def _suite_journal(twin: EventLog, suite: str, scenario: str, status: str) -> dict[str, object]:
    """A journal as `bastion drill suite` writes it: the twin's events copied into it."""
    first = twin.emit(ek.DRILL_FAULT_INJECTED, "chat", fault="process.kill", name="k")
    broken = twin.emit(ek.DRILL_STEADY_STATE_BROKEN, "chat", phase="during", probes=["ok"])
    restored = twin.emit(ek.DRILL_STEADY_STATE_RESTORED, "chat", phase="during")
    done = twin.emit(ek.DRILL_FINISHED, "chat", title=scenario, status=status, exit_code=0)
    events = [first, broken, restored, done]
    return {
        "title": scenario,
        "status": status,
        "bastion": {
            "events": [e.to_json() for e in events],
            "samples": [
                {"mono_ns": e.mono_ns, "met": e is not broken, "phase": "during"} for e in events
            ],
            "measurements": {"rto_s": 0.5, "time_to_detect_s": 0.1},
            "exit_code": 0,
            "aborted": "abort condition" if status == "aborted" else None,
            "problems": [],
            "cost": {"currencies": ["USD"], "total": {"USD": 0.5}, "extra": {"USD": 0.4}},
            "suite": {"suite": suite, "scenario": scenario, "title": f"the {scenario}"},
        },
    }


def test_suite_scenarios_are_read_from_their_events_and_journals(tmp_path: Path) -> None:
    manifest, log = _world(tmp_path)
    state = manifest.state_dir  # type: ignore[attr-defined]
    twin = EventLog(tmp_path / "twin-events.db")  # the twin's log, gone with the twin
    out = state / "drills" / "suite" / "s1"
    out.mkdir(parents=True)
    # a drill of production's own whose id range the twin's ids fall into
    _drill(log, "production drill", status="completed")
    cases = {
        "replica-killed": ("passed", "completed"),
        "vendor-outage": ("passed", "aborted"),  # the suite said passed; the journal says not
        "disk-full": ("errored", "failed"),
        "gpu-lost": ("skipped", None),
        "no-journal": ("passed", None),
    }
    for name, (verdict, status) in cases.items():
        path = None
        if status is not None:
            path = out / f"{name}.json"
            path.write_text(json.dumps(_suite_journal(twin, "s1", name, status)))
        log.emit(
            ek.DRILL_SUITE_SCENARIO, name, suite="s1", scenario=name, verdict=verdict,
            reason="" if verdict == "passed" else f"{verdict} for a reason", rto_s=0.5,
            journal=None if path is None else str(path),
        )  # fmt: skip
    log.close()
    twin.close()
    doc = build_report(manifest)  # type: ignore[arg-type]
    verdicts = {d["scenario"] or d["title"]: d["verdict"] for d in doc["drills"]}
    assert verdicts == {
        "production drill": "pass",
        "replica-killed": "pass",
        "vendor-outage": "aborted",
        "disk-full": "error",
        "gpu-lost": "skipped",
        "no-journal": "error",  # a pass nobody can check is no pass
    }
    own = next(d for d in doc["drills"] if d["title"] == "production drill")
    assert own["samples"] == []  # no suite journal was taken for production's drill
    killed = next(d for d in doc["drills"] if d["scenario"] == "replica-killed")
    assert killed["log"] == "journal"
    assert killed["suite"] == "s1"
    assert killed["broken"]
    assert killed["samples"]
    part = next(p for p in doc["score"]["parts"] if p["id"] == "drills")
    assert (part["passed"], part["total"]) == (2, 5)  # the skipped one is not counted
    assert not [f for f in doc["findings"] if f["subject"] == "gpu-lost"]
    # what the fault cost, from the journal, is on the page beside the recovery figures
    assert "The fault cost 0.5000 USD (extra 0.4000 from retries" in html(doc)
    jsonschema.validate(doc, json.loads(schema_path().read_text()))


def test_the_changes_part_is_one_minus_the_change_failure_rate(tmp_path: Path) -> None:
    manifest, log = _world(tmp_path)
    log.emit(ek.MODEL_PROMOTED, "model/chat", version=1)
    log.emit(ek.MODEL_PROMOTED, "model/chat", version=2)
    last = log.emit(ek.MODEL_ROLLED_BACK, "model/chat", version=1)
    log.close()
    doc = build_report(manifest)  # type: ignore[arg-type]
    part = next(p for p in doc["score"]["parts"] if p["id"] == "changes")
    assert part["value"] == 0.5
    assert (part["passed"], part["total"]) == (1, 2)
    assert part["age_s"] is not None
    assert doc["outcomes"]["last_change_ts"] == pytest.approx(last.ts)
    assert set(part["event_ids"]) == {1, 2, 3}
