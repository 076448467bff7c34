"""Every kind of event Bastion writes, as named constants with a one-line meaning each.

Owns: the names of events. Code emits ``ek.VAULT_PUT``, never the string ``"vault.put"``,
so a typo is an ``AttributeError`` at import time rather than an event nobody queries,
and ``docs/architecture.md``'s events table is checked against this module by a test
(``tests/unit/test_event_kinds.py``): a kind added here without a line there fails.

Must never: import anything of Bastion's (this is the foundation), or hold a kind that
no code emits.

A constant's name is its dotted kind in upper snake case (``vault.scrub.completed`` is
``VAULT_SCRUB_COMPLETED``). Supervised children (training jobs, model replicas) share one
life cycle, so ``supervise`` emits the suffixes in ``CHILD`` and its caller gives them a
prefix (``train.``, ``serve.replica.``); both families are listed here in full.
"""

from __future__ import annotations

__all__ = ["ALL", "CHILD", "Kind", "by_name"]


class Kind(str):
    """An event kind: the dotted name itself (a ``str``), with its ``meaning``."""

    meaning: str

    def __new__(cls, name: str, meaning: str) -> Kind:
        self = super().__new__(cls, name)
        self.meaning = meaning
        return self


ALL: dict[str, Kind] = {}


def _k(name: str, meaning: str) -> Kind:
    kind = Kind(name, meaning)
    if name in ALL:  # pragma: no cover - a duplicate is a programming error here
        raise ValueError(f"event kind {name!r} declared twice")
    ALL[name] = kind
    return kind


def by_name(name: str) -> Kind | None:
    """The declared kind called ``name``, or None."""
    return ALL.get(name)


# -- the life cycle of a supervised child (suffixes; the caller prefixes them) ---------------
CHILD: dict[str, str] = {
    "started": "a child process started (pid, argv, warm: it took over a ready standby)",
    "adopted": "a new supervisor took over a running child its killed predecessor started (pid)",
    "exited": "the child exited (code, signal, oom, hang)",
    "hang": "no heartbeat within the timeout; the child is being stopped (heartbeat_age_s)",
    "restarting": "a restart is scheduled after a backoff (reason, delay_s, restarts)",
    "budget_exhausted": "the restart budget is spent; the child is not restarted",
    "fatal": "the child exited with a code marked fatal (bad configuration); not restarted",
    "succeeded": "the child exited 0 and is done",
    "stopped": "the child was stopped on request (reason)",
    "standby_started": "a warm standby interpreter started (pid)",
    "standby_ready": "the warm standby finished its imports and waits (pid)",
    "standby_failed": "the warm standby could not start (error)",
}

# -- vault --------------------------------------------------------------------------------
VAULT_PUT = _k("vault.put", "a snapshot was committed (version, files, bytes, replicas)")
VAULT_DEGRADED = _k("vault.degraded", "a write reached fewer replicas than configured")
VAULT_REPAIRED = _k("vault.repaired", "a bad or missing copy was rewritten from a good one")
VAULT_REPAIR_FAILED = _k(
    "vault.repair_failed", "a bad copy could not be rewritten (replica, error)"
)
VAULT_INTEGRITY_FAILED = _k("vault.integrity.failed", "a copy did not match its hash or seal")
VAULT_UNRECOVERABLE = _k("vault.unrecoverable", "no replica holds a good copy of an object")
VAULT_LABELLED = _k("vault.labelled", "a label (latest, prod, ...) was moved to a version")
VAULT_RESTORED = _k("vault.restored", "a snapshot was restored into a directory (files, bytes)")
VAULT_SCRUB_STARTED = _k("vault.scrub.started", "a scrub began (or resumed from its cursor)")
VAULT_SCRUB_COMPLETED = _k("vault.scrub.completed", "a scrub ended (checked, repaired, failed)")
VAULT_DELETED = _k("vault.deleted", "gc dropped a snapshot version")
VAULT_GC = _k("vault.gc", "gc finished (versions and objects removed, bytes freed)")
VAULT_INGEST_THREADS = _k(
    "vault.ingest.threads", "no worker process could start; the commit used threads instead"
)
VAULT_GUARD_PROTECTED = _k("vault.guard.protected", "a directory was given a guard baseline")
VAULT_GUARD_STARTED = _k("vault.guard.started", "the guard began watching protected directories")
VAULT_GUARD_TAMPERED = _k("vault.guard.tampered", "protected files changed outside the vault")
VAULT_GUARD_RANSOMWARE = _k(
    "vault.guard.ransomware", "ransomware signals seen; the tree was frozen (signals, files)"
)
VAULT_GUARD_RESTORED = _k("vault.guard.restored", "the guard put a tree back from its snapshot")
VAULT_GUARD_RESTORE_FAILED = _k(
    "vault.guard.restore_failed", "the guard could not put every file back (files, errors)"
)

