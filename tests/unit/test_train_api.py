"""Pin the public API of bastion.train."""

import bastion.train


def test_train_exports() -> None:
    assert sorted(bastion.train.__all__) == sorted(
        [
            "ENV_STAGE_ENVIRONMENT",
            "PLANNED_KEYS",
            "differences",
            "environment",
            "record_environment",
            "Cadence",
            "CadenceStatistics",
            "CheckpointStatistics",
            "CheckpointStore",
            "Checkpointer",
            "JobResult",
            "JobStatistics",
            "JobStatus",
            "JobSupervisor",
            "LastCheckpoint",
            "LocalSlot",
            "Preempted",
            "RNGState",
            "Recovery",
            "ResumableLoader",
            "ResumableSampler",
            "SlotPicker",
            "Stateful",
            "ServerStore",
            "VaultStore",
            "WorkerSlot",
            "check_job_name",
            "checkpoint_keys",
            "checkpoint_name",
            "checkpoint_replicas",
            "checkpoint_vault",
            "holds_snapshots",
            "job_status",
            "open_store",
            "request_move",
            "recovery_timeline",
        ]
    )
    for name in bastion.train.__all__:
        assert getattr(bastion.train, name) is not None, name
