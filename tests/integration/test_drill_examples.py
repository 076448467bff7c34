"""The example's cross-capability drill, end to end: ransomware in its own process
against the vault's guard; detection read from the guard's own event."""

from __future__ import annotations

from pathlib import Path

from bastion.drill.runner import run_experiment


def test_guarded_ransomware_drill(example_copy: Path, seed: int) -> None:
    data = example_copy / "dataset"
    before = {p.name: p.read_bytes() for p in data.glob("*.csv")}
    result = run_experiment(
        example_copy / "experiments" / "ransomware-guarded.yaml",
        journal_path=example_copy / "journal.json",
        seed=seed,
    )
    m = result.measurements
    print(m, result.problems)
    # Timing targets may be missed on a loaded machine; nothing else may go wrong.
    assert all(p.startswith("target missed: time_to_detect_s") for p in result.problems)
    assert m["detected_by"] == "vault.guard.ransomware"
    assert m["time_to_detect_s"] is not None
    assert m["files_lost"] == 0
    assert {p.name: p.read_bytes() for p in data.glob("*.csv")} == before
    assert not list(data.glob("*.locked"))


def test_training_kill_drill_measures_steps_lost(example_copy: Path, seed: int) -> None:
    """SIGKILL the worker under `bastion train run`: detection, RTO and steps lost, all
    read from the supervisor's and the drill's events."""
    result = run_experiment(
        example_copy / "experiments" / "train-kill.yaml",
        journal_path=example_copy / "journal.json",
        seed=seed,
    )
    m = result.measurements
    print(m, result.problems)
    # Whether checkpoints flow again within the hypothesis' window depends on the
    # machine's load (a timing); what must hold is what the events record.
    assert m["detected_by"] in ("train.exited", "train.restarting")
    assert m["steps_lost"] is not None
    assert m["steps_lost"] >= 0
    kinds = [e["kind"] for e in result.journal["bastion"]["events"]]
    killed = kinds.index("drill.fault.injected")
    assert killed < kinds.index("train.exited")
    assert "train.restored" in kinds[killed:]  # the job resumed from a checkpoint
    assert result.exit_code in (0, 1)
