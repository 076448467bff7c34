"""Pin the public API of bastion.supervise (the gateway's replica manager depends on it)."""

import bastion.supervise


def test_supervise_exports() -> None:
    assert sorted(bastion.supervise.__all__) == sorted(
        [
            "EXITING",
            "HEARTBEAT_ENV",
            "Backoff",
            "BudgetStatistics",
            "Child",
            "ChildStatistics",
            "Exit",
            "Heartbeat",
            "Outcome",
            "ProcessSpec",
            "RestartBudget",
            "State",
            "Supervisor",
            "SupervisorStatistics",
            "heartbeat_age",
            "heartbeat_note",
            "heartbeat_progress",
            "pid_alive",
        ]
    )