# -- training -----------------------------------------------------------------------------
TRAIN_RUN_STARTED = _k("train.run.started", "a supervised training run began (job, slot)")
TRAIN_RESTARTED = _k("train.restarted", "the worker runs again after a failure (attempt, warm)")
TRAIN_FAILED = _k("train.failed", "the job gave up (cause, reason)")
TRAIN_SLOT_FAILED = _k("train.slot.failed", "a worker slot was found unusable (slot, reason)")
TRAIN_FAILOVER = _k("train.failover", "the job moved to another worker slot (from_slot, to_slot)")
TRAIN_NODE_LOST = _k(
    "train.node.lost", "the Ray node (or actor) running the worker was lost (slot, node, reason)"
)
TRAIN_SUPERVISOR_RESUMED = _k(
    "train.supervisor.resumed", "a restarted supervisor took over its own earlier run"
)
TRAIN_CHECKPOINT_SAVED = _k(
    "train.checkpoint.saved", "a checkpoint is durable (step, stall_s, persist_s, bytes)"
)
TRAIN_CHECKPOINT_SKIPPED = _k("train.checkpoint.skipped", "a due save was skipped: one in flight")
TRAIN_CHECKPOINT_WAITED = _k("train.checkpoint.waited", "a due save waited for the one in flight")
TRAIN_CHECKPOINT_FAILED = _k("train.checkpoint.failed", "a checkpoint could not be written (error)")
TRAIN_CHECKPOINT_CORRUPT = _k(
    "train.checkpoint.corrupt", "a checkpoint failed verification on restore; an older one is tried"
)
TRAIN_CHECKPOINT_NONE_VALID = _k(
    "train.checkpoint.none_valid", "no checkpoint verified; training starts from step 0 (tried)"
)
TRAIN_RESTORED = _k("train.restored", "training resumed from a checkpoint (step, restore_s)")
TRAIN_STEP_FIRST = _k("train.step.first", "the first step after a start or resume finished (step)")
TRAIN_PREEMPTED = _k("train.preempted", "SIGTERM/SIGINT: an emergency checkpoint was taken (step)")
TRAIN_FINISHED = _k("train.finished", "the training script reached its last step")
TRAIN_MODEL_STORED = _k("train.model.stored", "the trained model was committed to the vault (ref)")

# -- serving ------------------------------------------------------------------------------
SERVE_STARTED = _k("serve.started", "a gateway is listening (listen, backends)")
SERVE_STOPPED = _k("serve.stopped", "a gateway stopped")
SERVE_BACKEND_EJECTED = _k("serve.backend.ejected", "a backend left the pool (backend, reason)")
SERVE_BACKEND_RESTORED = _k("serve.backend.restored", "an ejected backend passed its probe")
SERVE_OVERLOAD_STARTED = _k("serve.overload.started", "the gateway began shedding load")
SERVE_OVERLOAD_ENDED = _k("serve.overload.ended", "the gateway stopped shedding load (shed)")
SERVE_GOLDEN_FAILED = _k(
    "serve.golden.failed",
    "a backend answered golden probes wrongly (backend, wrong, total, examples)",
)
SERVE_GOLDEN_PASSED = _k(
    "serve.golden.passed",
    "a backend that had failed golden probes answers them right again (backend)",
)
SERVE_SCALED = _k("serve.scaled", "a replica set changed size (backend, replicas)")
SERVE_SCALE_REQUESTED = _k(
    "serve.scale_requested",
    "a replica set's floor was set by request, POST /bastion/control (backend, min_replicas)",
)
SERVE_FAILED_OVER = _k(
    "serve.failed_over",
    "traffic was sent to a tier and those after it by request, POST /bastion/control (tier)",
)
COST_BUDGET_SOFT_LIMIT = _k(
    "cost.budget.soft_limit",
    "a budget's spend passed its soft limit; hedging and shadowing are off for what it "
    "covers (budget, spent, reserved, soft, currency)",
)
COST_BUDGET_HARD_LIMIT = _k(
    "cost.budget.hard_limit",
    "a budget could not hold an attempt's reservation: the attempt went to a cheaper tier "
    "or the request was shed with 429 (budget, spent, reserved, hard, needed, currency)",
)

