"""The reads behind the dashboard's charts: the window's grammar, at most 120 buckets a
series whatever the window, a bucket's quantile from its histogram, and the SLI rows
summed per backend and bucket in SQLite."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.control._charts import _quantile_ms, _step, parse_window
from bastion.errors import UsageError
from bastion.slo import BOUNDS_MS, SliRow, SqliteSli


def test_window_grammar_and_its_errors() -> None:
    assert parse_window(None) == 900
    assert parse_window(None, "1h") == 3600
    assert parse_window("7d") == 7 * 86400
    for bad in ("", "15", "m", "0m", "-5m", "15 m", "30s", "32d", "1y"):
        with pytest.raises(UsageError, match="window="):
            parse_window(bad)


@pytest.mark.parametrize("window", [60, 300, 900, 3600, 6 * 3600, 86400, 7 * 86400, 31 * 86400])
def test_a_series_has_at_most_120_buckets_that_line_up_with_the_rows(window: int) -> None:
    step = _step(window)
    assert window / step <= 120
    # a bucket is whole seconds under a minute, whole minutes under an hour, else hours
    assert step < 60 or step % 60 == 0
    assert step < 3600 or step % 3600 == 0


def test_quantile_is_the_upper_bound_of_its_bucket() -> None:
    buckets = [0] * (len(BOUNDS_MS) + 1)
    assert _quantile_ms(tuple(buckets), 0.99) is None
    buckets[1] = 98  # <= 10 ms
    buckets[4] = 2  # <= 100 ms
    assert _quantile_ms(tuple(buckets), 0.5) == 10.0
    assert _quantile_ms(tuple(buckets), 0.99) == 100.0
    buckets[-1] = 100  # slower than the last bound: read as that bound
    assert _quantile_ms(tuple(buckets), 0.99) == BOUNDS_MS[-1]


def test_backend_series_sums_per_backend_and_bucket(tmp_path: Path) -> None:
    sli = SqliteSli(tmp_path / "events.db")
    empty = (0,) * (len(BOUNDS_MS) + 1)
    one = (1, *empty[1:])
    t0 = 1_800_000_000  # a whole hour
    rows = [SliRow("chat", t0 + s, "a", 1, 1, one) for s in range(120)]
    rows += [SliRow("chat", t0 + s, "b", 0, 2, (2, *empty[1:])) for s in range(0, 120, 2)]
    rows.append(SliRow("other", t0, "a", 5, 5, (5, *empty[1:])))
    sli.write(rows)
    by_10s = sli.backend_series("chat", t0, t0 + 120, step=10)
    assert [(t, b) for t, b, _ in by_10s[:3]] == [(t0, "a"), (t0, "b"), (t0 + 10, "a")]
    assert {(b, x.total, x.good) for t, b, x in by_10s if t == t0} == {("a", 10, 10), ("b", 10, 0)}
    by_minute = sli.backend_series("chat", t0, t0 + 120, step=60)  # from the minute rows
    assert {(t - t0, b, x.total) for t, b, x in by_minute} == {
        (0, "a", 60),
        (0, "b", 60),
        (60, "a", 60),
        (60, "b", 60),
    }
    assert sli.backend_series("chat", t0 + 120, t0 + 240, step=60) == []
    with pytest.raises(ValueError, match="step"):
        sli.backend_series("chat", t0, t0 + 60, step=0)
    sli.close()
