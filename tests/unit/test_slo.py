"""SLOs from SLI rows: burn rates are the closed form, the workbook's page fires within a
minute of a total outage and resolves after it, a quiet SLI raises slo.nodata, low traffic
never pages, the calendar report and OpenSLO round trip. Real SQLite in a temporary state
directory; the clock is injected (Unix seconds), so no test waits."""

from __future__ import annotations

import random
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from bastion import event_kinds as ek
from bastion.errors import ManifestError, UsageError
from bastion.events import EventLog
from bastion.manifest import loads
from bastion.slo import (
    BOUNDS_MS,
    Evaluator,
    Objective,
    SliRecorder,
    SliRow,
    SqliteSli,
    Window,
    burn_rate,
    evaluate,
    from_openslo,
    month_report,
    objectives,
    to_openslo,
)
from tests.helpers import run_bastion

NB = len(BOUNDS_MS) + 1
T0 = 1_790_000_000 - 1_790_000_000 % 86400  # a midnight, UTC


def _row(t: int, good: int, total: int, fast: int | None = None, backend: str = "a") -> SliRow:
    fast = good if fast is None else fast
    buckets = [0] * NB
    buckets[0] = fast
    buckets[-1] = total - fast
    return SliRow("svc", t, backend, good, total, tuple(buckets))


def _objective(**kw: object) -> Objective:
    base: dict[str, object] = {
        "id": "avail",
        "slo": "avail",
        "service": "svc",
        "sli": "availability",
        "target": 0.999,
        "window": Window.parse("30d"),
    }
    base.update(kw)
    return Objective(**base)  # type: ignore[arg-type]


@pytest.fixture
def store(tmp_path: Path) -> SqliteSli:
    return SqliteSli.in_state_dir(tmp_path)


# -- the closed form -----------------------------------------------------------------------
PROPERTY_SEED = 15_001


@seed(PROPERTY_SEED)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    rows=st.lists(
        st.tuples(
            st.integers(0, 8 * 3600),
            st.integers(0, 20),
            st.integers(0, 20),
            st.sampled_from(["a", "b"]),
        ),
        max_size=60,
    ),
    now_off=st.integers(0, 9 * 3600),
    target=st.sampled_from([0.9, 0.99, 0.999, 0.9995]),
    window=st.sampled_from(["1h", "6h", "1d"]),
)
def test_burn_rates_equal_the_closed_form(
    tmp_path_factory: pytest.TempPathFactory,
    rows: list[tuple[int, int, int, str]],
    now_off: int,
    target: float,
    window: str,
) -> None:
    print(f"hypothesis seed {PROPERTY_SEED}")
    store = SqliteSli.in_state_dir(tmp_path_factory.mktemp("sli"))
    written = [_row(T0 + off, min(g, t), t, backend=b) for off, g, t, b in rows]
    # in several batches, some seconds twice: rows add up
    for i in range(0, len(written), 7):
        store.write(written[i : i + 7])
    obj = _objective(target=target, window=Window.parse(window), min_bad_events=0)
    now = T0 + now_off + 0.5

    def closed(span: int) -> tuple[int, int]:
        inside = [r for r in written if int(now) - span <= r.t < int(now)]
        return sum(r.total - r.good for r in inside), sum(r.total for r in inside)

    status = evaluate(obj, store, now)
    bad, total = closed(obj.window.seconds)
    assert (status.bad, status.total) == (bad, total)
    assert status.budget_spent == pytest.approx(bad / ((1 - target) * total) if total else 0.0)
    for reading in status.burns:
        lb, lt = closed(reading.pair.long_s)
        sb, stotal = closed(reading.pair.short_s)
        assert reading.long_burn == pytest.approx((lb / lt) / (1 - target) if lt else 0.0)
        assert reading.short_burn == pytest.approx((sb / stotal) / (1 - target) if stotal else 0.0)
        assert reading.long_burn == pytest.approx(burn_rate(lb, lt, target))
    store.close()


def test_burn_rate_of_no_traffic_is_zero_not_nan() -> None:
    assert burn_rate(0, 0, 0.999) == 0.0
    assert burn_rate(1, 1000, 0.999) == pytest.approx(1.0)


def test_latency_counts_whole_buckets(store: SqliteSli) -> None:
    store.write([_row(T0, 100, 100, fast=90)])  # 90 within 5 ms, 10 slower than 10 s
    obj = _objective(id="lat", sli="latency", target=0.99, threshold_ms=120.0)
    status = evaluate(obj, store, T0 + 10)
    assert (status.bad, status.total) == (10, 100)


