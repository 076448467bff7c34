"""measure(): every number is a difference of recorded timestamps or a sum of counts."""

from __future__ import annotations

from bastion.drill.measure import check_targets, measure
from bastion.events import Event

S = 1_000_000_000


def ev(kind: str, t: float, subject: str = "", **data: object) -> Event:
    return Event(kind=kind, subject=subject, data=dict(data), mono_ns=int(t * S))


def test_recovery_detect_and_rto() -> None:
    events = [
        ev("drill.started", 0),
        ev("drill.fault.injected", 10),
        ev("vault.guard.detected", 10.4),
        ev("drill.steady_state.broken", 11),
        ev("drill.steady_state.restored", 15.5),
        ev("drill.fault.reverted", 16),
    ]
    m = measure(events, detect=["vault.guard.*"])
    assert m["time_to_detect_s"] == 0.4
    assert m["detected_by"] == "vault.guard.detected"
    assert m["rto_s"] == 5.5
    assert m["recovered"] is True
    assert m["faults_injected"] == m["faults_reverted"] == 1


def test_detection_falls_back_to_the_drill_s_own_probe() -> None:
    events = [ev("drill.fault.injected", 1), ev("drill.steady_state.broken", 3)]
    m = measure(events)
    assert m["detected_by"] == "drill.steady_state.broken"
    assert m["time_to_detect_s"] == 2
    assert m["recovered"] is False
    assert m["rto_s"] is None
    assert check_targets(m, {"rto_s": 30}) == ["rto_s: never recovered (target 30)"]


def test_never_broken_means_rto_zero() -> None:
    m = measure([ev("drill.fault.injected", 1), ev("drill.fault.reverted", 2)])
    assert m["rto_s"] == 0.0
    assert m["recovered"] is True
    assert m["time_to_detect_s"] is None


def test_rpo_sums_increments_and_takes_the_last_check() -> None:
    events = [
        ev("drill.fault.injected", 1),
        ev("train.restarted", 2, steps_lost=30),
        ev("train.restarted", 3, steps_lost=12),
        ev("drill.load.summary", 4, requests_failed=7, requests_ok=90),
        ev("drill.files.checked", 5, subject="data", files_lost=4),
        ev("drill.files.checked", 6, subject="data", files_lost=0),
    ]
    m = measure(events)
    assert m["steps_lost"] == 42
    assert m["requests_failed"] == 7
    assert m["files_lost"] == 0
    assert check_targets(m, {"steps_lost": 50, "requests_failed": 5}) == [
        "requests_failed: measured 7, target 5"
    ]


def test_nothing_injected_measures_nothing() -> None:
    m = measure([ev("drill.started", 0)])
    assert m["injected"] is False
    assert m["rto_s"] is None


def test_without_a_hypothesis_there_is_no_rto_and_an_abort_is_the_detection() -> None:
    events = [ev("drill.fault.injected", 1), ev("drill.aborted", 1.3)]
    m = measure(events, has_hypothesis=False)
    assert m["rto_s"] is None
    assert m["recovered"] is None
    assert m["detected_by"] == "drill.aborted"
    assert round(m["time_to_detect_s"], 6) == 0.3


def test_injection_start_is_t0_for_slow_faults() -> None:
    events = [
        # written when the injection ended (at 9), timed at its start (at_ns = 5)
        ev("drill.fault.injected", 5),
        ev("drill.steady_state.broken", 6),
        ev("drill.steady_state.restored", 12),
    ]
    m = measure(events)
    assert m["time_to_detect_s"] == 1
    assert m["rto_s"] == 7


def test_training_steps_lost_from_exit_and_resume() -> None:
    events = [
        ev("drill.fault.injected", 1),
        ev("train.exited", 1.1, subject="train-digits", last_step=96),
        ev("train.restored", 5, subject="train-digits", step=50),
        ev("train.exited", 6, subject="train-digits", last_step=120),
        ev("train.restored", 9, subject="train-digits", step=100),
        ev("train.restored", 9.5, subject="other", step=0),  # no exit before it: not a loss
    ]
    assert measure(events)["steps_lost"] == 66


def test_rpo_seconds_of_training_from_the_resumed_checkpoints_save_to_the_exit() -> None:
    events = [
        ev("train.checkpoint.saved", 0.5, subject="j", step=50, name="ckpt/j/step-000050"),
        ev("train.checkpoint.saved", 2.0, subject="j", step=100, name="ckpt/j/step-000100"),
        ev("drill.fault.injected", 2.4),
        ev("train.exited", 2.5, subject="j", last_step=120),
        ev("train.checkpoint.corrupt", 4, subject="j"),
        ev("train.restored", 4.1, subject="j", step=50),  # the newest was refused
    ]
    m = measure(events)
    assert m["rpo_s"] == 2.0  # from the save of step 50 (0.5 s) to the exit (2.5 s)
    assert m["steps_lost"] == 70


def test_rpo_seconds_of_files_and_of_the_vault() -> None:
    base = [ev("vault.guard.protected", 1), ev("drill.fault.injected", 4)]
    kept = measure([*base, ev("drill.files.checked", 5, files_lost=0)])
    assert kept["rpo_s"] == 0.0
    lost = measure([*base, ev("drill.files.checked", 5, files_lost=2)])
    assert lost["rpo_s"] == 3.0  # back to the guard's baseline
    repaired = measure([ev("drill.fault.injected", 1), ev("vault.scrub.completed", 2)])
    assert repaired["rpo_s"] == 0.0
    gone = [ev("drill.fault.injected", 1), ev("vault.unrecoverable", 2), ev("vault.repaired", 3)]
    assert measure(gone)["rpo_s"] is None  # lost for good: no age to give
    assert measure([ev("drill.fault.injected", 1)])["rpo_s"] is None  # nothing stateful


def test_the_drills_own_teardown_is_not_a_detection() -> None:
    events = [
        ev("drill.fault.injected", 1),
        ev("drill.rollbacks.started", 5),
        ev("serve.backend.ejected", 5.1, reason="replica exited"),  # the drill stopping it
    ]
    m = measure(events, detect=["serve.backend.ejected"])
    assert m["time_to_detect_s"] is None
    assert m["detected_by"] is None