# -- rollouts -----------------------------------------------------------------------------
ROLLOUT_STARTED = _k(
    "rollout.started", "a model rollout began (rollout, candidate, stable, strategy, steps)"
)
ROLLOUT_RESUMED = _k("rollout.resumed", "a restarted gateway resumed a rollout at its step")
ROLLOUT_STEP = _k("rollout.step", "a rollout's candidate took a new share of traffic (weight)")
ROLLOUT_VERDICT = _k(
    "rollout.verdict", "an analysis of candidate against baseline (outcome, checks, look)"
)
ROLLOUT_ROLLED_BACK = _k(
    "rollout.rolled_back", "a failing verdict took the candidate out of service (reason)"
)
ROLLOUT_ABORTED = _k(
    "rollout.aborted", "a rollout ended without promotion for another cause (reason)"
)
ROLLOUT_PROMOTED = _k("rollout.promoted", "a rollout's candidate became the stable model")

# -- SLOs (bastion.slo) -------------------------------------------------------------------
SLO_BURN_PAGE = _k(
    "slo.burn.page",
    "an SLO's error budget burns fast: 14.4x over 1h and 5m, or 6x over 6h and 30m (pair, "
    "burn rates, bad events)",
)
SLO_BURN_TICKET = _k(
    "slo.burn.ticket", "an SLO's error budget burns steadily: 1x over 3d and 6h (burn rates)"
)
SLO_BURN_RESOLVED = _k(
    "slo.burn.resolved",
    "an SLO's page or ticket burn alert ended: no pair of its severity fires (severity, since)",
)
SLO_NODATA = _k("slo.nodata", "an SLO's SLI recorded nothing for alerting.nodata_s (last data)")
SLO_NODATA_RESOLVED = _k("slo.nodata.resolved", "an SLO's SLI records again after slo.nodata")

# -- drills -------------------------------------------------------------------------------
DRILL_STARTED = _k("drill.started", "an experiment began (title)")
DRILL_METHOD_STARTED = _k("drill.method.started", "the experiment's method (the faults) began")
DRILL_FAULT_INJECTED = _k(
    "drill.fault.injected", "a fault was injected; the event's time is when it began to hurt"
)
DRILL_FAULT_REVERTED = _k("drill.fault.reverted", "a fault was reverted")
DRILL_STEADY_STATE_BROKEN = _k("drill.steady_state.broken", "the steady-state hypothesis failed")
DRILL_STEADY_STATE_RESTORED = _k("drill.steady_state.restored", "the steady state holds again")
DRILL_ABORTED = _k("drill.aborted", "the experiment was stopped before its end (reason)")
DRILL_ROLLBACKS_STARTED = _k("drill.rollbacks.started", "the experiment's rollbacks began")
DRILL_LOAD_SUMMARY = _k("drill.load.summary", "what a load action sent and what failed")
DRILL_FILES_CHECKED = _k("drill.files.checked", "files compared with their baseline (lost)")
DRILL_PROCESS_STARTED = _k("drill.process.started", "a drill action started a process (pid)")
DRILL_PROXY_UP = _k("drill.proxy.up", "a fault proxy passes traffic again")
DRILL_PROXY_DOWN = _k("drill.proxy.down", "a fault proxy cut its link")
DRILL_PROXY_TOXIC_ADDED = _k("drill.proxy.toxic_added", "a toxic was added to a fault proxy")
DRILL_PROXY_TOXIC_REMOVED = _k("drill.proxy.toxic_removed", "a toxic was removed from a proxy")
DRILL_HTTP_FAULT_SET = _k("drill.http.fault_set", "an HTTP fault upstream changed its behaviour")
DRILL_FINISHED = _k("drill.finished", "an experiment ended (deviated, rto_s, rpo)")
DRILL_SUITE_STARTED = _k(
    "drill.suite.started",
    "the reference drill suite began against a twin (suite, scenarios, short, twin)",
)
DRILL_SUITE_SCENARIO = _k(
    "drill.suite.scenario",
    "one suite scenario ended (suite, scenario, verdict, reason, rto_s, rpo_s, journal)",
)
DRILL_SUITE_FINISHED = _k(
    "drill.suite.finished", "the reference drill suite ended (suite, a count per verdict)"
)