def test_timeslices_count_bad_minutes(store: SqliteSli) -> None:
    rows = [_row(T0 + m * 60 + 5, 100, 100) for m in range(10)]
    rows[3] = _row(T0 + 3 * 60 + 5, 90, 100)  # one bad minute
    store.write(rows)
    obj = _objective(budgeting="timeslices", target=0.99)
    status = evaluate(obj, store, T0 + 10 * 60)
    assert (status.bad, status.total) == (1, 10)


# -- alerts --------------------------------------------------------------------------------
class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_page_fires_within_60s_of_a_total_outage_and_resolves(tmp_path: Path) -> None:
    rng_seed = 15_002
    print(f"seed {rng_seed}")
    rng = random.Random(rng_seed)
    store = SqliteSli.in_state_dir(tmp_path)
    log = EventLog.in_state_dir(tmp_path)
    clock = Clock(T0)
    # a day of healthy traffic, 20 requests a second, a rare error
    healthy = []
    for s in range(86400):
        bad = 1 if rng.random() < 0.0002 else 0
        healthy.append(_row(T0 + s, 20 - bad, 20))
    store.write(healthy)
    start = T0 + 86400
    ev = Evaluator([_objective()], store, log, clock=clock, watching_since=T0)
    clock.t = start
    assert not ev.step()[0].firing("page")
    paged_at = None
    for s in range(600):  # the outage: every request fails; evaluate every 10 s
        store.write([_row(start + s, 0, 20)])
        clock.t = start + s + 1
        if (s + 1) % 10 == 0:
            ev.step()
            if log.count(ek.SLO_BURN_PAGE):
                paged_at = s + 1
                break
    assert paged_at is not None
    assert paged_at <= 60, paged_at
    (page,) = log.query(kind=ek.SLO_BURN_PAGE)
    assert page.subject == "avail"
    assert page.data["pair"] == "1h/5m"
    ev.step()  # still burning: no second page
    assert log.count(ek.SLO_BURN_PAGE) == 1
    back = start + paged_at
    for s in range(3600):  # recovery
        store.write([_row(back + s, 20, 20)])
        clock.t = back + s + 1
        if (s + 1) % 10 == 0:
            ev.step()
            if log.count(ek.SLO_BURN_RESOLVED):
                break
    (resolved,) = log.query(kind=ek.SLO_BURN_RESOLVED)
    assert resolved.data["severity"] == "page"
    assert resolved.data["duration_s"] > 0
    # a new evaluator (a restarted gateway) reads what is open from the log
    again = Evaluator([_objective()], store, log, clock=clock, watching_since=T0)
    again.step()
    assert log.count(ek.SLO_BURN_PAGE) == 1


def test_below_the_minimum_bad_events_nothing_pages(tmp_path: Path) -> None:
    store = SqliteSli.in_state_dir(tmp_path)
    log = EventLog.in_state_dir(tmp_path)
    # low traffic: one request a minute, and 9 of the last 10 failed
    rows = [_row(T0 + m * 60, 1, 1) for m in range(60)]
    rows += [_row(T0 + 3600 + m * 60, 0, 1) for m in range(9)]
    store.write(rows)
    now = T0 + 3600 + 10 * 60
    obj = _objective(min_bad_events=10)
    status = Evaluator([obj], store, log, clock=Clock(now), watching_since=T0).step()[0]
    burn = status.burns[0]
    assert burn.long_burn > 14.4
    assert burn.short_burn > 14.4
    assert not burn.firing
    assert log.count(ek.SLO_BURN_PAGE) == 0
    # with the tenth bad event it pages
    store.write([_row(now - 1, 0, 1)])
    Evaluator([obj], store, log, clock=Clock(now), watching_since=T0).step()
    assert log.count(ek.SLO_BURN_PAGE) == 1


def test_a_quiet_sli_raises_nodata_and_resolves(tmp_path: Path) -> None:
    store = SqliteSli.in_state_dir(tmp_path)
    log = EventLog.in_state_dir(tmp_path)
    store.write([_row(T0 + s, 10, 10) for s in range(60)])
    clock = Clock(T0 + 61)
    ev = Evaluator([_objective(nodata_s=600)], store, log, clock=clock, watching_since=T0)
    ev.step()
    assert log.count(ek.SLO_NODATA) == 0
    clock.t = T0 + 60 + 600
    ev.step()
    (nodata,) = log.query(kind=ek.SLO_NODATA)
    assert nodata.data["last_data"] == T0 + 59
    assert ev.step()[0].nodata
    assert log.count(ek.SLO_NODATA) == 1
    store.write([_row(int(clock.t), 10, 10)])
    clock.t += 2
    ev.step()
    assert log.count(ek.SLO_NODATA_RESOLVED) == 1


