"""The gates' tabular data: a ``Table`` of named columns, and the readers that make one
from the bytes of a CSV, Parquet or NumPy file.

Owns: the in-memory shape the gates compute on (one 1-D NumPy array per column, in
file order: float64 for numbers, ``object`` holding ``str`` for text), the reading of
each file format into it, and ``Numbers``, a column seen as numbers with every cell that
is not a finite number accounted for (missing, not a number, NaN, inf).

Must never: guess silently. A cell that is not a number stays visible as such (counted,
with examples) instead of becoming NaN unnoticed; a ragged CSV row, a duplicate column or
an unreadable file is a ``TableError`` naming the file and the place. It does no vault
or file-system I/O: it is handed bytes.

Formats: ``.csv`` (a header row, then one row per record; an empty cell is missing),
``.parquet`` (nulls are missing), ``.npy`` (a structured array's fields are columns; a
2-D array's columns are named ``0``, ``1``, ...), ``.npz`` (each 1-D member is a column;
a 2-D member ``x`` becomes ``x[0]``, ``x[1]``, ...). Booleans are read as the text
``true`` / ``false`` (a category, not a number).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from bastion.errors import CheckFailed

__all__ = ["SUFFIXES", "Numbers", "Table", "TableError", "read_table"]

#: the file suffixes ``read_table`` understands
SUFFIXES = (".csv", ".parquet", ".npy", ".npz")

_EXAMPLES = 3


class TableError(CheckFailed):
    """A file of a dataset cannot be read as a table (ragged rows, bad encoding, a
    duplicate column, an unreadable Parquet or NumPy file). A data problem: exit 1."""


@dataclass(frozen=True, eq=False)
class Numbers:
    """One column read as numbers.

    ``values`` is float64 with NaN wherever the cell is not a number (and wherever it is
    NaN); the masks tell those cases apart.
    """

    values: np.ndarray
    #: the cell is empty (CSV), null (Parquet) or ``None``
    missing: np.ndarray
    #: the cell holds text that is not a number (``"n/a"``, ``"not-a-number"``)
    not_numbers: np.ndarray
    #: up to three distinct ones of those cells, as written
    examples: tuple[str, ...] = ()

    @cached_property
    def finite(self) -> np.ndarray:
        """The finite values, in row order."""
        out: np.ndarray = self.values[np.isfinite(self.values)]
        return out

    @cached_property
    def counts(self) -> dict[str, int]:
        """``missing``, ``not_numbers``, ``nan``, ``inf`` and ``finite`` cell counts."""
        is_nan = np.isnan(self.values)
        missing = int(self.missing.sum())
        not_numbers = int(self.not_numbers.sum())
        return {
            "missing": missing,
            "not_numbers": not_numbers,
            "nan": int(is_nan.sum()) - missing - not_numbers,
            "inf": int(np.isinf(self.values).sum()),
            "finite": int(self.finite.shape[0]),
        }


def _is_text(array: np.ndarray) -> bool:
    return array.dtype.kind in "OUS"


def _missing_text(cells: np.ndarray) -> np.ndarray:
    """Empty or ``None`` cells of a text column (a text column holds ``str`` or
    ``None``; both missing kinds are the falsy ones, found in one C loop)."""
    out: np.ndarray = ~cells.astype(np.bool_)
    return out


def _parse(cells: np.ndarray) -> Numbers:
    """Text cells as numbers. Python's ``float`` is the grammar (``1``, ``-2.5e3``,
    ``NaN``, ``inf``); an empty cell is missing."""
    missing = _missing_text(cells)
    try:
        # The fast path: every cell parses (the usual case for a numeric column).
        values = np.where(missing, "nan", cells).astype(np.float64)
        return Numbers(values, missing, np.zeros(cells.shape[0], bool))
    except (ValueError, TypeError):
        pass
    values = np.empty(cells.shape[0], np.float64)
    bad = np.zeros(cells.shape[0], bool)
    examples: list[str] = []
    for i, cell in enumerate(cells):
        if missing[i]:
            values[i] = np.nan
            continue
        try:
            values[i] = float(cell)
        except (ValueError, TypeError):
            values[i] = np.nan
            bad[i] = True
            example = str(cell)[:40]
            if len(examples) < _EXAMPLES and example not in examples:
                examples.append(example)
    return Numbers(values, missing, bad, tuple(examples))


@dataclass(frozen=True, eq=False)
class Table:
    """Named columns of equal length, in order. A number column is float64; a text
    column is ``object`` holding ``str``. ``missing`` marks null cells of number columns
    (a Parquet null is missing, not NaN); a text column's empty cells are its missing
    ones. ``source`` says where it came from (``dataset/digits@3:shard-00.csv``)."""

    columns: Mapping[str, np.ndarray]
    source: str = ""
    missing: Mapping[str, np.ndarray] = field(default_factory=dict)
    _numbers: dict[str, Numbers] = field(default_factory=dict, init=False, repr=False)
    _counts: dict[str, Counter[str]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        lengths = {name: a.shape[0] for name, a in self.columns.items()}
        if len(set(lengths.values())) > 1:
            raise TableError(f"{self.source or 'table'}: columns differ in length ({lengths})")
        for name, a in self.columns.items():
            if a.ndim != 1:
                raise TableError(f"{self.source or 'table'}: column {name!r} is not 1-D")

    @classmethod
    def from_arrays(
        cls,
        columns: Mapping[str, Any],
        source: str = "",
        missing: Mapping[str, np.ndarray] | None = None,
    ) -> Table:
        """A table from array-likes (NumPy arrays, lists): numbers become float64,
        booleans the text ``true``/``false``, anything else text."""
        out: dict[str, np.ndarray] = {}
        for name, raw in columns.items():
            a = np.asarray(raw)
            if a.dtype.kind == "b":
                a = np.where(a, "true", "false").astype(object)
            elif a.dtype.kind in "iuf":
                a = a.astype(np.float64, copy=False)
            elif a.dtype.kind in "US":
                a = a.astype(str).astype(object)
            elif a.dtype.kind != "O":
                raise TableError(f"{source or 'table'}: column {name!r} has dtype {a.dtype}")
            out[str(name)] = a
        return cls(out, source, dict(missing or {}))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.columns)

    @property
    def rows(self) -> int:
        return next(iter(self.columns.values())).shape[0] if self.columns else 0

    def is_text(self, name: str) -> bool:
        """True when the column holds text (a CSV column, or a string column)."""
        return _is_text(self.columns[name])

    def _missing(self, name: str) -> np.ndarray:
        found = self.missing.get(name)
        return found if found is not None else np.zeros(self.columns[name].shape[0], bool)

    def numbers(self, name: str) -> Numbers:
        """Column ``name`` as numbers (parsed once, then cached)."""
        found = self._numbers.get(name)
        if found is None:
            a = self.columns[name]
            if _is_text(a):
                found = _parse(a.astype(object, copy=False))
            else:
                missing = self._missing(name)
                values = a.astype(np.float64, copy=False)
                if missing.any():
                    values = np.where(missing, np.nan, values)
                found = Numbers(values, missing, np.zeros(a.shape[0], bool))
            self._numbers[name] = found
        return found

    def text(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Column ``name`` as text cells and its missing mask (numbers are written as
        Python writes floats, ``3.0``)."""
        a = self.columns[name]
        if _is_text(a):
            cells = a.astype(object, copy=False)
            return cells, _missing_text(cells)
        return np.array([repr(float(v)) for v in a], dtype=object), self._missing(name)

    def text_counts(self, name: str) -> Counter[str]:
        """How often each present text value occurs in column ``name`` (counted once,
        then cached: the schema check and the drift test both read it)."""
        found = self._counts.get(name)
        if found is None:
            cells, missing = self.text(name)
            found = Counter(cells[~missing].tolist())
            self._counts[name] = found
        return found

    @staticmethod
    def concat(parts: Sequence[Table], source: str = "") -> Table:
        """Rows of ``parts`` one after the other; every part must have the same columns
        in the same order (the schema check says so first, with the file's name)."""
        if not parts:
            return Table({}, source)
        names = parts[0].names
        for part in parts[1:]:
            if part.names != names:
                raise TableError(
                    f"{part.source}: columns differ from {parts[0].source}'s "
                    "(every shard of a dataset needs the same header)"
                )
        if len(parts) == 1:
            return parts[0]
        missing = {
            n: np.concatenate([p._missing(n) for p in parts])
            for n in names
            if any(n in p.missing for p in parts)
        }
        return Table(
            {n: np.concatenate([p.columns[n] for p in parts]) for n in names},
            source or parts[0].source,
            missing,
        )