# -- validation ---------------------------------------------------------------------------
VALIDATE_SCHEMA_STORED = _k(
    "validate.schema.stored",
    "a schema was inferred from a reference dataset and stored (ref, source, columns)",
)
VALIDATE_DATA_CHECKED = _k(
    "validate.data.checked",
    "the data gate judged a dataset (status, against, verdict, findings, drifted)",
)
VALIDATE_MODEL_CHECKED = _k(
    "validate.model.checked",
    "the model gate judged a candidate model (status, against, verdict, findings)",
)

# -- pipelines ----------------------------------------------------------------------------
PIPELINE_STARTED = _k(
    "pipeline.started", "a pipeline run began (run_id, stages in order, resumed_from)"
)
PIPELINE_FINISHED = _k(
    "pipeline.finished", "a pipeline run ended (state, a count per stage state, seconds)"
)
PIPELINE_STAGE_RUNNING = _k(
    "pipeline.stage.running", "a stage's process is being started (key, inputs by snapshot id)"
)
PIPELINE_STAGE_SUCCEEDED = _k(
    "pipeline.stage.succeeded",
    "a stage published its one snapshot (output, snapshot, key, attempts, seconds)",
)
PIPELINE_STAGE_CACHED = _k(
    "pipeline.stage.cached",
    "a stage was skipped: its cache key already names a verified output (output, key)",
)
PIPELINE_STAGE_RESUMED = _k(
    "pipeline.stage.resumed",
    "a stage was skipped: the interrupted run it resumes finished it with the same inputs",
)
PIPELINE_STAGE_FAILED = _k(
    "pipeline.stage.failed", "a stage failed after its retries (reason, attempts)"
)
PIPELINE_STAGE_BLOCKED = _k(
    "pipeline.stage.blocked", "a stage did not run: a stage it reads from failed (by)"
)
PIPELINE_STAGE_UNCACHEABLE = _k(
    "pipeline.stage.uncacheable",
    "part of a stage's cache key could not be hashed; it runs uncached (reason)",
)
PIPELINE_STAGE_VERIFY_FAILED = _k(
    "pipeline.stage.verify_failed",
    "a stage's recorded output failed verification; the stage runs again (error)",
)
PIPELINE_STAGE_ORPHAN_STOPPED = _k(
    "pipeline.stage.orphan_stopped",
    "a stage process left by a killed runner was stopped before the resume (pid)",
)

