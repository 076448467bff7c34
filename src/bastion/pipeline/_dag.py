"""A pipeline's definition as a graph: which snapshot each stage publishes, which it
reads, and the order that follows from those refs alone.

Owns: the output each stage publishes (a built-in's default included), binding every
input to the stage that outputs it or to a declared ``sources`` ref, and the problems
of a bad definition (a cycle, an unknown ref, an output written by two stages, a stage
reading its own output), each with the field path the manifest loader locates.

Must never: do I/O. The manifest loader calls ``problems`` (pure, as it calls the
store's URL parser), so a bad pipeline is a located manifest error before anything runs.
"""

from __future__ import annotations

import difflib
import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from bastion.errors import NotFoundError, UsageError
from bastion.manifest._model import Pipeline, PipelineStage
from bastion.names import parse_ref

__all__ = ["BUILTIN_INPUTS", "Dag", "StageNode", "build", "problems"]

Loc = tuple[str | int, ...]

#: per built-in: (required input names, optional input names)
BUILTIN_INPUTS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "validate-data": (("data", "against"), ("test", "schema")),
    "evaluate": (("candidate", "holdout", "golden"), ()),
    "gate": (("candidate", "holdout", "golden"), ("against", "evaluation")),
    "promote": (("model", "verdict"), ()),
}
_SUBJECT = {"validate-data": "data", "gate": "candidate"}


@dataclass(frozen=True)
class StageNode:
    """One stage with its output resolved and each input bound: to ``upstream[name]``
    (a stage of this pipeline) or to an outside ref (``sources``)."""

    name: str
    stage: PipelineStage
    #: the name it publishes (``promote``: ``model/x@prod``, a label it moves)
    output: str
    #: input name -> the stage whose output it reads
    upstream: Mapping[str, str] = field(default_factory=dict)
    #: input name -> an outside ref, resolved when the run begins
    sources: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Dag:
    """A checked pipeline: its stages in a topological order (ties in the order the
    manifest declares them, so the order is the same on every run)."""

    pipeline: str
    nodes: Mapping[str, StageNode]
    #: stage -> the stages that read its output
    successors: Mapping[str, tuple[str, ...]]

    @property
    def order(self) -> list[str]:
        return _topological(list(self.nodes), self.successors)

    def descendants(self, stage: str) -> set[str]:
        seen: set[str] = set()
        todo = [stage]
        while todo:
            for after in self.successors.get(todo.pop(), ()):
                if after not in seen:
                    seen.add(after)
                    todo.append(after)
        return seen


