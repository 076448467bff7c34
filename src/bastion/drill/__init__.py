"""Drills: Bastion's faults, and experiments that inject them and measure recovery.

- ``bastion.drill.faults``: the fault library and its ``Scope`` (see its docstring).
- ``bastion.drill.runner``: ``run_experiment(path) -> DrillResult`` runs a Chaos Toolkit
  experiment (continuous steady-state hypothesis, rollbacks always played, abort
  conditions) and writes a journal with measurements read from events.
- ``bastion.drill.actions`` / ``bastion.drill.probes`` / ``bastion.drill.control``: the
  Chaos Toolkit extension (``provider: {type: python, module: bastion.drill.actions,
  func: inject, arguments: {fault: storage.flip_bytes, ...}}``).
- ``bastion.drill.measure``: ``measure(events)`` -> time to detect, RTO, RPO.

Events: ``drill.started``, ``drill.method.started``, ``drill.fault.injected``,
``drill.fault.reverted``, ``drill.steady_state.broken``, ``drill.steady_state.restored``,
``drill.aborted``, ``drill.rollbacks.started``, ``drill.load.summary``,
``drill.files.checked``, ``drill.process.started``, ``drill.proxy.*``,
``drill.http.fault_set``, ``drill.finished``.
"""

from __future__ import annotations

from bastion.drill.actions import FAULTS
from bastion.drill.measure import measure
from bastion.drill.runner import DrillResult, load_experiment, run_experiment

__all__ = ["FAULTS", "DrillResult", "load_experiment", "measure", "run_experiment"]
