"""Safe rollout of models: canary, shadow and blue-green, judged by statistics, rolled back
in one evaluation interval.

The API, in one screen::

    from bastion.rollout import RolloutController, judge, ArmSample

    controller = RolloutController(gateway, manifest, sets)   # before gateway.start()
    await controller.resume()                                  # a rollout left running
    record = await controller.start("model/digits@7", strategy="canary")
    await controller.abort() / await controller.promote_now()

- ``_analysis``: ``judge`` compares a candidate arm with the baseline arm that got the
  same share of traffic at the same time: ``pass``, ``fail``, ``continue`` or
  ``insufficient`` (docs/rollout.md, "Analysis"). Pure.
- ``_traffic``: the split (sticky buckets per request key), the arms' recorders. Pure.
- ``_state``: the durable record a restarted gateway resumes from.
- ``_controller``: the loop on the gateway's event loop, promotion, rollback, the
  ``/bastion/rollout`` routes ``bastion rollout`` uses.
"""

from __future__ import annotations

from bastion.rollout._analysis import (
    CHECK_NAMES,
    AnalysisSettings,
    ArmSample,
    Check,
    Outcome,
    Verdict,
    judge,
)
from bastion.rollout._controller import RolloutConflict, RolloutController
from bastion.rollout._state import RolloutRecord, read_record
from bastion.rollout._traffic import ArmRecorder, TrafficSplit, bucket, prediction_of

__all__ = [
    "CHECK_NAMES",
    "AnalysisSettings",
    "ArmRecorder",
    "ArmSample",
    "Check",
    "Outcome",
    "RolloutConflict",
    "RolloutController",
    "RolloutRecord",
    "TrafficSplit",
    "Verdict",
    "bucket",
    "judge",
    "prediction_of",
    "read_record",
]
