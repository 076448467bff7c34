"""Pins the public API of bastion.drill.faults: a change here is a deliberate one."""

from __future__ import annotations

import bastion.drill.faults as faults


def test_faults_public_names() -> None:
    assert sorted(faults.__all__) == sorted(
        [
            "CorruptWeights",
            "CpuHog",
            "DataFault",
            "DeleteFiles",
            "DistributionShift",
            "Fault",
            "FaultStatistics",
            "FaultyUpstream",
            "FillDisk",
            "FlipBytes",
            "HangProcess",
            "HttpFault",
            "HttpFaultInjection",
            "KillProcess",
            "LabelFlip",
            "MakeReadOnly",
            "MemoryHog",
            "NanInjection",
            "ProxyStatistics",
            "Ransomware",
            "RansomwareProcess",
            "RestartProcess",
            "SchemaBreak",
            "Scope",
            "SlowReads",
            "SwapModel",
            "TcpFaultProxy",
            "Toxic",
            "ToxicFault",
            "ToxiproxyApi",
            "TruncateFile",
            "UpstreamStatistics",
            "degrade",
            "restore_from_journal",
            "wait_exit",
        ]
    )
    for name in faults.__all__:
        assert hasattr(faults, name)


def test_drill_public_names() -> None:
    import bastion.drill as drill

    assert sorted(drill.__all__) == sorted(
        ["FAULTS", "DrillResult", "load_experiment", "measure", "run_experiment"]
    )


def test_every_library_fault_kind_is_injectable_by_experiments() -> None:
    from bastion.drill import FAULTS

    kinds = {
        getattr(faults, name).kind
        for name in faults.__all__
        if isinstance(getattr(faults, name), type)
        and issubclass(getattr(faults, name), faults.Fault)
        and getattr(faults, name).kind not in ("fault", "data")
    }
    assert kinds <= set(FAULTS)
