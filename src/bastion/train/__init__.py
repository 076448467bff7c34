"""Resilient training: verified asynchronous checkpoints, bit-exact resume, supervision.

The training script's side (``Checkpointer`` and friends) saves model, optimizer,
scheduler, scaler, RNGs and data position asynchronously into the vault as
``ckpt/<job>/step-000400`` and restores the newest that verifies. The operator's side
(``JobSupervisor``) runs the script as a child process through ``bastion.supervise``:
restart with backoff under a budget, hang detection by heartbeat, preemption handling,
failover across worker slots, every lifecycle step an event.

Checkpoints are signed vault snapshots, always: ``open_store(manifest)`` is the
manifest's vault (or, with no ``vault:`` section, the default one under the state
directory), and a vault without its signing key is a ``UsageError`` that names
``bastion init`` as the fix; there is no unsigned fallback.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy
from bastion.train._cadence import Cadence, CadenceStatistics
from bastion.train._environment import (
    ENV_STAGE_ENVIRONMENT,
    PLANNED_KEYS,
    differences,
    environment,
    record_environment,
)
from bastion.train._job import (
    JobResult,
    JobStatistics,
    JobSupervisor,
    check_job_name,
    request_move,
)
from bastion.train._slots import LocalSlot, SlotPicker, WorkerSlot
from bastion.train._status import (
    JobStatus,
    LastCheckpoint,
    Recovery,
    job_status,
    recovery_timeline,
)
from bastion.train._store import (
    CheckpointStore,
    ServerStore,
    VaultStore,
    checkpoint_keys,
    checkpoint_name,
    checkpoint_replicas,
    checkpoint_vault,
    holds_snapshots,
    open_store,
)

if TYPE_CHECKING:
    from bastion.train._checkpoint import (
        Checkpointer,
        CheckpointStatistics,
        Preempted,
        Stateful,
    )
    from bastion.train._rng import RNGState
    from bastion.train._sampler import ResumableLoader, ResumableSampler

# The script's side needs PyTorch (the `torch` extra); the operator's side (`bastion train
# run/status`, JobSupervisor) must work without it, so those names load on first use.
_NEEDS_TORCH = {
    "CheckpointStatistics": "._checkpoint",
    "Checkpointer": "._checkpoint",
    "Preempted": "._checkpoint",
    "Stateful": "._checkpoint",
    "RNGState": "._rng",
    "ResumableLoader": "._sampler",
    "ResumableSampler": "._sampler",
}


__getattr__, __dir__ = lazy(__name__, _NEEDS_TORCH)


__all__ = [
    "ENV_STAGE_ENVIRONMENT",
    "PLANNED_KEYS",
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
    "ServerStore",
    "SlotPicker",
    "Stateful",
    "VaultStore",
    "WorkerSlot",
    "check_job_name",
    "checkpoint_keys",
    "checkpoint_name",
    "checkpoint_replicas",
    "checkpoint_vault",
    "differences",
    "environment",
    "holds_snapshots",
    "job_status",
    "open_store",
    "record_environment",
    "recovery_timeline",
    "request_move",
]