def _topological(names: Sequence[str], successors: Mapping[str, Sequence[str]]) -> list[str]:
    """Kahn's order, ties broken by position in ``names`` (the manifest's order); shorter
    than ``names`` when there is a cycle. Plain code, not networkx: the manifest loader
    runs this on every load, and importing networkx was most of the CLI's start-up."""
    rank = {name: i for i, name in enumerate(names)}
    waiting = dict.fromkeys(names, 0)
    for name in names:
        for after in successors.get(name, ()):
            waiting[after] += 1
    ready = [rank[n] for n in names if waiting[n] == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for after in successors.get(name, ()):
            waiting[after] -= 1
            if waiting[after] == 0:
                heapq.heappush(ready, rank[after])
    return order


def _cycles(names: Sequence[str], successors: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """Every elementary cycle (only called when there is one: networkx is imported then)."""
    import networkx as nx

    graph: nx.DiGraph = nx.DiGraph()
    graph.add_nodes_from(names)
    graph.add_edges_from((a, b) for a in names for b in successors.get(a, ()))
    return sorted(nx.simple_cycles(graph), key=lambda c: (len(c), c))


def _output(pipeline: str, name: str, stage: PipelineStage) -> str | None:
    if stage.output is not None:
        return stage.output
    uses = stage.uses
    if uses in _SUBJECT:
        subject = stage.inputs.get(_SUBJECT[uses])
        return "verdict/" + parse_ref(subject).name if subject else None
    if uses == "evaluate":
        return f"run/{pipeline}/{name}"
    if uses == "promote":
        model = stage.inputs.get("model")
        return f"{parse_ref(model).name}@prod" if model else None
    return None


def _walk(pipeline: str, spec: Pipeline) -> Iterator[tuple[Loc, str] | Dag]:
    base: Loc = ("pipelines", pipeline, "stages")
    outputs: dict[str, str] = {}
    resolved: dict[str, str] = {}
    for name, stage in spec.stages.items():
        out = _output(pipeline, name, stage)
        if stage.uses in BUILTIN_INPUTS:
            required, optional = BUILTIN_INPUTS[stage.uses]
            for need in required:
                if need not in stage.inputs:
                    yield (
                        (*base, name, "inputs"),
                        f"a {stage.uses} stage needs input {need!r} "
                        f"(it takes {', '.join(required + optional)})",
                    )
            for given in stage.inputs:
                if given not in required + optional:
                    yield (
                        (*base, name, "inputs", given),
                        f"a {stage.uses} stage takes no input {given!r} "
                        f"(it takes {', '.join(required + optional)})",
                    )
        if out is None:
            continue
        ref = parse_ref(out)
        if stage.uses != "promote" and ref.rev is not None:
            yield (
                (*base, name, "output"),
                f"output {out!r} names a version; a stage publishes the next version of a "
                f"name (write {ref.name})",
            )
            continue
        if stage.uses in _SUBJECT and stage.output is not None:
            subject = stage.inputs.get(_SUBJECT[stage.uses])
            want = "verdict/" + parse_ref(subject).name if subject else None
            if want is not None and out != want:
                yield (
                    (*base, name, "output"),
                    f"a {stage.uses} stage records its verdict as {want}; write that or "
                    "drop output",
                )
                continue
        key = ref.name if stage.uses != "promote" else out
        if key in outputs:
            yield (
                (*base, name, "output") if stage.output else (*base, name),
                f"{key} is also the output of stage {outputs[key]!r}; each snapshot has "
                "exactly one stage that writes it",
            )
            continue
        outputs[key] = name
        resolved[name] = out
    sources = {str(s) for s in spec.sources}
    successors: dict[str, list[str]] = {name: [] for name in spec.stages}
    nodes: dict[str, StageNode] = {}
    edge_at: dict[tuple[str, str], Loc] = {}
    bad = False
    for name, stage in spec.stages.items():
        upstream: dict[str, str] = {}
        outside: dict[str, str] = {}
        for key, text in stage.inputs.items():
            where: Loc = (*base, name, "inputs", key)
            ref = parse_ref(text)
            producer = outputs.get(ref.name) if ref.rev in (None, "latest") else None
            if producer is None and isinstance(ref.rev, int) and ref.name in outputs:
                yield (
                    where,
                    f"{text!r} pins a version of {ref.name}, which stage "
                    f"{outputs[ref.name]!r} outputs; write {ref.name} to read this run's",
                )
                bad = True
            elif producer == name:
                yield (where, f"stage {name!r} reads its own output {ref.name}")
                bad = True
            elif producer is not None:
                upstream[key] = producer
                if name not in successors[producer]:
                    successors[producer].append(name)
                edge_at.setdefault((producer, name), where)
            elif text in sources:
                outside[key] = text
            else:
                known = sorted(set(outputs) | sources)
                hint = difflib.get_close_matches(text, known, n=1, cutoff=0.6)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                yield (
                    where,
                    f"unknown ref {text!r}: no stage outputs it and it is not one of the "
                    f"pipeline's sources{extra}; add it to sources if it comes from outside",
                )
                bad = True
        if name in resolved:
            nodes[name] = StageNode(name, stage, resolved[name], upstream, outside)
    names = list(spec.stages)
    acyclic = len(_topological(names, successors)) == len(names)
    cycles = [] if acyclic else _cycles(names, successors)
    for found in cycles[:10]:
        start = found.index(min(found))
        cycle = found[start:] + found[:start]
        text = " -> ".join([*cycle, cycle[0]])
        yield (edge_at[(cycle[-1], cycle[0])], f"stage cycle: {text}")
        bad = True
    if not bad and len(nodes) == len(spec.stages):
        yield Dag(pipeline, nodes, {k: tuple(v) for k, v in successors.items()})


def problems(pipeline: str, spec: Pipeline) -> list[tuple[Loc, str]]:
    """Every problem of a pipeline's definition, as (field path, message)."""
    return [p for p in _walk(pipeline, spec) if not isinstance(p, Dag)]


def build(pipelines: Mapping[str, Pipeline], name: str) -> Dag:
    """The checked graph of pipeline ``name``."""
    spec = pipelines.get(name)
    if spec is None:
        hint = difflib.get_close_matches(name, sorted(pipelines), n=1, cutoff=0.6)
        extra = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise NotFoundError(
            f"no pipeline {name!r} in the manifest{extra}; pipelines: "
            f"{', '.join(sorted(pipelines)) or 'none (add one under pipelines:)'}"
        )
    found = list(_walk(name, spec))
    dags = [d for d in found if isinstance(d, Dag)]
    if not dags:
        raise UsageError(
            "; ".join(f"{'.'.join(map(str, loc))}: {msg}" for loc, msg in found[:5])  # type: ignore[misc]
        )
    return dags[0]
