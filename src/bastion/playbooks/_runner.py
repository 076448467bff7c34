"""``bastion playbook run``: follow the event log and carry out the plans it triggers.

Owns: the loop from an appended event to its actions. For each event it calls ``plan``
(the dry run's function), claims each triggered rule's incident in the ledger (one
handler per incident, whichever runner or thread sees it first), records the plan
(``playbook.planned``) and hands it to a worker thread, so an action that waits for an
approval holds up nothing else. A worker goes through the plan's actions in order: the
approval (if ``approve: true``), the claim of the action's idempotency key with the rate
limit and blast radius, the action, then its check. ``max_failures`` failed actions, a
denied approval or the blast radius escalate (``playbook.escalated``) and stop the
playbook: there is no loop to run away in, every action runs at most once per incident.

Recovery (``recover``, at the start of ``run``): an incident still ``running`` whose
owner is a runner process on this host that is gone (SIGKILL, a crash, a reboot) is
adopted by one restarted runner (a conditional UPDATE: never two). Each of its actions
left ``started`` (claimed, no outcome) is never run again: its post-check, when it has
one, decides ``succeeded``; with no check, or a check that does not pass, it is marked
``unknown`` and the incident escalates, because only a person can tell whether half an
action happened. An incident whose cut-off actions all check out carries on with the
plan's remaining actions (re-planned from its trigger event; the claimed ones are
skipped by their keys).

Must never: run an action whose key is claimed, retry an action, or let a playbook's own
events trigger the rule that wrote them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from bastion import event_kinds as ek
from bastion.events import Event, EventLog
from bastion.manifest import Manifest
from bastion.playbooks._actions import ActionContext, ActionFailed, run_action, run_check
from bastion.playbooks._ledger import Claim, Ledger
from bastion.playbooks._plan import PlannedAction, PlannedRule, plan

__all__ = ["Runner", "owner_alive"]


def owner_alive(owner: str) -> bool:
    """Whether the runner named ``owner`` (``name:host:pid:nonce``) may still be running:
    False only for a process on this host that is gone. Owners from other hosts (or of an
    older form) are taken as alive: a runner cannot tell, and adopting a live runner's
    incident would run its actions twice."""
    parts = owner.rsplit(":", 3)
    if len(parts) != 4 or parts[1] != socket.gethostname() or not parts[2].isdigit():
        return True
    pid = int(parts[2])
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return _not_zombie(pid)


def _not_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:  # noqa: PTH123
            return f.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:
        return True


class Runner:
    """Follows the event log (``<state_dir>/events.db``, or the PostgreSQL database of the
    manifest's ``events:``) for the manifest's playbooks.

    ``name`` keeps this runner's place in the log (``playbook_cursors``), so a restarted
    runner resumes where it stopped; several runners may follow one log at once, on one
    host or on several sharing a PostgreSQL log (the ledger makes each action happen
    once). ``poll_s`` is how long it sleeps when nothing new was appended."""

    def __init__(
        self,
        manifest: Manifest,
        *,
        name: str = "default",
        poll_s: float = 0.01,
        workers: int = 8,
        log: EventLog | None = None,
        ledger: Ledger | None = None,
    ) -> None:
        self.manifest = manifest
        self.name = name
        self.owner = f"{name}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.poll_s = poll_s
        self.log = log if log is not None else EventLog.in_state_dir(manifest.state_dir)
        self.ledger = ledger if ledger is not None else Ledger.in_state_dir(manifest.state_dir)
        self.stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="playbook")
        self._futures: list[Future[str]] = []
        self._ctx = ActionContext(manifest, self.log, stopping=self.stop.is_set)
        self.seen = 0

    # -- one event ----------------------------------------------------------------------

    def handle(self, event: Event | Mapping[str, Any]) -> list[Future[str]]:
        """Plan ``event`` and start a worker for each incident this runner claims."""
        row = event.to_json() if isinstance(event, Event) else dict(event)
        self.seen += 1
        if not self.manifest.playbooks.rules:
            return []
        started = []
        for planned in plan(self.manifest.playbooks, row).rules:
            common: dict[str, Any] = {"rule": planned.rule, "trigger": planned.trigger}
            segment = str(row.get("segment") or "") or None
            if planned.error is not None:
                self.log.emit(
                    ek.PLAYBOOK_PLAN_FAILED,
                    planned.rule,
                    segment=segment,
                    error=planned.error,
                    **common,
                )
                continue
            if not self.ledger.claim_incident(
                planned.rule, planned.incident, planned.trigger, self.owner
            ):
                self.log.emit(
                    ek.PLAYBOOK_INCIDENT_DUPLICATE,
                    planned.rule,
                    segment=segment,
                    incident=planned.incident,
                    **common,
                )
                continue
            self.log.emit(
                ek.PLAYBOOK_PLANNED,
                planned.rule,
                segment=segment,
                incident=planned.incident,
                plan=planned.to_json(),
                **common,
            )
            future = self._pool.submit(self.execute, planned, row)
            self._futures.append(future)
            started.append(future)
        return started

    # -- one incident -------------------------------------------------------------------

    def _emit(self, kind: ek.Kind, planned: PlannedRule, segment: str | None, **data: Any) -> None:
        self.log.emit(
            kind,
            planned.rule,
            segment=segment,
            rule=planned.rule,
            incident=planned.incident,
            **data,
        )

    def execute(
        self,
        planned: PlannedRule,
        event: Mapping[str, Any],
        resumed: Mapping[int, str] | None = None,
    ) -> str:
        """Work through one claimed incident's plan: ``resolved`` or ``escalated``.
        ``resumed``: index -> outcome of actions a crashed runner finished (skipped here,
        their outcomes counted)."""
        segment = str(event.get("segment") or "") or None
        resumed = resumed or {}
        started = time.monotonic()
        limits = self.manifest.playbooks.limits
        failures = 0
        done: list[str] = []

        def escalate(reason: str) -> str:
            self._emit(
                ek.PLAYBOOK_ESCALATED, planned, segment, reason=reason, failures=failures, done=done
            )
            self.ledger.finish_incident(planned.rule, planned.incident, "escalated")
            return "escalated"

        for step in planned.actions:
            info = {"action": step.do, "index": step.index, "target": step.target, "key": step.key}
            if step.index in resumed:
                if resumed[step.index] == "succeeded":
                    done.append(step.do)
                    if planned.strategy == "alternatives":
                        break
                else:
                    failures += 1
                    if failures >= planned.max_failures:
                        return escalate(f"{failures} failed actions (max_failures)")
                continue
            if step.approve and not self._approved(planned, step, segment, info):
                return escalate(f"action {step.index} ({step.do}) was not approved")
            claim, why = self.ledger.claim_action(
                key=step.key,
                rule=planned.rule,
                incident=planned.incident,
                index=step.index,
                action=step.do,
                target=step.target,
                params=dict(step.params),
                burst=limits.rate_burst,
                per_minute=limits.rate_per_minute,
                blast_radius=limits.blast_radius,
                blast_window_s=limits.blast_window_s,
            )
            if claim is Claim.DUPLICATE:
                self._emit(ek.PLAYBOOK_ACTION_DUPLICATE, planned, segment, **info)
                continue
            if claim is Claim.BLAST_RADIUS:
                self._emit(ek.PLAYBOOK_BLAST_RADIUS_REACHED, planned, segment, **info, **why)
                return escalate(f"blast radius: {why['cap']} targets acted on already")
            if claim is Claim.RATE_LIMITED:
                failures += 1
                self._emit(
                    ek.PLAYBOOK_ACTION_RATE_LIMITED,
                    planned,
                    segment,
                    failures=failures,
                    **info,
                    **why,
                )
                if failures >= planned.max_failures:
                    return escalate(f"{failures} failed actions (max_failures)")
                continue
            ok, detail, checked = self._act(planned, step, event, segment, info)
            if ok:
                done.append(step.do)
                self._emit(
                    ek.PLAYBOOK_ACTION_SUCCEEDED,
                    planned,
                    segment,
                    detail=detail,
                    check=checked,
                    **info,
                )
                if planned.strategy == "alternatives":
                    break
                continue
            failures += 1
            self._emit(
                ek.PLAYBOOK_ACTION_FAILED,
                planned,
                segment,
                error=detail,
                check=checked,
                failures=failures,
                **info,
            )
            if failures >= planned.max_failures:
                return escalate(f"{failures} failed actions (max_failures)")
        if failures and (planned.strategy == "sequence" or not done):
            return escalate(f"{failures} action(s) failed" if done else "no action worked")
        self._emit(
            ek.PLAYBOOK_RESOLVED,
            planned,
            segment,
            actions=done,
            seconds=round(time.monotonic() - started, 3),
        )
        self.ledger.finish_incident(planned.rule, planned.incident, "resolved")
        return "resolved"

    def _approved(
        self, planned: PlannedRule, step: PlannedAction, segment: str | None, info: dict[str, Any]
    ) -> bool:
        pending = self.ledger.request_approval(
            id=step.approval_id,
            key=step.key,
            rule=planned.rule,
            incident=planned.incident,
            action=step.do,
            target=step.target,
            params=dict(step.params),
            timeout_s=step.approve_timeout_s,
        )
        self._emit(
            ek.PLAYBOOK_APPROVAL_REQUESTED,
            planned,
            segment,
            id=pending.id,
            deadline=pending.deadline,
            **info,
        )
        decided = self.ledger.wait_decision(pending.id, stop=self.stop)
        if decided.state == "approved":
            return True
        if decided.reason in ("timeout", "stopped"):
            # a person's denial is recorded by whoever denied it (bastion playbook deny)
            self._emit(
                ek.PLAYBOOK_APPROVAL_DENIED,
                planned,
                segment,
                id=decided.id,
                reason=decided.reason,
                **info,
            )
        return False

    def _act(
        self,
        planned: PlannedRule,
        step: PlannedAction,
        event: Mapping[str, Any],
        segment: str | None,
        info: dict[str, Any],
    ) -> tuple[bool, str, str | None]:
        self._emit(ek.PLAYBOOK_ACTION_STARTED, planned, segment, params=dict(step.params), **info)
        payload = {
            "rule": planned.rule,
            "incident": planned.incident,
            "key": step.key,
            "action": step.do,
            "event": dict(event),
        }
        try:
            detail = run_action(self._ctx, step.do, step.params, payload)
        except ActionFailed as exc:
            self.ledger.finish_action(step.key, "failed", str(exc))
            return False, str(exc), None
        except Exception as exc:  # an action's bug must not kill the runner
            self.ledger.finish_action(step.key, "failed", repr(exc))
            return False, f"internal error: {exc!r}", None
        checked = None
        if step.check is not None:
            ok, checked = run_check(self._ctx, step.check)
            if not ok:
                self.ledger.finish_action(step.key, "failed", f"check: {checked}")
                return False, f"check did not pass: {checked}", checked
        self.ledger.finish_action(step.key, "succeeded", detail)
        return True, detail, checked

    # -- recovery after a crash ---------------------------------------------------------

    def recover(self) -> list[Future[str]]:
        """Adopt the incidents of runners on this host that are gone, and resolve each
        action they left ``started`` without running it again (see the module)."""
        resumed = []
        for rule, incident, trigger, dead in self.ledger.running_incidents():
            if owner_alive(dead) or not self.ledger.adopt_incident(
                rule, incident, dead, self.owner
            ):
                continue
            future = self._pool.submit(self._resume, rule, incident, trigger, dead)
            self._futures.append(future)
            resumed.append(future)
        return resumed

    def _resume(self, rule: str, incident: str, trigger: int, dead: str) -> str:
        found = self.log.query(after_id=trigger - 1, limit=1)
        row = found[0].to_json() if found and found[0].id == trigger else None
        planned = None
        if row is not None and rule in self.manifest.playbooks.rules:
            for candidate in plan(self.manifest.playbooks, row).rules:
                if candidate.rule == rule and candidate.incident == incident:
                    planned = candidate if candidate.error is None else None
        segment = str((row or {}).get("segment") or "") or None
        steps = {s.index: s for s in planned.actions} if planned is not None else {}
        unknown: list[str] = []
        for key, index, action in self.ledger.started_actions(rule, incident):
            step = steps.get(index)
            outcome, checked = "unknown", None
            if step is not None and step.check is not None:
                ok, checked = run_check(self._ctx, step.check)
                outcome = "succeeded" if ok else "unknown"
            if checked is None:
                why = "it has no check to tell whether it happened"
            elif outcome == "succeeded":
                why = f"its check passed ({checked})"
            else:
                why = f"its check did not pass ({checked})"
            detail = f"cut off by the crash of runner {dead}; not run again: {why}"
            self.ledger.finish_action(key, outcome, detail)
            self.log.emit(
                ek.PLAYBOOK_ACTION_RECOVERED,
                rule,
                segment=segment,
                rule=rule,
                incident=incident,
                action=action,
                index=index,
                key=key,
                outcome=outcome,
                check=checked,
                runner=self.owner,
                crashed=dead,
                detail=detail,
            )
            if outcome == "unknown":
                unknown.append(f"action {index} ({action})")
        if planned is None or unknown:
            reason = (
                f"{', '.join(unknown)} cut off by a runner crash, outcome unknown: "
                "check by hand (it is never run twice)"
                if unknown
                else "the incident's plan cannot be made again (its trigger event or rule "
                "is gone); check by hand"
            )
            self.log.emit(
                ek.PLAYBOOK_ESCALATED,
                rule,
                segment=segment,
                rule=rule,
                incident=incident,
                reason=reason,
                failures=len(unknown),
                done=[],
            )
            self.ledger.finish_incident(rule, incident, "escalated")
            return "escalated"
        assert row is not None
        return self.execute(planned, row, self.ledger.finished_actions(rule, incident))

    # -- following the log --------------------------------------------------------------

    def start_id(self, *, from_start: bool = False) -> int:
        """Where ``run`` starts: the log's beginning, this runner's saved cursor, or now."""
        if from_start:
            return 0
        saved = self.ledger.cursor(self.name)
        return saved if saved is not None else self.log.last_id()

    def run(self, *, after_id: int | None = None, from_start: bool = False) -> None:
        """Follow the log until ``stop`` is set, then wait for the workers."""
        last = self.start_id(from_start=from_start) if after_id is None else after_id
        self.log.emit(ek.PLAYBOOK_RUNNER_STARTED, self.name, runner=self.owner, after_id=last)
        self.recover()
        try:
            for event in self.log.follow(after_id=last, poll_s=self.poll_s, stop=self.stop):
                self.handle(event)
                self.ledger.set_cursor(self.name, event.id)
        finally:
            self.drain()
            self.log.emit(ek.PLAYBOOK_RUNNER_STOPPED, self.name, runner=self.owner, seen=self.seen)

    def drain(self, timeout: float | None = None) -> None:
        """Wait for every started incident to finish."""
        for future in list(self._futures):
            future.result(timeout=timeout)
        self._futures.clear()

    def close(self) -> None:
        self.stop.set()
        self._pool.shutdown(wait=True)
        self.ledger.close()
        self.log.close()
