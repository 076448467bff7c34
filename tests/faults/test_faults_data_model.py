"""Data and model faults: counted, seeded damage on real files, and an exact revert."""

from __future__ import annotations

import csv
import hashlib
import io
import math
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bastion.drill.faults import (
    CorruptWeights,
    DistributionShift,
    LabelFlip,
    NanInjection,
    SchemaBreak,
    Scope,
    SwapModel,
    degrade,
)
from bastion.errors import ScopeError, UsageError


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("*.csv"))}


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(path.read_text())))
    return rows[0], rows[1:]


@pytest.fixture
def dataset(example_copy: Path) -> Path:
    return example_copy / "dataset"


def test_label_flip_in_place_and_revert(dataset: Path, seed: int) -> None:
    before = _digests(dataset)
    _, rows_before = _table(dataset / "shard-00.csv")
    fault = LabelFlip(dataset, scope=Scope.of(paths=[dataset]), fraction=0.2, seed=seed)
    fault.inject()
    _, rows_after = _table(dataset / "shard-00.csv")
    flipped = sum(a[-1] != b[-1] for a, b in zip(rows_before, rows_after, strict=True))
    assert flipped == round(len(rows_before) * 0.2)
    assert all(a[:-1] == b[:-1] for a, b in zip(rows_before, rows_after, strict=True))
    fault.revert()
    assert _digests(dataset) == before


def test_damage_on_a_copy_leaves_the_source(dataset: Path, tmp_path: Path, seed: int) -> None:
    before = _digests(dataset)
    copy = tmp_path / "drill-copy"
    fault = NanInjection(
        dataset,
        scope=Scope.of(paths=[tmp_path / "drill-copy"]),
        copy_to=copy,
        fraction=0.05,
        seed=seed,
    )
    fault.inject()
    text = (copy / "shard-03.csv").read_text()
    assert "NaN" in text
    _, rows = _table(copy / "shard-03.csv")
    assert all(r[-1] != "NaN" for r in rows)  # labels are left alone
    assert any(math.isnan(float(v)) for r in rows for v in r[:-1])
    assert _digests(dataset) == before
    fault.revert()
    assert not copy.exists()


def test_in_place_needs_scope(dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ScopeError):
        LabelFlip(dataset, scope=Scope.of(paths=[tmp_path / "elsewhere"]))


@pytest.mark.parametrize("mode", SchemaBreak.MODES)
def test_schema_break_modes(dataset: Path, seed: int, mode: str) -> None:
    before = _digests(dataset)
    header_before, _ = _table(dataset / "shard-01.csv")
    with SchemaBreak(dataset, scope=Scope.of(paths=[dataset]), mode=mode, seed=seed):
        header, rows = _table(dataset / "shard-01.csv")
        if mode == "bad_type":
            assert any(r[-1] == "not-a-number" for r in rows)
        else:
            assert header != header_before
    assert _digests(dataset) == before


def test_distribution_shift_moves_the_mean(dataset: Path, seed: int) -> None:
    before = _digests(dataset)

    def mean_feature() -> float:
        _, rows = _table(dataset / "shard-02.csv")
        return float(np.mean([[float(v) for v in r[:-1]] for r in rows]))

    base = mean_feature()
    with DistributionShift(
        dataset, scope=Scope.of(paths=[dataset]), fraction=1.0, offset=4.0, seed=seed
    ):
        assert mean_feature() == pytest.approx(base + 4.0, abs=0.01)
    assert _digests(dataset) == before


def test_blast_radius_rows(dataset: Path, seed: int) -> None:
    before = _digests(dataset)
    fault = LabelFlip(dataset, scope=Scope.of(paths=[dataset]), fraction=1.0, max_rows=10)
    with pytest.raises(UsageError, match="max_rows"):
        fault.inject()
    assert _digests(dataset) == before


def _checkpoint(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    save_file(
        {
            "fc1.weight": rng.normal(size=(64, 64)).astype(np.float32),
            "fc1.bias": rng.normal(size=(64,)).astype(np.float32),
            "fc2.weight": rng.normal(size=(10, 64)).astype(np.float32),
            "step": np.array([400], dtype=np.int64),
        },
        str(path),
    )


@pytest.mark.parametrize("mode", ["nan", "zero"])
def test_corrupt_weights_and_revert(tmp_path: Path, seed: int, mode: str) -> None:
    ckpt = tmp_path / "model.safetensors"
    _checkpoint(ckpt, seed)
    before = ckpt.read_bytes()
    fault = CorruptWeights(
        ckpt,
        scope=Scope.of(paths=[tmp_path]),
        mode=mode,
        tensors=["fc1.weight"],
        fraction=0.5,
        seed=seed,
    )
    fault.inject()
    w = load_file(str(ckpt))  # still a valid checkpoint: a loader accepts it
    bad = np.isnan(w["fc1.weight"]) if mode == "nan" else w["fc1.weight"] == 0
    assert 0.3 < bad.mean() < 0.7
    assert not np.isnan(w["fc2.weight"]).any()
    fault.revert()
    assert ckpt.read_bytes() == before


def test_swap_in_a_degraded_model(tmp_path: Path, seed: int) -> None:
    good = tmp_path / "serving" / "model.safetensors"
    good.parent.mkdir()
    _checkpoint(good, seed)
    before = good.read_bytes()
    mode = good.stat().st_mode
    worse = degrade(good, tmp_path / "degraded.safetensors", noise=1.0, seed=seed)
    with SwapModel(good, worse, scope=Scope.of(paths=[good.parent])):
        swapped = load_file(str(good))
        original = load_file(str(worse))
        assert np.array_equal(swapped["fc1.weight"], original["fc1.weight"])
    assert good.read_bytes() == before
    assert good.stat().st_mode == mode
    assert len(list(good.parent.iterdir())) == 1
