"""Train/test leakage: rows of a test set that also appear in the training set.

Owns: ``shared_rows``. Each row becomes a 64-bit key computed from its cells (numbers by
their float64 bits, with -0.0 read as 0.0 and every NaN as one NaN; text by its position
in a vocabulary built over both tables), mixed column by column with the SplitMix64
finaliser; a test row leaks when its key is among the training rows' keys. Two different
rows share a key with probability about n*m / 2**64 (below 1e-9 for two tables of a
million rows), so a count is exact in practice.

Must never: read files, or compare more than the columns both tables share (the schema
check is where a missing column is reported).

By default the label is left out of the key: the same features with another label in
the test set are still a leaked example (and a label conflict).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bastion.validate._table import Table
from bastion.validate._verdict import Finding, Status

__all__ = ["Leakage", "shared_rows"]

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True, slots=True)
class Leakage:
    """``shared``: test rows whose cells (over ``columns``) equal a training row's;
    ``examples``: the first few of their row numbers in the test table (0-based)."""

    shared: int
    test_rows: int
    columns: tuple[str, ...]
    max_fraction: float
    examples: tuple[int, ...] = ()

    @property
    def fraction(self) -> float:
        return self.shared / self.test_rows if self.test_rows else 0.0

    @property
    def status(self) -> Status:
        return Status.FAILED if self.shared and self.fraction > self.max_fraction else Status.PASSED

    def finding(self, test: str) -> Finding | None:
        if self.status is Status.PASSED:
            return None
        return Finding(
            "leakage",
            f"{test}: {self.shared:,} of {self.test_rows:,} rows "
            f"({100 * self.fraction:.2g} %) also appear in the training data (e.g. rows "
            f"{', '.join(map(str, self.examples))}); a model scored on them is scored on "
            "what it has seen",
            data=self.to_json(),
        )

    def to_json(self) -> dict[str, object]:
        return {
            "shared": self.shared,
            "test_rows": self.test_rows,
            "fraction": self.fraction,
            "max_fraction": self.max_fraction,
            "columns": len(self.columns),
            "examples": list(self.examples),
        }


def _mix(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(30))
    h = h * _M1
    h = h ^ (h >> np.uint64(27))
    h = h * _M2
    out: np.ndarray = h ^ (h >> np.uint64(31))
    return out


def _cell_bits(train: Table, test: Table, name: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = train.numbers(name), test.numbers(name)
    if not a.not_numbers.any() and not b.not_numbers.any():
        out = []
        for nums in (a, b):
            v = nums.values + 0.0  # -0.0 + 0.0 is 0.0
            v = np.where(np.isnan(v), np.nan, v)
            bits = v.view(np.uint64).copy()
            bits[nums.missing] = np.uint64(0xFFFF_FFFF_FFFF_FFFE)  # missing is not NaN
            out.append(bits)
        return out[0], out[1]
    vocab: dict[object, int] = {}
    coded = []
    for table in (train, test):
        cells, missing = table.text(name)
        codes = np.fromiter(
            (vocab.setdefault(c, len(vocab)) for c in cells.tolist()), np.int64, cells.shape[0]
        )
        codes[missing] = -1
        coded.append(codes.astype(np.uint64))
    return coded[0], coded[1]


def shared_rows(
    train: Table,
    test: Table,
    *,
    columns: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
    max_fraction: float = 0.0,
) -> Leakage:
    """How many rows of ``test`` appear in ``train`` (see the module)."""
    names = [
        n
        for n in (columns if columns is not None else train.names)
        if n in train.columns and n in test.columns and n not in exclude
    ]
    if not names or test.rows == 0 or train.rows == 0:
        return Leakage(0, test.rows, tuple(names), max_fraction)
    h_train = np.full(train.rows, _GOLDEN, dtype=np.uint64)
    h_test = np.full(test.rows, _GOLDEN, dtype=np.uint64)
    # array arithmetic on uint64 wraps modulo 2**64, which is what a hash wants
    salts = np.arange(1, len(names) + 1, dtype=np.uint64) * _GOLDEN
    for name, salt in zip(names, salts, strict=True):
        a, b = _cell_bits(train, test, name)
        h_train = _mix(h_train ^ _mix(a + salt))
        h_test = _mix(h_test ^ _mix(b + salt))
    hit = np.isin(h_test, h_train)
    rows = np.flatnonzero(hit)
    return Leakage(int(hit.sum()), test.rows, tuple(names), max_fraction, tuple(rows[:5].tolist()))
