"""Pipelines: named stages that exchange only verified vault snapshots.

    manifest pipelines: --_dag.build--> Dag (outputs, inputs bound, topological order)
    PipelineRunner(manifest, name).run() --> RunRecord (run.json, events per transition)
        per stage:  inputs resolved -> _key.stage_key (canonical JSON, BLAKE3) ->
                    cached? (label k<key> on the output, verified) | resumed? | run it:
                    inputs restored verified -> supervised process -> publish one snapshot
                    (with its _recipe: code snapshot, exact inputs, config, environment)
    replay(vault, Recipe.of(snapshot), work) --> Replayed (the stage run made again)
    _builtin: validate-data, evaluate, gate, promote, each as its own process

A failing stage blocks its dependants and nothing else. How to write one:
``docs/pipelines.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from bastion._lazy import lazy
from bastion.pipeline._dag import BUILTIN_INPUTS, Dag, StageNode, build, problems

if TYPE_CHECKING:
    from bastion.pipeline._key import (
        CacheKey,
        Unhashable,
        canonical,
        environment_lock,
        stage_key,
    )
    from bastion.pipeline._recipe import Recipe
    from bastion.pipeline._replay import NotReplayable, Replayed, replay, replay_problems
    from bastion.pipeline._runner import PipelineRunner, output_digest
    from bastion.pipeline._status import RunRecord, StageRecord, StageState, read_run

# Loading any manifest checks its pipelines with the pure ``_dag``; importing the package
# for it must not bring the runner, training and the vault (a third of a second of every
# command's start-up): the rest is imported when first named.
_LAZY = {
    **dict.fromkeys(
        ("CacheKey", "Unhashable", "canonical", "environment_lock", "stage_key"),
        "bastion.pipeline._key",
    ),
    "Recipe": "bastion.pipeline._recipe",
    **dict.fromkeys(
        ("NotReplayable", "Replayed", "replay", "replay_problems"), "bastion.pipeline._replay"
    ),
    **dict.fromkeys(("PipelineRunner", "output_digest"), "bastion.pipeline._runner"),
    **dict.fromkeys(
        ("RunRecord", "StageRecord", "StageState", "read_run"), "bastion.pipeline._status"
    ),
}


__getattr__, __dir__ = lazy(__name__, _LAZY)


__all__ = [
    "BUILTIN_INPUTS",
    "CacheKey",
    "Dag",
    "NotReplayable",
    "PipelineRunner",
    "Recipe",
    "Replayed",
    "RunRecord",
    "StageNode",
    "StageRecord",
    "StageState",
    "Unhashable",
    "build",
    "canonical",
    "environment_lock",
    "output_digest",
    "problems",
    "read_run",
    "replay",
    "replay_problems",
    "stage_key",
]