# ----------------------------------------------------------------------- readers


def _read_csv(data: bytes, source: str) -> Table:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TableError(
            f"{source}: not UTF-8 text at byte {exc.start} (save it as UTF-8)"
        ) from None
    rows = list(csv.reader(io.StringIO(text)))
    if not rows:
        raise TableError(f"{source}: empty file (a CSV needs at least a header row)")
    header = rows[0]
    _unique(header, source)
    width = len(header)
    body = rows[1:]
    for number, row in enumerate(body, start=2):
        if len(row) != width:
            raise TableError(
                f"{source}:{number}: {len(row)} fields, but the header has {width} "
                "(a stray comma or quote?)"
            )
    columns: list[tuple[str, ...]] = list(zip(*body, strict=True)) if body else [()] * width
    return Table(
        {name: np.array(col, dtype=object) for name, col in zip(header, columns, strict=True)},
        source,
    )


def _unique(names: Sequence[str], source: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise TableError(f"{source}: column {name!r} appears twice in the header")
        seen.add(name)


def _read_parquet(data: bytes, source: str) -> Table:
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        arrow = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowException, OSError) as exc:
        raise TableError(f"{source}: not a readable Parquet file ({exc})") from None
    _unique(arrow.column_names, source)
    out: dict[str, np.ndarray] = {}
    missing: dict[str, np.ndarray] = {}
    for name in arrow.column_names:
        col = arrow.column(name).combine_chunks()
        if pa.types.is_dictionary(col.type):
            col = col.dictionary_decode()
        nulls = np.asarray(col.is_null().to_numpy(zero_copy_only=False), dtype=bool)
        if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
            filled = pc.fill_null(col.cast(pa.float64()), float("nan"))
            out[name] = np.asarray(filled.to_numpy(zero_copy_only=False), dtype=np.float64)
            if nulls.any():
                missing[name] = nulls
        elif pa.types.is_boolean(col.type):
            out[name] = np.array(
                [None if v is None else ("true" if v else "false") for v in col.to_pylist()],
                dtype=object,
            )
        else:
            out[name] = np.array(
                [None if v is None else str(v) for v in col.to_pylist()], dtype=object
            )
    return Table(out, source, missing)


