"""Pin the public API of bastion.train."""

import bastion.train


def test_train_exports() -> None:
    assert sorted(bastion.train.__all__) == sorted(
        [
            "Cadence",
            "CheckpointStore",
            "Checkpointer",
            "DirStore",
            "JobResult",
            "JobSupervisor",
            "LocalSlot",
            "Preempted",
            "RNGState",
            "ResumableLoader",
            "ResumableSampler",
            "SlotPicker",
            "Stateful",
            "VaultStore",
            "WorkerSlot",
            "checkpoint_name",
            "job_status",
            "open_store",
            "recovery_timeline",
        ]
    )
