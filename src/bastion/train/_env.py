"""The environment ``bastion train run`` gives its worker, and reading it back there.

Owns: the names of the ``BASTION_*`` variables the job supervisor sets for every attempt
(``JobSupervisor`` writes them; docs/training.md lists them with the ones
``bastion.supervise`` and the worker slots add), and turning them back into what the
script's ``Checkpointer`` needs: the job, its run, its state directory and the manifest
it came from (``JobEnv``), and the job's checkpoint settings from that manifest
(``job_settings``).

Must never: invent a job or a manifest the supervisor did not name. Outside ``bastion
train run`` the variables are absent, and the script's explicit arguments and the
built-in defaults are all there is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from bastion.manifest import CheckpointPolicy, Manifest

__all__ = [
    "ENV_FRESH_RUN",
    "ENV_JOB",
    "ENV_MANIFEST",
    "ENV_RUN_ID",
    "ENV_STATE_DIR",
    "JobEnv",
    "JobSettings",
    "job_settings",
]

ENV_JOB = "BASTION_JOB"
"""The job's name (its id in the manifest, or ``--name``)."""
ENV_RUN_ID = "BASTION_RUN_ID"
"""The run this attempt belongs to; the same across restarts and a supervisor's restart."""
ENV_STATE_DIR = "BASTION_STATE_DIR"
"""The state directory (absolute): the event log ``events.db`` and the job's runtime files."""
ENV_MANIFEST = "BASTION_MANIFEST"
"""The manifest the job came from (absolute); absent for a ``--name`` job run without one."""
ENV_FRESH_RUN = "BASTION_FRESH_RUN"
"""Set (to the run id) for a run started with ``--fresh``: restore only this run's
checkpoints, never an earlier run's."""


@dataclass(frozen=True)
class JobEnv:
    """What the supervisor said about the job this process runs (``from_environ``)."""

    job: str | None
    run_id: str | None
    state_dir: Path | None
    manifest: Path | None
    fresh_run: str | None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> JobEnv:
        env = os.environ if environ is None else environ

        def path(name: str) -> Path | None:
            value = env.get(name)
            return Path(value) if value else None

        return cls(
            job=env.get(ENV_JOB) or None,
            run_id=env.get(ENV_RUN_ID) or None,
            state_dir=path(ENV_STATE_DIR),
            manifest=path(ENV_MANIFEST),
            fresh_run=env.get(ENV_FRESH_RUN) or None,
        )

    def supervises(self, job: str) -> bool:
        """Whether this process is ``job``'s worker under ``bastion train run``."""
        return self.job == job


@dataclass(frozen=True)
class JobSettings:
    """A job's checkpoint settings as its manifest gives them (defaults without one)."""

    policy: CheckpointPolicy
    segment: str
    manifest: Manifest | None


def job_settings(job: str, manifest: Manifest | None) -> JobSettings:
    """``jobs.<job>.checkpoint`` and ``segment`` of ``manifest``; the manifest's defaults
    for a job it does not declare (a ``--name`` run) or without a manifest."""
    cfg = manifest.jobs.get(job) if manifest is not None else None
    if cfg is None:
        return JobSettings(CheckpointPolicy(), "", manifest)
    return JobSettings(cfg.checkpoint, cfg.segment or "", manifest)
