"""Resilient training: verified asynchronous checkpoints, bit-exact resume, supervision.

The training script's side (``Checkpointer`` and friends) saves model, optimizer,
scheduler, scaler, RNGs and data position asynchronously into the vault as
``ckpt/<job>/step-000400`` and restores the newest that verifies. The operator's side
(``JobSupervisor``) runs the script as a child process through ``bastion.supervise``:
restart with backoff under a budget, hang detection by heartbeat, preemption handling,
failover across worker slots, every lifecycle step an event.
"""

from bastion.train._cadence import Cadence
from bastion.train._checkpoint import Checkpointer, Preempted, Stateful
from bastion.train._job import JobResult, JobSupervisor
from bastion.train._rng import RNGState
from bastion.train._sampler import ResumableLoader, ResumableSampler
from bastion.train._slots import LocalSlot, SlotPicker, WorkerSlot
from bastion.train._status import job_status, recovery_timeline
from bastion.train._store import (
    CheckpointStore,
    DirStore,
    VaultStore,
    checkpoint_name,
    open_store,
)

__all__ = [
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