def test_an_sli_that_never_had_data_is_nodata_after_the_watch(tmp_path: Path) -> None:
    store = SqliteSli.in_state_dir(tmp_path)
    log = EventLog.in_state_dir(tmp_path)
    obj = _objective(nodata_s=600)
    assert not evaluate(obj, store, T0 + 599, watching_since=T0).nodata
    assert evaluate(obj, store, T0 + 600, watching_since=T0).nodata
    status = evaluate(obj, store, T0 + 600)
    assert status.sli is None
    assert status.budget_spent == 0.0
    assert status.coverage == 0.0
    log.close()


# -- the recorder ----------------------------------------------------------------------------
def test_recorder_batches_complete_seconds(store: SqliteSli) -> None:
    got: list[list[SliRow]] = []
    clock = Clock(T0 + 0.2)
    rec = SliRecorder("svc", got.append, routes=["/v1/predict"], wall=clock)
    rec.observe("/v1/predict", 200, 0.003, "a")
    rec.observe("/v1/predict", 503, 0.2, "")
    rec.observe("/metrics", 200, 0.001, "")  # not a user's request
    assert got == []
    clock.t = T0 + 1.1
    rec.observe("/v1/predict", 429, 0.004, "b")
    assert [len(b) for b in got] == [2]
    assert rec.flush() == 1
    store.write([r for batch in got for r in batch])
    tally = store.tally("svc", T0, T0 + 2)
    assert (tally.good, tally.total) == (1, 3)
    assert tally.faster_than(5) == 2
    assert tally.faster_than(250) == 3


# -- the calendar report ---------------------------------------------------------------------
def test_month_report_shares_the_budget_by_incident(tmp_path: Path) -> None:
    store = SqliteSli.in_state_dir(tmp_path)
    log = EventLog.in_state_dir(tmp_path)
    store.write([_row(T0 + s, 100, 100) for s in range(0, 3600, 10)])
    store.write([_row(T0 + 3600 + s, 0, 100) for s in range(5)])  # 500 bad
    obj = _objective()
    log.emit(ek.SLO_BURN_PAGE, "avail", at=float(T0 + 3600))
    log.emit(ek.SLO_BURN_RESOLVED, "avail", severity="page", at=float(T0 + 3604))
    (month,) = month_report([obj], store, log, at=T0, now=T0 + 7200)
    assert month.total == 36_500
    assert month.bad == 500
    (inc,) = month.incidents
    assert inc.bad == 500
    assert inc.budget_share == pytest.approx(500 / (0.001 * 36_500))
    assert month.met is False


# -- the manifest and OpenSLO ----------------------------------------------------------------
MANIFEST = """\
version: 1
system: s
services:
  svc:
    listen: 127.0.0.1:8799
    backends: [{name: a, url: "http://127.0.0.1:1"}]
slos:
  - {id: avail, service: svc, objective: 0.999}
  - {id: lat, service: svc, p99_ms: 250, window: month, budgeting: timeslices}
"""


def test_manifest_slos_become_objectives() -> None:
    objs = objectives(loads(MANIFEST))
    assert [(o.id, o.sli, o.target, o.window.text) for o in objs] == [
        ("avail", "availability", 0.999, "30d"),
        ("lat", "latency", 0.99, "month"),
    ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (
            ("service: svc, objective", "service: svx, objective"),
            "bastion.yaml:8:26: slos[0].service: unknown service 'svx' (services: svc)",
        ),
        (
            ("window: month", "window: 30x"),
            "bastion.yaml:9:50: slos[1].window: '30x' is not a window: use rolling days or "
            "hours (28d, 30d, 7d, 12h) or month (the calendar month)",
        ),
    ],
)
def test_bad_slos_are_located(edit: tuple[str, str], expected: str) -> None:
    with pytest.raises(ManifestError) as info:
        loads(MANIFEST.replace(*edit), filename="bastion.yaml")
    assert expected in [str(p) for p in info.value.problems]


def test_check_exits_2_on_a_bad_window(tmp_path: Path) -> None:
    (tmp_path / "bastion.yaml").write_text(MANIFEST.replace("window: month", "window: 3 days"))
    proc = run_bastion("check", "-f", str(tmp_path / "bastion.yaml"))
    assert proc.returncode == 2, proc.stderr
    assert "slos[1].window: '3 days' is not a window" in proc.stderr + proc.stdout


def test_openslo_round_trip() -> None:
    manifest = loads(MANIFEST)
    text = to_openslo(manifest.slos)
    back = from_openslo(text, "slos.yaml", services=["svc"])
    assert back == [
        {"id": "avail", "service": "svc", "window": "30d", "objective": 0.999},
        {
            "id": "lat",
            "service": "svc",
            "window": "month",
            "p99_ms": 250.0,
            "budgeting": "timeslices",
            "timeslice": "1m",
            "timeslice_target": 0.99,
        },
    ]
    with pytest.raises(UsageError, match=r"document 1: spec.service: unknown service 'svc'"):
        from_openslo(text, "slos.yaml", services=["other"])
    bad = textwrap.dedent(text).replace("duration: 30d", "duration: 3 weeks", 1)
    with pytest.raises(UsageError, match="document 1"):
        from_openslo(bad, "slos.yaml")


