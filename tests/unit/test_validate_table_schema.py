"""Tables from bytes, schemas inferred from them, and the schema check's two stages."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from bastion.errors import UsageError
from bastion.validate import (
    Schema,
    Status,
    Table,
    TableError,
    canonical_json,
    check_schema,
    infer_schema,
    read_table,
)


def _csv(header: str, *rows: str) -> bytes:
    return ("\n".join([header, *rows]) + "\n").encode()


def test_csv_cells_are_counted_not_guessed() -> None:
    t = read_table("a.csv", _csv("x,y", "1,a", ",b", "NaN,c", "inf,d", "oops,e", "2.5,f"))
    x = t.numbers("x")
    assert x.counts == {"missing": 1, "not_numbers": 1, "nan": 1, "inf": 1, "finite": 2}
    assert x.examples == ("oops",)
    assert list(x.finite) == [1.0, 2.5]
    assert t.is_text("y")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_csv("x,y", "1,2", "3"), "a.csv:3: 1 fields, but the header has 2"),
        (_csv("x,x", "1,2"), "column 'x' appears twice"),
        (b"\xff\xfe\x00", "not UTF-8"),
        (b"", "empty file"),
    ],
)
def test_unreadable_csv_is_a_located_table_error(data: bytes, message: str) -> None:
    with pytest.raises(TableError, match=message):
        read_table("a.csv", data)


def test_numpy_and_parquet_readers() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    np.save(buf, np.arange(6, dtype=np.int64).reshape(3, 2))
    t = read_table("x.npy", buf.getvalue())
    assert t.names == ("0", "1")
    assert t.rows == 3
    buf = io.BytesIO()
    np.savez(buf, x=np.zeros((4, 2)), y=np.array([True, False, True, True]))
    t = read_table("d.npz", buf.getvalue())
    assert t.names == ("x[0]", "x[1]", "y")
    assert t.is_text("y")  # booleans are categories
    out = io.BytesIO()
    pq.write_table(pa.table({"v": [1.0, None, float("nan")], "s": ["a", None, "b"]}), out)
    t = read_table("p.parquet", out.getvalue())
    assert t.numbers("v").counts == {
        "missing": 1,
        "not_numbers": 0,
        "nan": 1,
        "inf": 0,
        "finite": 1,
    }  # a Parquet null is missing; a NaN is a NaN
    assert t.text("s")[1].tolist() == [False, True, False]
    with pytest.raises(TableError, match="not a readable Parquet"):
        read_table("p.parquet", b"garbage")
    with pytest.raises(TableError, match=r"cannot read \.txt"):
        read_table("notes.txt", b"x")


def _reference(seed: int, n: int = 1000) -> Table:
    rng = np.random.default_rng(seed)
    return Table.from_arrays(
        {
            "age": rng.integers(18, 90, n),
            "score": rng.normal(0, 1, n),
            "city": rng.choice(["paris", "lyon", "nice"], n),
            "label": rng.integers(0, 3, n),
        },
        source="ref",
    )


def test_infer_schema_types_tolerances_and_round_trip(seed: int) -> None:
    schema = infer_schema(_reference(seed))
    age, score, city, label = schema.columns
    assert (age.type, score.type, city.type, label.type) == (
        "integer",
        "float",
        "category",
        "integer",
    )
    assert schema.label == "label"
    assert label.categories == (0.0, 1.0, 2.0)
    assert city.categories == ("lyon", "nice", "paris")
    # nothing missing or NaN in the reference: none allowed
    assert score.max_nan_fraction == 0
    assert score.max_missing_fraction == 0
    # the range allowance follows Beta(2, n-1) at 0.999: about 9/n
    assert 0.008 < score.max_outside_fraction < 0.01
    assert (schema.min_rows, schema.max_rows) == (100, 10_000)
    doc = json.loads(canonical_json(schema.to_json()))
    assert Schema.from_json(doc) == schema


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d.update(format="x"), "format is 'x'"),
        (lambda d: d["columns"][0].update(type="number"), r"columns\[0\].type"),
        (lambda d: d["columns"][1].update(max_nan_fraction=2), r"columns\[1\].max_nan_fraction"),
        (lambda d: d["rows"].update(min=-1), "rows.min"),
        (lambda d: d.update(label="nope"), "label 'nope' is not one of the columns"),
        (lambda d: d["columns"].append(dict(d["columns"][0])), "appear twice"),
    ],
)
def test_a_hand_edited_schema_is_checked_field_by_field(edit: object, message: str) -> None:
    doc = infer_schema(_reference(1)).to_json()
    edit(doc)  # type: ignore[operator]
    with pytest.raises(UsageError, match=message):
        Schema.from_json(doc)


def test_table_level_failure_stops_before_any_column_check(seed: int) -> None:
    ref = _reference(seed)
    schema = infer_schema(ref)
    good = _reference(seed + 1, 500)
    broken = Table.from_arrays(
        {k: v for k, v in _reference(seed + 2, 500).columns.items() if k != "city"},
        source="part-2",
    )
    # a later part with bad values never gets looked at: the first table-level failure wins
    bad_values = Table.from_arrays({**good.columns, "score": np.full(500, np.nan)}, source="p3")
    report = check_schema(schema, [good, broken, bad_values])
    assert report.stopped
    assert report.table is None
    assert [f.check for f in report.findings] == ["schema.columns"]
    assert "part-2: missing column(s) city" in report.findings[0].message
    reordered = Table.from_arrays({k: good.columns[k] for k in reversed(good.names)}, source="r")
    report = check_schema(schema, reordered)
    assert report.stopped
    assert "another order" in report.findings[0].message
    tiny = Table.from_arrays({k: v[:10] for k, v in good.columns.items()}, source="tiny")
    report = check_schema(schema, tiny)
    assert report.stopped
    assert report.findings[0].check == "schema.rows"


def test_column_level_findings_name_every_bad_column(seed: int) -> None:
    ref = _reference(seed)
    schema = infer_schema(ref)
    rng = np.random.default_rng(seed)
    n = 1000
    score = rng.normal(0, 1, n)
    score[:5] = np.nan
    score[5] = np.inf
    age = rng.integers(18, 90, n).astype(float)
    age[:50] = 150  # out of range
    age[50] = 20.5  # not whole
    cur = Table.from_arrays(
        {
            "age": age,
            "score": score,
            "city": rng.choice(["paris", "lyon", "rome"], n),  # rome is new
            "label": rng.integers(0, 4, n),  # class 3 is new
        }
    )
    report = check_schema(schema, cur)
    assert not report.stopped
    assert report.status is Status.FAILED
    checks = {(f.check, f.column) for f in report.findings}
    assert checks == {
        ("schema.range", "age"),
        ("schema.type", "age"),
        ("schema.nan", "score"),
        ("schema.inf", "score"),
        ("schema.categories", "city"),
        ("schema.categories", "label"),
    }
    assert report.failed_columns == {"age", "score", "city", "label"}