def _read_npy(data: bytes, source: str, *, archive: bool) -> Table:
    try:
        loaded = np.load(io.BytesIO(data), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise TableError(f"{source}: not a readable NumPy file ({exc})") from None
    columns: dict[str, Any] = {}
    if archive:
        with loaded as members:
            for key in members.files:
                _add_array(columns, members[key], key, source)
    else:
        _add_array(columns, loaded, "", source)
    return Table.from_arrays(columns, source)


def _add_array(columns: dict[str, Any], array: np.ndarray, key: str, source: str) -> None:
    if array.dtype.names:
        for name in array.dtype.names:
            columns[f"{key}.{name}" if key else name] = array[name]
    elif array.ndim == 1:
        columns[key or "0"] = array
    elif array.ndim == 2:
        for j in range(array.shape[1]):
            columns[f"{key}[{j}]" if key else str(j)] = array[:, j]
    else:
        raise TableError(
            f"{source}: array {key or '(the file)'} has {array.ndim} dimensions; "
            "a table needs 1 (a column) or 2 (rows x columns)"
        )


def read_table(name: str, data: bytes, *, source: str = "") -> Table:
    """The table held by the bytes of file ``name`` (its suffix picks the format)."""
    where = source or name
    suffix = name[name.rfind(".") :].lower() if "." in name else ""
    if suffix == ".csv":
        return _read_csv(data, where)
    if suffix == ".parquet":
        return _read_parquet(data, where)
    if suffix in (".npy", ".npz"):
        return _read_npy(data, where, archive=suffix == ".npz")
    raise TableError(f"{where}: cannot read {suffix or 'a file without a suffix'} as a table")