MODEL_PROMOTED = _k(
    "model.promoted",
    "@prod moved to a model version through a passing verdict (name, version, verdict)",
)
MODEL_PROMOTION_REFUSED = _k(
    "model.promotion_refused",
    "a promotion was refused: no passing verdict for that exact snapshot (name, reason)",
)
MODEL_PROMOTION_FORCED = _k(
    "model.promotion_forced",
    "@prod was moved with --force and the admin key, bypassing the gate (name, version)",
)
MODEL_ROLLED_BACK = _k(
    "model.rolled_back",
    "@prod moved back to the previously promoted version (name, version, from_version)",
)
MODEL_RECONSTITUTE_STARTED = _k(
    "model.reconstitute.started",
    "`bastion model reconstitute` began (ref, snapshot, from_lineage)",
)
MODEL_RECONSTITUTE_RESTORED = _k(
    "model.reconstitute.restored",
    "a model was put back whole on every replica from a copy that verified (snapshot, "
    "documents_repaired, chunks_repaired, seconds)",
)
MODEL_RECONSTITUTE_REBUILT = _k(
    "model.reconstitute.rebuilt",
    "a model was rebuilt from its recorded lineage, proven hash-identical to the signed "
    "original and written back (snapshot, chunks_rebuilt, replay_seconds, why)",
)
MODEL_RECONSTITUTE_NOT_REPLAYABLE = _k(
    "model.reconstitute.not_replayable",
    "a model's lineage cannot be replayed exactly here (snapshot, problems, ran)",
)
MODEL_RECONSTITUTE_SERVING = _k(
    "model.reconstitute.serving",
    "a service answered a real request with the reconstituted model through its own "
    "replicas (service, backend, answered_by, started_pid, seconds since the start)",
)
MODEL_RECONSTITUTE_FINISHED = _k(
    "model.reconstitute.finished",
    "a reconstitution ended whole and serving (snapshot, path restore|rebuild, seconds, services)",
)
MODEL_RECONSTITUTE_FAILED = _k(
    "model.reconstitute.failed",
    "a reconstitution stopped: the model could not be made whole or served (snapshot, error)",
)

# -- the rest -----------------------------------------------------------------------------
DEP_USED = _k("dep.used", "a service used a backend or a job read an input (target, via)")
MAP_ANALYSED = _k("map.analysed", "the dependency map was analysed (findings, availability)")
DEMO_STARTED = _k("demo.started", "the demo began")

# -- the sandbox twin (bastion.twin) ------------------------------------------------------
TWIN_UP = _k(
    "twin.up",
    "a sandbox twin was made (root, ports, objects shared, seconds); in production's log "
    "and the twin's own",
)
TWIN_DOWN = _k("twin.down", "a sandbox twin was removed (root)")
TWIN_LOAD = _k(
    "twin.load", "synthetic load was replayed against a twin's gateway (sent, ok, failed, rate)"
)

# -- control (`bastion up`, its API) ---------------------------------------------------------
CONTROL_UP_STARTED = _k(
    "control.up.started", "`bastion up` started (pid, children adopted, children started, api)"
)
CONTROL_UP_READY = _k("control.up.ready", "every service `bastion up` runs answered (seconds)")
CONTROL_UP_STOPPED = _k("control.up.stopped", "`bastion up` stopped its children and ended")
CONTROL_RELOAD_APPLIED = _k(
    "control.reload.applied",
    "a changed manifest was applied (generation, services added, removed, reloaded, restarted)",
)
CONTROL_RELOAD_FAILED = _k(
    "control.reload.failed", "a manifest was not applied; what ran is unchanged (error)"
)
CONTROL_ACTION = _k(
    "control.action", "a state-changing API call was made (action, target, token name)"
)
CONTROL_REFUSED = _k(
    "control.refused",
    "a state-changing API call was refused (reason: no token, bad token, cross-origin, rate)",
)
CONTROL_SCRUB_FINISHED = _k(
    "control.scrub.finished", "a scheduled, budgeted scrub ended (code, seconds)"
)
SERVE_RELOADED = _k(
    "serve.reloaded",
    "a gateway applied a changed manifest in place (backends added, removed, bounds)",
)

