"""Pins the public API of bastion.drill.faults: a change here is a deliberate one."""

from __future__ import annotations

import bastion.drill.faults as faults


def test_faults_public_names() -> None:
    assert sorted(faults.__all__) == sorted(
        [
            "CpuHog",
            "DeleteFiles",
            "Fault",
            "FaultyUpstream",
            "FillDisk",
            "FlipBytes",
            "HangProcess",
            "HttpFault",
            "HttpFaultInjection",
            "KillProcess",
            "MakeReadOnly",
            "MemoryHog",
            "Ransomware",
            "RestartProcess",
            "Scope",
            "SlowReads",
            "TcpFaultProxy",
            "Toxic",
            "ToxicFault",
            "TruncateFile",
            "restore_from_journal",
            "wait_exit",
        ]
    )
    for name in faults.__all__:
        assert hasattr(faults, name)
