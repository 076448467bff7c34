"""The map from manifests: derived nodes, recovery checks, errors for manifests built in
code (which skip the loader's cross-checks), and the observed-dependency matcher."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bastion.errors import UsageError
from bastion.events import EventLog
from bastion.manifest import Manifest, loads
from bastion.map import map_manifest, observed_dependencies, render, to_json
from bastion.map._analysis import advice

BASE: dict[str, Any] = {
    "version": 1,
    "system": "s",
    "components": [
        {"id": "gpu", "kind": "compute", "availability": 0.99, "domains": {"site": "dc1"}},
        {"id": "store", "kind": "storage", "availability": 0.999, "domains": {"site": "dc1"}},
    ],
    "jobs": {"train": {"command": ["true"], "depends_on": ["gpu"]}},
}


def build(**changes: Any) -> Manifest:
    return Manifest.model_validate({**BASE, **changes})


def test_manifest_built_in_code_with_unknown_component_is_a_clear_error() -> None:
    manifest = build(jobs={"train": {"command": ["true"], "depends_on": ["gpus"]}})
    with pytest.raises(
        UsageError,
        match=r"'train' \(jobs.train\) depends on unknown component "
        r"'gpus' \(did you mean 'gpu'\?\)",
    ):
        map_manifest(manifest)


def test_manifest_built_in_code_with_a_cycle_is_a_clear_error() -> None:
    comps = [
        {"id": "a", "kind": "compute", "depends_on": ["b"]},
        {"id": "b", "kind": "compute", "depends_on": ["a"]},
        {"id": "gpu", "kind": "compute"},
    ]
    with pytest.raises(UsageError, match="dependency cycle: a -> b -> a"):
        map_manifest(build(components=comps))


def test_loader_reports_k_greater_than_n_and_bad_availability_with_place() -> None:
    text = """\
version: 1
system: s
components:
  - {id: a, kind: compute, availability: 1.2}
  - id: g
    kind: compute
    redundancy: {mode: k-of-n, k: 3, members: [a]}