# -- playbooks (bastion.playbooks) --------------------------------------------------------
PLAYBOOK_RUNNER_STARTED = _k(
    "playbook.runner.started", "a playbook runner began following the log (runner, after_id)"
)
PLAYBOOK_RUNNER_STOPPED = _k("playbook.runner.stopped", "a playbook runner stopped (events seen)")
PLAYBOOK_PLANNED = _k(
    "playbook.planned",
    "an event triggered a playbook; the plan it runs (rule, incident, trigger, plan)",
)
PLAYBOOK_PLAN_FAILED = _k(
    "playbook.plan_failed", "an event matched a rule but its templates did not fill (error)"
)
PLAYBOOK_INCIDENT_DUPLICATE = _k(
    "playbook.incident.duplicate",
    "a trigger for an incident already being handled was ignored (rule, incident, trigger)",
)
PLAYBOOK_ACTION_STARTED = _k(
    "playbook.action.started", "a playbook action began (rule, incident, action, target, key)"
)
PLAYBOOK_ACTION_SUCCEEDED = _k(
    "playbook.action.succeeded", "an action ran and its check passed (key, detail, check)"
)
PLAYBOOK_ACTION_FAILED = _k(
    "playbook.action.failed", "an action failed or its check did not pass (key, error, failures)"
)
PLAYBOOK_ACTION_DUPLICATE = _k(
    "playbook.action.duplicate",
    "an action's idempotency key was taken already; it did not run again (key)",
)
PLAYBOOK_ACTION_RECOVERED = _k(
    "playbook.action.recovered",
    "an action cut off by a runner's crash was resolved on restart, never run again: "
    "succeeded (its check passed) or unknown (escalated) (key, outcome, check)",
)
PLAYBOOK_ACTION_RATE_LIMITED = _k(
    "playbook.action.rate_limited", "an action was refused: its target's token bucket is empty"
)
PLAYBOOK_BLAST_RADIUS_REACHED = _k(
    "playbook.blast_radius.reached",
    "an action was refused: playbooks acted on as many targets as the cap allows (targets)",
)
PLAYBOOK_APPROVAL_REQUESTED = _k(
    "playbook.approval.requested",
    "an approve: true action waits for bastion playbook approve ID (id, deadline)",
)
PLAYBOOK_APPROVAL_GRANTED = _k("playbook.approval.granted", "an action was approved (id, by)")
PLAYBOOK_APPROVAL_DENIED = _k(
    "playbook.approval.denied", "an action was denied, by a person or its timeout (id, reason)"
)
PLAYBOOK_ESCALATED = _k(
    "playbook.escalated",
    "a playbook stopped after max_failures failed actions, or a refusal (failures, reason)",
)
PLAYBOOK_RESOLVED = _k(
    "playbook.resolved", "a playbook finished with its actions done (actions, seconds)"
)

# -- segments and the vault server (bastion.segment, bastion.vault._server) ---------------
SEGMENT_QUARANTINED = _k(
    "segment.quarantined",
    "a segment was quarantined: tokens revoked, directories frozen, jobs stopped, backends "
    "out of every gateway (backends, jobs, frozen, seconds)",
)
SEGMENT_RELEASED = _k(
    "segment.released", "a quarantined segment was released after its check (backends, thawed)"
)
SEGMENT_TOKEN_MINTED = _k(
    "segment.token.minted", "a capability token was minted (segment, prefixes, ops, expires, id)"
)
SEGMENT_TOKEN_REVOKED = _k("segment.token.revoked", "a capability token was revoked (id)")
SEGMENT_TOKEN_REFRESH_STOPPED = _k(
    "segment.token.refresh_stopped",
    "a job's supervisor stopped refreshing its vault token: revoked, or the segment "
    "quarantined (job, id, reason); the job's writes stop when it expires",
)
VAULT_SERVER_REFUSED = _k(
    "vault.server.refused",
    "the vault server refused a request (status, reason, segment, op); never the token",
)

for _suffix, _meaning in CHILD.items():
    for _prefix, _who in (
        ("train.", "training worker"),
        ("serve.replica.", "model replica"),
        ("pipeline.stage.process.", "pipeline stage"),
        ("control.child.", "`bastion up` child (a gateway, the guard, a scrub)"),
        ("model.reconstitute.replay.", "a model's replay from lineage"),
    ):
        _name = _prefix + _suffix
        if _name not in ALL:
            _k(_name, f"{_who}: {_meaning}")

TRAIN_STARTED = ALL["train.started"]
TRAIN_EXITED = ALL["train.exited"]
TRAIN_HANG = ALL["train.hang"]
TRAIN_RESTARTING = ALL["train.restarting"]

__all__ += [name for name, value in list(globals().items()) if isinstance(value, Kind)]
