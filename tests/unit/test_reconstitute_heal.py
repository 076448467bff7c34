"""The pure and in-memory parts of reconstitution: ``Vault.heal`` on two in-memory
replicas (a missing document and chunk copied back; rebuilt bytes accepted only when
hash-identical, and nothing written otherwise), environment differences, and a
recipe's refusal of a malformed record."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from bastion.errors import IntegrityError
from bastion.pipeline import Recipe, replay_problems
from bastion.store import MemoryStore
from bastion.train import PLANNED_KEYS, differences, environment
from bastion.vault import Vault, make_key
from bastion.vault._layout import version_key
from bastion.vault._objects import object_key


@pytest.fixture
def vault(tmp_path: Path) -> Vault:
    key = tmp_path / "keys" / "signing.key"
    make_key(key)
    make_key(tmp_path / "keys" / "admin.key")
    return Vault(
        [MemoryStore("a"), MemoryStore("b")],
        key_path=key,
        admin_key_path=key.with_name("admin.key"),
        state_dir=tmp_path / "state",
    )


def _weights(rng: random.Random) -> bytes:
    return rng.randbytes(4_500_000)  # over the 4 MiB largest chunk: at least two chunks


def test_heal_copies_a_lost_replica_back_from_the_intact_one(
    vault: Vault, rng: random.Random
) -> None:
    snap = vault.commit("model/m", {"w.bin": _weights(rng), "model.json": b"{}"})
    a = vault.stores[0]
    for key in [version_key("model/m", 1), *(object_key(c) for c in snap.chunk_ids())]:
        assert a.delete(key)
    report = vault.heal("model/m@1")
    assert report.whole
    assert report.chunks_repaired == len(snap.chunk_ids())
    assert report.documents_repaired >= 1
    for chunk in snap.chunk_ids():
        assert a.has(object_key(chunk))
    assert a.has(version_key("model/m", 1))


def test_rebuilt_bytes_heal_only_when_hash_identical(vault: Vault, rng: random.Random) -> None:
    weights = _weights(rng)
    snap = vault.commit("model/m", {"w.bin": weights, "model.json": b"{}"})
    assert len(snap.files["w.bin"].chunks) > 1
    for store in vault.stores:
        for chunk in snap.files["w.bin"].chunks:
            store.delete(object_key(chunk.id))
    lost = vault.heal(snap)
    assert lost.lost == ("w.bin",)

    flipped = bytearray(weights)
    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    with pytest.raises(IntegrityError, match="not hash-identical"):
        vault.heal(snap, rebuilt={"w.bin": bytes(flipped), "model.json": b"{}"})
    for store in vault.stores:  # nothing of the wrong rebuild was written
        assert not any(store.has(object_key(c.id)) for c in snap.files["w.bin"].chunks)
    with pytest.raises(IntegrityError, match="missing from the rebuild"):
        vault.heal(snap, rebuilt={"w.bin": weights})

    report = vault.heal(snap, rebuilt={"w.bin": weights, "model.json": b"{}"})
    assert report.whole
    assert report.chunks_rebuilt == len(snap.files["w.bin"].chunks)
    assert vault.read(snap, "w.bin") == weights  # the same signed snapshot reads whole


def test_environment_differences_name_both_values() -> None:
    here = environment()
    recorded = {**here, "torch": "1.13.1", "threads": 4}
    said = differences(recorded, {**here, "threads": 1})
    assert f"torch 1.13.1 recorded, {here['torch']} here" in said
    assert "threads 4 recorded, 1 here" in said
    # what one side does not know is no difference; keys restrict the comparison
    assert differences({**here, "threads": None}, {**here, "threads": 2}) == []
    assert differences(recorded, here, keys=("python",)) == []
    assert set(PLANNED_KEYS) <= set(here)


def test_a_recipe_is_refused_when_malformed_or_from_elsewhere(vault: Vault) -> None:
    snap = vault.commit("model/m", {"x": b"1"}, meta={"recipe": {"format": "other/9"}})
    with pytest.raises(IntegrityError, match="other/9"):
        Recipe.of(snap)
    broken = vault.commit("model/m", {"x": b"1"}, meta={"recipe": {"format": "bastion.recipe/1"}})
    with pytest.raises(IntegrityError, match="malformed recipe"):
        Recipe.of(broken)
    assert Recipe.of(vault.commit("model/m", {"x": b"1"})) is None
    recipe = Recipe(
        command=("python", "x.py"),
        workdir=".",
        code=None,
        inputs={},
        environment={**environment(), "torch": "0.0.1"},
        uncaptured=("/usr/bin/tool",),
    )
    problems = replay_problems(recipe)
    assert any(p.startswith("torch 0.0.1 recorded") for p in problems)
    assert "its code was not recorded" in problems
    assert any("/usr/bin/tool" in p for p in problems)