# -- outcome metrics -------------------------------------------------------------------------
def test_dora_four_keys_from_events(tmp_path: Path) -> None:
    from bastion.slo import dora

    log = EventLog.in_state_dir(tmp_path)
    log.emit(ek.TRAIN_RUN_STARTED, "train")
    log.emit(ek.VAULT_PUT, "model/m", version=3)
    log.emit(ek.MODEL_PROMOTED, "model/m", version=3)
    log.emit(ek.ROLLOUT_PROMOTED, "svc")
    log.emit(ek.ROLLOUT_ROLLED_BACK, "svc")
    log.emit(ek.SLO_BURN_PAGE, "avail")
    log.emit(ek.SLO_BURN_RESOLVED, "avail", severity="page")
    events = log.query()
    start, end = events[0].ts - 1, events[-1].ts + 1
    keys = dora(events, start=start, end=end)
    assert keys.promotions == 2
    assert keys.rollbacks == 1
    assert keys.change_failure_rate == pytest.approx(0.5)
    assert keys.lead_time_s == pytest.approx(events[2].ts - events[0].ts)
    assert keys.time_to_restore_s == pytest.approx(events[6].ts - events[5].ts)
    assert keys.promotions_per_week == pytest.approx(2 / ((end - start) / (7 * 86400)))
    empty = dora([], start=start, end=end)
    assert empty.change_failure_rate is None
    assert empty.lead_time_s is None


def test_trust_shares_from_rows_and_golden_events(store: SqliteSli) -> None:
    from bastion.events import Event
    from bastion.slo import trust

    store.write([_row(T0 + s, 10, 10, backend="primary") for s in range(100)])
    store.write([_row(T0 + s, 5, 5, backend="fallback") for s in range(50)])
    store.write([_row(T0 + s, 0, 5, backend="") for s in range(20)])  # shed
    golden = [
        Event(ek.SERVE_GOLDEN_FAILED, "svc", data={"backend": "primary"}, ts=T0 + 80.0, id=1),
        Event(ek.SERVE_GOLDEN_PASSED, "svc", data={"backend": "primary"}, ts=T0 + 89.0, id=2),
    ]
    got = trust(
        store, golden, "svc", {"primary": 0, "fallback": 1}, start=T0, end=T0 + 100, suspect_s=10
    )
    assert got.requests == 1000 + 250 + 100
    assert got.failed == pytest.approx(100 / 1350)
    assert got.unanswered == pytest.approx(100 / 1350)
    assert got.fallback == pytest.approx(250 / 1350)
    assert got.wrong == pytest.approx(200 / 1350)  # seconds 70..89 of the primary


def test_ages_are_freshness_and_rpo() -> None:
    from bastion.events import Event
    from bastion.slo import ages

    events = [
        Event(ek.VAULT_PUT, "dataset/d", ts=100.0, id=1),
        Event(ek.VAULT_PUT, "model/m", ts=110.0, id=2),
        Event(ek.MODEL_PROMOTED, "model/m", ts=120.0, id=3),
        Event(ek.VAULT_PUT, "dataset/d", ts=130.0, id=4),
    ]
    got = {(a.name, a.kind): (a.age_s, a.event_id) for a in ages(events, now=200.0)}
    assert got == {("dataset/d", "rpo"): (70.0, 4), ("model/m", "freshness"): (80.0, 3)}


def test_goodput_is_new_progress_over_wall_time() -> None:
    from bastion.events import Event
    from bastion.slo import goodput

    def ev(i: int, kind: str, at_s: float, **data: object) -> Event:
        return Event(kind, "train", data={"run_id": "r1", **data}, mono_ns=int(at_s * 1e9), id=i)

    events = [
        ev(1, ek.TRAIN_RUN_STARTED, 0),
        ev(2, ek.TRAIN_CHECKPOINT_SAVED, 50, step=50),
        ev(3, ek.TRAIN_EXITED, 80, last_step=80),
        ev(4, ek.TRAIN_RESTORED, 85, step=50),
        ev(5, ek.TRAIN_STEP_FIRST, 90, step=51),
        ev(6, ek.TRAIN_CHECKPOINT_SAVED, 200, step=200),
    ]
    got = goodput(events, "train")
    assert got is not None
    assert (got.wall_s, got.down_s, got.steps, got.steps_redone) == (200.0, 10.0, 200, 30)
    assert got.goodput == pytest.approx(190 / 200 * 200 / 230)
    assert goodput(events, "other") is None