"""
    with pytest.raises(UsageError) as info:
        loads(text)
    message = str(info.value)
    assert "bastion.yaml:4:" in message
    assert "k = 3 > n = 1 members" in message


def test_job_with_slots_and_inputs_and_vault() -> None:
    manifest = build(
        vault={"replicas": ["/tmp/a", "s3://bucket/x", "s3://bucket/y"]},
        jobs={
            "train": {
                "command": ["true"],
                "depends_on": ["gpu"],
                "inputs": {"data": "dataset/d@1"},
                "slots": [
                    {"name": "w1"},
                    {"name": "w2", "backend": "ray", "address": "10.0.0.5:6379"},
                ],
            }
        },
    )
    report = map_manifest(manifest, max_order=3)
    train = report.top("train")
    sets = {c.events for c in train.cut_sets}
    assert ("gpu",) in sets
    # The local slot and the Ray slot fail apart: losing both takes this machine (or the
    # local worker) and the Ray cluster's head.
    assert ("ray:10.0.0.5:6379", "train:slot=w1") in sets
    # Two S3 replicas behind one endpoint (AWS's, as no endpoint is named) share its fate:
    # with the local one that is an order-2 set.
    assert ("ccf:endpoint=s3.us-east-1.amazonaws.com", "vault:0") in sets
    assert ("vault:0", "vault:1", "vault:2") in sets
    assert train.availability == pytest.approx(0.99)


def test_s3_replicas_share_fate_by_endpoint_and_a_loopback_one_shares_the_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION"):
        monkeypatch.delenv(name, raising=False)
    two_clouds = build(
        vault={
            "replicas": [
                "s3://a/x?endpoint=https://s3.eu-west-1.amazonaws.com",
                "s3://b/x?endpoint=https://storage.example.net:9000",
            ]
        },
        jobs={"train": {"command": ["true"]}},
    )
    sets = {c.events for c in map_manifest(two_clouds, max_order=3).top("train").cut_sets}
    assert ("vault:0", "vault:1") in sets
    assert not any(e.startswith("ccf:") for cut in sets for e in cut)
    one_box = build(
        vault={"replicas": ["/tmp/a", "s3://b/x?endpoint=http://127.0.0.1:8333"]},
        jobs={"train": {"command": ["true"]}},
    )
    report = map_manifest(one_box, max_order=3)
    sets = {c.events for c in report.top("train").cut_sets}
    assert ("ccf:host=localhost",) in sets  # the S3 server runs on the vault's own machine
    assert "share one machine" in advice(report, "ccf:host=localhost")


def test_ray_slots_and_replicas_share_their_cluster_and_the_event_log_is_soft() -> None:
    manifest = build(
        vault={"replicas": ["/tmp/a", "s3://b/x?endpoint=https://s3.example.net"]},
        events="postgresql://bastion@db.example.net:5432/bastion",
        jobs={
            "train": {
                "command": ["true"],
                "slots": [
                    {"name": "r1", "backend": "ray", "address": "10.0.0.5:6379"},
                    {"name": "r2", "backend": "ray", "address": "10.0.0.5:6379"},
                ],
            }
        },
        services={
            "chat": {
                "backends": [
                    {
                        "name": "m",
                        "model": "model/m@1",
                        "replicas": {"min": 2, "max": 2},
                        "placement": {"backend": "ray", "address": "10.0.0.5:6379"},
                    }
                ]
            }
        },
    )
    report = map_manifest(manifest, max_order=2)
    # Two Ray slots on one cluster are one point of failure: the cluster's head.
    assert ("ray:10.0.0.5:6379",) in {c.events for c in report.top("train").cut_sets}
    # The replicas spread over nodes, but share the head too.
    assert ("ray:10.0.0.5:6379",) in {c.events for c in report.top("chat").cut_sets}
    node = report.graph.nodes["ray:10.0.0.5:6379"]
    assert node.domains == {"host": "10.0.0.5"}
    log = report.graph.nodes["events:log"]
    assert log.domains == {"host": "db.example.net"}
    assert "events:log" in report.graph.nodes["train"].soft
    assert "events:log" in report.graph.nodes["chat"].soft
    # Soft: losing the log takes nothing down.
    assert all("events:log" not in c.events for c in report.top("chat").cut_sets)


def test_recovery_site_target_with_every_replica_on_one_site_is_a_breach() -> None:
    manifest = build(recovery={"site": {"rto_s": 300, "rpo_s": 60}})
    report = map_manifest(manifest)
    warnings = [f for f in report.findings if f.subject == "recovery.site"]
    assert [f.severity for f in warnings] == ["warning"]
    assert "losing site dc1 takes down train" in warnings[0].message
    comps = [
        *BASE["components"],
        {"id": "nas-a", "kind": "storage", "domains": {"site": "dc1"}},
    ]
    report = map_manifest(build(components=comps, recovery={"region": {"rto_s": 300, "rpo_s": 60}}))
    assert any(
        f.severity == "info" and "no two components share a region" in f.message
        for f in report.findings
    )


def test_json_document_has_the_documented_keys() -> None:
    doc = to_json(map_manifest(build()))
    assert set(doc) == {
        "schema",
        "system",
        "ok",
        "max_order",
        "beta",
        "nodes",
        "events",
        "tops",
        "blast_radius",
        "findings",
        "statistics",
        "vendors",
    }
    node = next(n for n in doc["nodes"] if n["id"] == "gpu")
    assert node["spof"] is True
    # gpu and store share site dc1: a common-cause group, so the site is a SPOF too.
    assert node["spof_events"] == ["gpu", "ccf:site=dc1"]
    assert doc["tops"][0]["spofs"] == ["gpu", "ccf:site=dc1"]


def test_render_rejects_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format 'svg'"):
        render(map_manifest(build()), "svg")


@settings(max_examples=40, deadline=None)
@given(
    targets=st.lists(
        st.tuples(
            st.sampled_from(["train", "ghost", ""]),
            st.text(max_size=40),
            st.sampled_from(["input", "backend", "", "x"]),
        ),
        max_size=8,
    )
)
def test_observed_never_crashes_on_odd_events(
    tmp_path_factory: pytest.TempPathFactory, targets: list[tuple[str, str, str]]
) -> None:
    directory: Path = tmp_path_factory.mktemp("obs")
    manifest = build(
        vault={"replicas": ["/tmp/a"]},
        jobs={"train": {"command": ["true"], "inputs": {"data": "dataset/d@1"}}},
    )
    with EventLog.in_state_dir(directory) as log:
        for subject, target, via in targets:
            log.emit("dep.used", subject=subject, target=target, via=via)
        log.emit("dep.used", subject="train", target="dataset/d@7", via="input")
        report = observed_dependencies(manifest, log)
    assert report.events == len(targets) + 1
    for dep in report.undeclared:
        assert not (dep.subject == "train" and dep.target in ("dataset/d@1", "dataset/d@7"))
    expected = {(s, t) for s, t, _ in targets if s != "train" or t not in ("data", "dataset/d@1")}
    expected = {(s, t) for s, t in expected if not (s == "train" and t.startswith("dataset/d@"))}
    assert {(d.subject, d.target) for d in report.undeclared} <= expected


def test_every_vault_replica_in_one_failure_domain_breaches_its_rpo_target() -> None:
    manifest = build(
        vault={"replicas": ["/tmp/a", "/tmp/b"]},
        recovery={"host": {"rto_s": 60, "rpo_s": 0}},
    )
    report = map_manifest(manifest)
    assert report.findings[0].severity == "breach"
    assert report.findings[0].message == (
        "recovery.host (RPO 0 s): every vault replica is in host localhost, "
        "so losing it loses every copy"
    )
    assert not report.ok
