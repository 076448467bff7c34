"""Promotion through gates only, on a real vault with models in the example's format:
``@prod`` moves only with a passing verdict naming that exact snapshot (judged against
the ``@prod`` of now), never for a corrupt or swapped model, a failing or insufficient
verdict, or a verdict for another snapshot; ``--force`` needs the admin key and is an
event; ``rollback`` walks back along a history that survives reopening the vault."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.drill.faults import CorruptWeights, Scope, SwapModel, degrade
from bastion.errors import ScopeError
from bastion.events import EventLog
from bastion.manifest import load
from bastion.validate import (
    PromotionRefused,
    Status,
    canonical_json,
    promote,
    promotion_history,
    rollback,
    validate_data,
)
from bastion.vault import Vault, make_key
from tests.helpers import run_bastion
from tests.integration.test_validate_data_gate import _faults, _Make
from tests.integration.test_validate_model_gate import (
    World,
    _commit_dir,
    _model_dir,
    _weights,
)


def _vault(tmp: Path, *, admin: bool = False) -> Vault:
    keys = tmp / "keys"
    make_key(keys / "signing.key")
    if admin:
        make_key(keys / "admin.key")
    return Vault(
        [tmp / "vault" / "a", tmp / "vault" / "b"],
        key_path=keys / "signing.key",
        admin_key_path=keys / "admin.key" if admin else None,
        state_dir=tmp / "state",
        events=EventLog.in_state_dir(tmp / "state"),
    )


@pytest.fixture
def world(example_copy: Path, tmp_path: Path) -> World:
    return World(_vault(tmp_path, admin=True), tmp_path)


def _kinds(world: World) -> list[str]:
    log = EventLog.in_state_dir(world.tmp / "state")
    return [e.kind for e in log.query() if e.kind.startswith("model.")]


def _prod(world: World) -> int:
    return world.vault.labels("model/digits")["prod"]


def test_a_passing_verdict_promotes_that_snapshot_and_rollback_goes_back(
    world: World, seed: int
) -> None:
    # the first model: no @prod history yet, so promote it through a verdict of its own
    better = _commit_dir(world.vault, "model/digits", _model_dir(world.tmp / "b", _weights(200)))
    with pytest.raises(PromotionRefused, match="no model-gate verdict names"):
        promote(world.vault, better)
    assert _prod(world) == 1
    run = world.gate(better)
    assert run.status is Status.PASSED, run.document["findings"]
    done = promote(world.vault, better)
    assert (done.moved, done.version, done.previous) == (True, 2, 1)
    assert done.verdict == run.snapshot.ref
    assert _prod(world) == 2
    # the same again: nothing moves, nothing is written
    assert not promote(world.vault, better).moved
    # the history survives a fresh vault object (a restart); the @prod set before the
    # first promotion was adopted into it, so a rollback returns there
    back = rollback(_vault_again(world), "model/digits")
    assert (back.action, back.version, back.previous, back.moved) == ("rollback", 1, 2, True)
    assert _prod(world) == 1
    with pytest.raises(PromotionRefused, match="no earlier promoted version"):
        rollback(_vault_again(world), "model/digits")
    assert _prod(world) == 1
    # the verdict was judged against @1, which is @prod again: it promotes once more
    assert promote(_vault_again(world), better).version == 2
    history = promotion_history(world.vault, "model/digits")
    assert [e["version"] for e in history.stack] == [1, 2]
    assert [e["action"] for e in history.log] == ["promote", "rollback", "promote"]
    assert _kinds(world).count(ek.MODEL_PROMOTED) == 2
    assert ek.MODEL_ROLLED_BACK in _kinds(world)


def _vault_again(world: World) -> Vault:
    keys = world.tmp / "keys"
    return Vault(
        [world.tmp / "vault" / "a", world.tmp / "vault" / "b"],
        key_path=keys / "signing.key",
        admin_key_path=keys / "admin.key",
        state_dir=world.tmp / "state",
        events=EventLog.in_state_dir(world.tmp / "state"),
    )


@pytest.mark.parametrize("fault", ["corrupt_nan", "corrupt_zero", "swap"])
def test_a_model_the_gate_stopped_is_never_promoted(world: World, seed: int, fault: str) -> None:
    damaged = world.tmp / "damaged"
    shutil.copytree(world.prod_dir, damaged)
    scope = Scope.of(paths=[damaged])
    if fault == "swap":
        worse = degrade(world.prod_dir / "model.safetensors", world.tmp / "worse.st", seed=seed)
        injected = SwapModel(damaged / "model.safetensors", worse, scope=scope)
    else:
        mode = fault.removeprefix("corrupt_")
        injected = CorruptWeights(
            damaged / "model.safetensors",
            scope=scope,
            mode=mode,
            tensors=["0.weight"],
            fraction=0.2 if mode == "nan" else 1.0,
            seed=seed,
        )
    with injected:
        candidate = _commit_dir(world.vault, "model/digits", damaged)
    run = world.gate(candidate)
    assert run.status is Status.FAILED
    with pytest.raises(PromotionRefused, match="is failed"):
        promote(world.vault, candidate)
    assert _prod(world) == 1
    assert ek.MODEL_PROMOTION_REFUSED in _kinds(world)
    print(f"seed {seed}: {fault} stopped; @prod stays model/digits@1")


def test_insufficient_evidence_a_stale_baseline_or_another_snapshot_never_promote(
    world: World, seed: int
) -> None:
    better_dir = _model_dir(world.tmp / "b", _weights(200))
    better = _commit_dir(world.vault, "model/digits", better_dir)
    # an empty golden set: insufficient evidence, never a pass
    empty = world.tmp / "empty-golden"
    empty.mkdir()
    header = (world.tmp / "golden" / "golden.csv").read_text().splitlines()[0]
    (empty / "golden.csv").write_text(header + "\n")
    golden = _commit_dir(world.vault, "dataset/digits-golden", empty)
    assert world.gate(better, golden=golden).status is Status.INSUFFICIENT
    with pytest.raises(PromotionRefused, match="insufficient_evidence"):
        promote(world.vault, better)
    # a pass for @2 does not promote @3, the same bytes committed again (another snapshot)
    assert world.gate(better, golden="dataset/digits-golden@1").status is Status.PASSED
    twin = _commit_dir(world.vault, "model/digits", better_dir)
    with pytest.raises(PromotionRefused, match=f"no model-gate verdict names snapshot {twin}"):
        promote(world.vault, twin)
    # a verdict judged against a @prod that has since moved is stale
    world.vault.label("model/digits", 3, "prod")
    with pytest.raises(PromotionRefused, match="but @prod is model/digits@3"):
        promote(world.vault, better)
    assert _prod(world) == 3


def test_a_verdict_that_names_another_snapshot_is_refused(world: World, seed: int) -> None:
    """A verdict snapshot signed with the vault's key but whose verdict.json names another
    snapshot than its meta (a hand-made or replayed document) does not promote."""
    better = _commit_dir(world.vault, "model/digits", _model_dir(world.tmp / "b", _weights(200)))
    run = world.gate(better)
    assert run.status is Status.PASSED
    doc = dict(run.document)
    doc["subject"] = {"ref": world.prod, "id": world.vault.snapshot(world.prod).id}
    world.vault.commit(
        "verdict/model/digits",
        {"verdict.json": canonical_json(doc)},
        meta={**run.snapshot.meta},
        lineage=[better],
    )
    with pytest.raises(PromotionRefused, match="does not name snapshot"):
        promote(world.vault, better)
    assert _prod(world) == 1


def test_force_needs_the_admin_key_and_is_an_event(
    example_copy: Path, tmp_path: Path, seed: int
) -> None:
    writer = World(_vault(tmp_path), tmp_path)  # a host with the signing key only
    worse = tmp_path / "worse"
    shutil.copytree(writer.prod_dir, worse)
    degrade(writer.prod_dir / "model.safetensors", worse / "model.safetensors", seed=seed)
    candidate = _commit_dir(writer.vault, "model/digits", worse)
    with pytest.raises(ScopeError, match="admin key"):
        promote(writer.vault, candidate, force=True, reason="test")
    assert writer.vault.labels("model/digits")["prod"] == 1
    make_key(tmp_path / "keys" / "admin.key")
    admin = _vault_again(writer)
    done = promote(admin, candidate, force=True, reason="incident 12")
    assert (done.action, done.version, done.verdict) == ("force", 2, None)
    forced = [
        e
        for e in EventLog.in_state_dir(tmp_path / "state").query()
        if e.kind == ek.MODEL_PROMOTION_FORCED
    ]
    assert len(forced) == 1
    assert forced[0].data["reason"] == "incident 12"
    entry = promotion_history(admin, "model/digits").stack[-1]
    assert entry["action"] == "force"
    assert len(bytes.fromhex(entry["admin_signature"])) == 64


def test_cli_promote_and_rollback_exit_codes(example_copy: Path, tmp_path: Path, seed: int) -> None:
    assert run_bastion("init", cwd=example_copy).returncode == 0
    vault = Vault.from_manifest(load(example_copy / "bastion.yaml"))
    world = World(vault, tmp_path)
    better = _commit_dir(vault, "model/digits", _model_dir(tmp_path / "b", _weights(200)))
    refused = run_bastion("model", "promote", better, cwd=example_copy)
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "no model-gate verdict" in refused.stdout + refused.stderr
    assert world.gate(better).status is Status.PASSED
    ok = run_bastion("model", "promote", better, "--json", cwd=example_copy)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert json.loads(ok.stdout)["version"] == 2
    missing = run_bastion("model", "promote", "model/digits@9", cwd=example_copy)
    assert missing.returncode == 2, missing.stdout + missing.stderr
    back = run_bastion("model", "rollback", "model/digits", cwd=example_copy)
    assert back.returncode == 0, back.stdout + back.stderr
    assert "model/digits@2 -> model/digits@1" in back.stdout
    nothing = run_bastion("model", "rollback", "model/digits", cwd=example_copy)
    assert nothing.returncode == 1, nothing.stdout + nothing.stderr
    assert vault.labels("model/digits")["prod"] == 1
    # a put cannot move a model's @prod around the gates
    bypass = run_bastion(
        "vault", "put", "model/digits", str(tmp_path / "b"), "--label", "prod", cwd=example_copy
    )
    assert bypass.returncode == 2, bypass.stdout + bypass.stderr
    assert "bastion model promote" in bypass.stderr
    assert vault.labels("model/digits")["prod"] == 1


@pytest.mark.parametrize(("make", "check"), _faults())
def test_a_model_made_from_a_dataset_the_gate_stopped_never_reaches_prod(
    world: World, example_copy: Path, seed: int, make: _Make, check: str
) -> None:
    """Every data fault is stopped at the data gate, and @prod never moves: even a model
    that passes its own gate is refused when its lineage holds the stopped dataset."""
    source = example_copy / "dataset"
    reference = _commit_dir(world.vault, "dataset/digits", source)
    damaged = world.tmp / "damaged"
    with make(source, damaged, seed):
        poisoned = _commit_dir(world.vault, "dataset/digits", damaged)
    data = validate_data(world.vault, poisoned, reference)
    assert data.status is Status.FAILED
    assert check in {f.check for f in data.verdict.findings}
    # the model here was not really trained on it (the test's weights are fixed), so its
    # own gate passes: the dataset in its lineage is what stops it
    model_dir = _model_dir(world.tmp / "m", _weights(200))
    files = {p.name: p for p in sorted(model_dir.iterdir())}
    candidate = world.vault.commit("model/digits", files, lineage=[poisoned]).ref
    assert world.gate(candidate).status is Status.PASSED
    with pytest.raises(PromotionRefused, match=f"trained on {poisoned}, which the data gate"):
        promote(world.vault, candidate)
    assert _prod(world) == 1
    # the same model made from the clean reference (judged, passed) is promoted
    assert validate_data(world.vault, reference, reference).status is Status.PASSED
    clean = world.vault.commit("model/digits", files, lineage=[reference]).ref
    assert world.gate(clean).status is Status.PASSED
    assert promote(world.vault, clean).moved
    print(f"seed {seed}: {check} stopped {poisoned}; @prod moved only for {clean}")
