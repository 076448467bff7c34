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
            "Ransomware",
            "RestartProcess",
            "SchemaBreak",
            "Scope",
            "SlowReads",
            "SwapModel",
            "TcpFaultProxy",
            "Toxic",
            "ToxicFault",
            "TruncateFile",
            "degrade",
            "restore_from_journal",
            "wait_exit",
        ]
    )
    for name in faults.__all__:
        assert hasattr(faults, name)
