"""Resilient training: verified asynchronous checkpoints, bit-exact resume, supervision.

The training script's side (``Checkpointer`` and friends) saves model, optimizer,
scheduler, scaler, RNGs and data position asynchronously into the vault as
``ckpt/<job>/step-000400`` and restores the newest that verifies. The operator's side
(``JobSupervisor``) runs the script as a child process through ``bastion.supervise``:
restart with backoff under a budget, hang detection by heartbeat, preemption handling,
failover across worker slots, every lifecycle step an event.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from bastion.train._cadence import Cadence
from bastion.train._job import JobResult, JobSupervisor
from bastion.train._slots import LocalSlot, SlotPicker, WorkerSlot
from bastion.train._status import job_status, recovery_timeline
from bastion.train._store import (
    CheckpointStore,
    DirStore,
    VaultStore,
    checkpoint_name,
    open_store,
)

if TYPE_CHECKING:
    from bastion.train._checkpoint import Checkpointer, Preempted, Stateful
    from bastion.train._rng import RNGState
    from bastion.train._sampler import ResumableLoader, ResumableSampler

# The script's side needs PyTorch (the `torch` extra); the operator's side (`bastion train
# run/status`, JobSupervisor) must work without it, so those names load on first use.
_NEEDS_TORCH = {
    "Checkpointer": "_checkpoint",
    "Preempted": "_checkpoint",
    "Stateful": "_checkpoint",
    "RNGState": "_rng",
    "ResumableLoader": "_sampler",
    "ResumableSampler": "_sampler",
}


def __getattr__(name: str) -> Any:
    module = _NEEDS_TORCH.get(name)
    if module is None:
        raise AttributeError(f"module 'bastion.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"bastion.train.{module}"), name)


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
