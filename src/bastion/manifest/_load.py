"""Loading ``bastion.yaml``: parse, validate, cross-check, and report every problem at once.

Owns: turning a file into a ``Manifest`` or a ``ManifestError`` whose problems each carry
``file:line:column`` and the field path (``services.digits.backends[1].url``).

Must never: stop at the first problem, print a traceback for a user's mistake, or change
the file. ruamel.yaml is used (not PyYAML) because it keeps the line and column of every
key and item, which is what lets a message point at the exact place.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, ReusedAnchorWarning

from bastion.errors import ManifestError, ManifestProblem, UsageError
from bastion.manifest import _limits
from bastion.manifest._model import Manifest
from bastion.store._url import parse_replica_url

__all__ = ["DEFAULT_FILE", "load", "loads"]

DEFAULT_FILE = "bastion.yaml"

Loc = tuple[str | int, ...]


def load(path: str | Path = DEFAULT_FILE) -> Manifest:
    """Load and check a manifest file; relative paths in it resolve against its directory."""
    path = Path(path)
    text = _limits.read(path)
    return loads(text, filename=str(path), base_dir=path.resolve().parent)


def loads(text: str, *, filename: str = DEFAULT_FILE, base_dir: Path | None = None) -> Manifest:
    """Load and check manifest text. ``filename`` is only used in messages.

    Text past the limits in ``_limits`` (size, nesting, alias expansion) is refused with a
    located problem before it can cost more than about a second."""
    _limits.check_text(text, filename)
    tree = _parse(text, filename)
    _limits.check_tree(tree, filename)
    located = _Locator(tree, filename)
    problems: list[ManifestProblem] = []
    manifest: Manifest | None = None
    try:
        manifest = Manifest.model_validate(
            _plain(tree), context={"base_dir": base_dir or Path.cwd()}
        )
    except ValidationError as exc:
        problems.extend(_schema_problems(exc, located))
    problems.extend(_cross_problems(tree, located))
    if problems:
        problems = _dedupe(problems)
        problems.sort(key=lambda p: (p.line, p.column))
        raise ManifestError(problems)
    assert manifest is not None
    if base_dir is not None:
        manifest._path = base_dir / Path(filename).name
    _register_secrets(manifest)
    if manifest.events is not None:
        from bastion.events import use_postgres

        use_postgres(manifest.state_dir, manifest.events)
    return manifest


def _register_secrets(manifest: Manifest) -> None:
    """Tell the event log's redactor which values are secrets: those of every ``*_env``
    variable the manifest names, and job ``env`` entries under secret-looking names."""
    from bastion.events import add_secret, redact

    def walk(node: object) -> None:
        if isinstance(node, BaseModel):
            for name, value in node:
                if name.endswith("_env") and isinstance(value, str):
                    add_secret(os.environ.get(value))
                walk(value)
        elif isinstance(node, dict):
            hidden = redact({str(k): "x" for k in node})
            for key, value in node.items():
                if isinstance(value, str) and hidden.get(str(key)) != "x":
                    add_secret(value)
                walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(manifest)


# --------------------------------------------------------------------------- parsing


def _parse(text: str, filename: str) -> CommentedMap:
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        with warnings.catch_warnings():
            # YAML lets a later anchor reuse a name; the alias then means the later one.
            warnings.simplefilter("ignore", ReusedAnchorWarning)
            tree = yaml.load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        what = exc.problem or "invalid YAML"
        if "duplicate key" in str(exc):
            what = f"duplicate key: {exc.problem}"
        raise ManifestError([ManifestProblem(filename, line, col, "", what)]) from None
    except RecursionError:
        raise ManifestError(
            [ManifestProblem(filename, 1, 1, "", "the manifest nests too deeply to read")]
        ) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad tags)
        raise ManifestError([ManifestProblem(filename, 1, 1, "", f"invalid YAML: {exc}")]) from None
    if tree is None:
        raise ManifestError(
            [
                ManifestProblem(
                    filename,
                    1,
                    1,
                    "",
                    "the manifest is empty (expected version: 1, system: NAME, ...)",
                )
            ]
        )
    if not isinstance(tree, CommentedMap):
        raise ManifestError(
            [
                ManifestProblem(
                    filename,
                    1,
                    1,
                    "",
                    "the manifest must be a mapping of sections (version, system, ...)",
                )
            ]
        )
    return tree


def _plain(node: Any) -> Any:
    if isinstance(node, dict):
        return {str(k) if not isinstance(k, int | float) else k: _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    if isinstance(node, bool):
        return bool(node)
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


class _Locator:
    """Maps a field path to its line and column in the YAML source (1-based)."""

    def __init__(self, tree: CommentedMap, filename: str) -> None:
        self.tree = tree
        self.filename = filename

    def walk(self, loc: Loc) -> tuple[int, int, Loc]:
        """Line, column and the part of ``loc`` that exists in the document."""
        node: Any = self.tree
        line, col = 1, 1
        found: list[str | int] = []
        for step in loc:
            if isinstance(node, CommentedMap) and step in node:
                value = node[step]
                if step in (node.lc.data or {}):
                    kline, kcol = node.lc.key(step)
                    if isinstance(value, CommentedMap | CommentedSeq) or value is None:
                        line, col = kline + 1, kcol + 1
                    else:
                        vline, vcol = node.lc.value(step)
                        line, col = vline + 1, vcol + 1
                # else: a key merged in with "<<: *anchor"; it is where the mapping is
                node = value
            elif isinstance(node, CommentedSeq) and isinstance(step, int) and 0 <= step < len(node):
                iline, icol = node.lc.item(step)
                line, col = iline + 1, icol + 1
                node = node[step]
            else:
                break
            found.append(step)
        return line, col, tuple(found)

    def key(self, loc: Loc) -> tuple[int, int]:
        """Line and column of the key at ``loc`` itself (for unknown keys)."""
        parent_line, parent_col, found = self.walk(loc[:-1])
        node: Any = self.tree
        for step in found:
            node = node[step]
        last = loc[-1]
        if isinstance(node, CommentedMap) and last in (node.lc.data or {}):
            kline, kcol = node.lc.key(last)
            return kline + 1, kcol + 1
        return parent_line, parent_col

    def problem(self, loc: Loc, message: str, *, at_key: bool = False) -> ManifestProblem:
        if at_key:
            line, col = self.key(loc)
        else:
            line, col, _ = self.walk(loc)
        return ManifestProblem(self.filename, line, col, _dotted(loc), message)


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for step in loc:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else str(step)
    return out


# --------------------------------------------------------------------------- schema errors


def _unwrap(tp: Any) -> list[Any]:
    """The concrete types inside Optional/Union/Annotated."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _unwrap(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [t for a in typing.get_args(tp) for t in _unwrap(a)]
    return [tp]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that describes the mapping at ``loc`` (for key suggestions)."""
    current: Any = Manifest
    for step in loc:
        candidates = _unwrap(current)
        nxt = None
        for cand in candidates:
            origin = typing.get_origin(cand)
            if isinstance(step, str) and isinstance(cand, type) and issubclass(cand, BaseModel):
                field = cand.model_fields.get(step)
                if field is not None:
                    nxt = field.annotation
            elif origin is dict and isinstance(step, str):
                nxt = typing.get_args(cand)[1]
            elif origin is list and isinstance(step, int):
                nxt = typing.get_args(cand)[0]
            if nxt is not None:
                break
        if nxt is None:
            return None
        current = nxt
    for cand in _unwrap(current):
        if isinstance(cand, type) and issubclass(cand, BaseModel):
            return cand
    return None


def _schema_problems(exc: ValidationError, located: _Locator) -> Iterator[ManifestProblem]:
    for err in exc.errors(include_url=False):
        loc: Loc = tuple(s for s in err["loc"] if isinstance(s, int | str))
        kind = err["type"]
        # Union branches add their type names to the path ("literal[...]", "int"); they are
        # not keys in the file, so cut the path where the document ends.
        _, _, found = located.walk(loc)
        if kind == "extra_forbidden":
            model = _model_at(loc[:-1])
            names = sorted(model.model_fields) if model else []
            names = [n for n in names if not n.startswith("_")]
            hint = difflib.get_close_matches(str(loc[-1]), names, n=1, cutoff=0.6)
            msg = f"unknown key {loc[-1]!r}"
            msg += (
                f" (did you mean {hint[0]!r}?)"
                if hint
                else f" (expected one of: {', '.join(names)})"
            )
            yield located.problem(loc, msg, at_key=True)
            continue
        if kind == "missing":
            yield located.problem(loc, f"missing required key {loc[-1]!r}", at_key=True)
            continue
        if len(found) < len(loc) and loc[len(found)] == "[key]":
            key = loc[len(found) + 1] if len(loc) > len(found) + 1 else "?"
            yield located.problem(
                found,
                f"name {key!r} must be lower-case letters, digits, '.', '_' or '-' "
                "(at most 64, starting with a letter or digit)",
            )
            continue
        msg = str(err["msg"])
        if msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        value = err.get("input")
        if kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            options = [o.strip().strip("'") for o in expected.replace(" or ", ", ").split(",")]
            hint = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
            msg = f"{value!r} is not one of: {', '.join(options)}"
            if hint:
                msg += f" (did you mean {hint[0]!r}?)"
        elif kind == "string_pattern_mismatch" and loc and loc[-1] == "window":
            msg = (
                f"{value!r} is not a window: use rolling days or hours (28d, 30d, 7d, 12h) "
                "or month (the calendar month)"
            )
        elif kind == "string_pattern_mismatch":
            msg = (
                f"{value!r} is not a valid id: use lower-case letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        elif kind in _STRICT_TYPES and isinstance(value, str):
            msg = _quoted(value, kind)
        elif not isinstance(value, dict | list) and value is not None and kind != "value_error":
            msg = f"{value!r}: {msg[0].lower()}{msg[1:]}"
        yield located.problem(found if len(found) < len(loc) else loc, msg)


# Validation is strict (see _model), so text where a number or a boolean belongs is a
# type error: say whether it was a quoted value or no value of that type at all.
_STRICT_TYPES = {
    "float_type": ("number", "unable to parse string as a number"),
    "int_type": ("integer", "unable to parse string as an integer"),
    "bool_type": ("boolean", "unable to interpret input"),
}


def _quoted(value: str, kind: str) -> str:
    what, otherwise = _STRICT_TYPES[kind]
    text = value.strip()
    if kind == "bool_type":
        looks = text.lower() in ("true", "false", "yes", "no", "on", "off", "y", "n", "1", "0")
        hint = "write true or false, unquoted"
    else:
        try:
            number = float(text)
            looks = kind == "float_type" or number.is_integer()
        except ValueError:
            looks = False
        hint = f"write {text} without quotes"
    if looks:
        return f"{value!r} is text, not a {what}: {hint}"
    return f"{value!r}: input should be a valid {what}, {otherwise}"


def _dedupe(problems: list[ManifestProblem]) -> list[ManifestProblem]:
    seen: set[tuple[int, int, str]] = set()
    out = []
    for p in problems:
        key = (p.line, p.column, p.path)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return out


# --------------------------------------------------------------------------- cross-references


def _items(node: Any) -> list[tuple[int, Any]]:
    return list(enumerate(node)) if isinstance(node, list) else []


def _dep_id(item: Any) -> str | None:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("id"), str):
        return str(item["id"])
    return None


class _Digraph:
    """The dependency edges, and one cycle per strongly connected part of them.

    Small on purpose: the loader runs on every command, and importing networkx for this
    cost a quarter of a second of each one's start."""

    def __init__(self) -> None:
        self.edges: dict[str, list[str]] = {}

    def add_edge(self, a: str, b: str) -> None:
        self.edges.setdefault(a, [])
        self.edges.setdefault(b, [])
        if b not in self.edges[a]:
            self.edges[a].append(b)

    def _components(self) -> list[list[str]]:
        # Tarjan's algorithm, iteratively (a manifest may chain thousands of components).
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        out: list[list[str]] = []
        for root in sorted(self.edges):
            if root in index:
                continue
            work = [(root, 0)]
            while work:
                node, i = work.pop()
                if i == 0:
                    index[node] = low[node] = len(index)
                    stack.append(node)
                    on_stack.add(node)
                targets = self.edges[node]
                if i < len(targets):
                    work.append((node, i + 1))
                    nxt = targets[i]
                    if nxt not in index:
                        work.append((nxt, 0))
                    elif nxt in on_stack:
                        low[node] = min(low[node], index[nxt])
                    continue
                if low[node] == index[node]:
                    part = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        part.append(member)
                        if member == node:
                            break
                    out.append(part)
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
        return out

    def cycles(self, *, limit: int) -> list[list[str]]:
        """Up to ``limit`` cycles, one per strongly connected part: the shortest through its
        smallest id, starting there."""
        out = []
        for part in self._components():
            members = set(part)
            start = min(part)
            if len(part) == 1 and start not in self.edges[start]:
                continue
            # Breadth-first from start back to start, inside the part.
            parent: dict[str, str] = {}
            queue = [start]
            found = start in self.edges[start]
            while queue and not found:
                nxt_queue = []
                for node in queue:
                    for target in self.edges[node]:
                        if target == start:
                            parent[start] = node
                            found = True
                            break
                        if target in members and target not in parent:
                            parent[target] = node
                            nxt_queue.append(target)
                    if found:
                        break
                queue = nxt_queue
            path = [start]
            node = parent.get(start, start)
            while node != start:
                path.append(node)
                node = parent[node]
            out.append([start, *reversed(path[1:])])
            if len(out) >= limit:
                break
        return out


def _cross_problems(tree: CommentedMap, located: _Locator) -> Iterator[ManifestProblem]:
    components = tree.get("components")
    jobs = tree.get("jobs") if isinstance(tree.get("jobs"), dict) else {}
    services = tree.get("services") if isinstance(tree.get("services"), dict) else {}
    raw_segments = tree.get("segments")
    segments = list(raw_segments) if isinstance(raw_segments, list | dict) else None

    ids: dict[str, Loc] = {}
    for i, comp in _items(components):
        if isinstance(comp, dict) and isinstance(comp.get("id"), str):
            cid = str(comp["id"])
            if cid in ids:
                line, _, _ = located.walk(ids[cid])
                yield located.problem(
                    ("components", i, "id"), f"duplicate id {cid!r} (first declared on line {line})"
                )
            else:
                ids[cid] = ("components", i, "id")
    for name in services:
        if name in jobs:
            yield located.problem(
                ("services", str(name)),
                f"{name!r} is both a job and a service; give them different names",
                at_key=True,
            )
    runnable = {str(j) for j in jobs} | {str(s) for s in services}
    for i, comp in _items(components):
        comp_id = comp.get("id") if isinstance(comp, dict) else None
        if comp_id in runnable and isinstance(comp.get("redundancy"), dict):
            kind = "job" if comp_id in jobs else "service"
            yield located.problem(
                ("components", i, "redundancy"),
                f"component {comp_id!r} describes the {kind} {comp_id!r}, which cannot declare "
                f"redundancy here (declare its redundant parts as components and list them "
                f"in the {kind}'s depends_on, or rename the component)",
                at_key=True,
            )
    known = set(ids) | runnable

    graph = _Digraph()
    dep_loc: dict[tuple[str, str], Loc] = {}

    def check_deps(owner: str, base: Loc, node: Any) -> Iterator[ManifestProblem]:
        for j, item in _items(node.get("depends_on") if isinstance(node, dict) else None):
            target = _dep_id(item)
            if target is None:
                continue
            if target not in known:
                hint = difflib.get_close_matches(target, sorted(known), n=1, cutoff=0.6)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                yield located.problem(
                    (*base, "depends_on", j), f"unknown component {target!r}{extra}"
                )
            else:
                graph.add_edge(owner, target)
                dep_loc.setdefault((owner, target), (*base, "depends_on", j))
        red = node.get("redundancy") if isinstance(node, dict) else None
        listed: dict[str, int] = {}
        for j, member in _items(red.get("members") if isinstance(red, dict) else None):
            if not isinstance(member, str):
                continue
            if member in listed:
                yield located.problem(
                    (*base, "redundancy", "members", j),
                    f"{member!r} is listed twice (also members[{listed[member]}]); "
                    "members must be distinct",
                )
                continue
            listed[member] = j
            if member not in known:
                yield located.problem(
                    (*base, "redundancy", "members", j), f"unknown component {member!r}"
                )
            elif member == owner:
                yield located.problem(
                    (*base, "redundancy", "members", j), f"{owner!r} cannot be its own member"
                )
            else:
                graph.add_edge(owner, member)
                dep_loc.setdefault((owner, member), (*base, "redundancy", "members", j))

    for i, comp in _items(components):
        if isinstance(comp, dict) and isinstance(comp.get("id"), str):
            yield from check_deps(str(comp["id"]), ("components", i), comp)
    for name, job in jobs.items():
        yield from check_deps(str(name), ("jobs", str(name)), job)
    for name, svc in services.items():
        yield from check_deps(str(name), ("services", str(name)), svc)
        # A backend whose provider is a declared component depends on it (the map draws
        # that edge), so a provider that depends on the service back is a cycle too.
        for j, backend in _items(svc.get("backends") if isinstance(svc, dict) else None):
            provider = backend.get("provider") if isinstance(backend, dict) else None
            if isinstance(provider, str) and provider in ids:
                graph.add_edge(str(name), provider)
                dep_loc.setdefault(
                    (str(name), provider), ("services", str(name), "backends", j, "provider")
                )
            component = backend.get("component") if isinstance(backend, dict) else None
            if not isinstance(component, str):
                continue
            where: Loc = ("services", str(name), "backends", j, "component")
            if component not in ids:
                hint = difflib.get_close_matches(component, sorted(ids), n=1, cutoff=0.6)
                extra = f" (did you mean {hint[0]!r}?)" if hint else ""
                yield located.problem(
                    where,
                    f"unknown component {component!r}{extra}; a backend's component is one "
                    "declared under components",
                )
            else:
                graph.add_edge(str(name), component)
                dep_loc.setdefault((str(name), component), where)

    for ordered in graph.cycles(limit=10):
        text = " -> ".join([*ordered, ordered[0]])
        loc = dep_loc[(ordered[0], ordered[1 % len(ordered)])]
        yield located.problem(loc, f"dependency cycle: {text}")

    declared = ", ".join(map(str, services)) or "none"
    for i, slo in _items(tree.get("slos")):
        wanted = slo.get("service") if isinstance(slo, dict) else None
        if isinstance(wanted, str) and wanted not in services:
            yield located.problem(
                ("slos", i, "service"), f"unknown service {wanted!r} (services: {declared})"
            )

    def check_segment(base: Loc, node: Any) -> Iterator[ManifestProblem]:
        seg = node.get("segment") if isinstance(node, dict) else None
        if isinstance(seg, str) and segments is not None and seg not in segments:
            yield located.problem(
                (*base, "segment"),
                f"unknown segment {seg!r} (declared segments: {', '.join(map(str, segments))})",
            )

    listens: dict[str, str] = {}
    for name, job in jobs.items():
        yield from check_segment(("jobs", str(name)), job)
        slots: dict[str, int] = {}
        for j, slot in _items(job.get("slots") if isinstance(job, dict) else None):
            sname = slot.get("name") if isinstance(slot, dict) else None
            if isinstance(sname, str):
                if sname in slots:
                    yield located.problem(
                        ("jobs", str(name), "slots", j, "name"),
                        f"duplicate slot name {sname!r} (also slots[{slots[sname]}])",
                    )
                else:
                    slots[sname] = j
    for name, svc in services.items():
        yield from check_segment(("services", str(name)), svc)
        for b, backend in _items(svc.get("backends") if isinstance(svc, dict) else None):
            yield from check_segment(("services", str(name), "backends", b), backend)
        if not isinstance(svc, dict):
            continue
        names: set[str] = set()
        for j, backend in _items(svc.get("backends")):
            bname = backend.get("name") if isinstance(backend, dict) else None
            if isinstance(bname, str):
                if bname in names:
                    yield located.problem(
                        ("services", str(name), "backends", j, "name"),
                        f"duplicate backend name {bname!r}",
                    )
                names.add(bname)
        yield from _cost_problems(str(name), svc, located)
        listen = svc.get("listen")
        if isinstance(listen, str):
            if listen in listens:
                yield located.problem(
                    ("services", str(name), "listen"),
                    f"{listen} is already the address of service {listens[listen]!r}",
                )
            listens[listen] = str(name)
        for k, address in _items(svc.get("gateways")):
            if not isinstance(address, str) or address == listen:
                continue
            if address in listens:
                yield located.problem(
                    ("services", str(name), "gateways", k),
                    f"{address} is already the address of service {listens[address]!r}",
                )
            listens[address] = str(name)

    vault = tree.get("vault")
    for i, replica in _items(vault.get("replicas") if isinstance(vault, dict) else None):
        if not isinstance(replica, str):
            continue
        try:
            problem = parse_replica_url(replica).problem
        except UsageError:
            continue  # malformed: the schema's check reports it at the same place
        if problem is not None:
            yield located.problem(("vault", "replicas", i), f"{replica!r}: {problem}")

    yield from _pipeline_problems(tree, located)
    yield from _playbook_problems(tree, located)


def _cost_problems(name: str, svc: dict[str, Any], located: _Locator) -> Iterator[ManifestProblem]:
    """A service's prices and budgets against each other: one currency (none is
    converted), vendors that name a backend, key budgets only with client keys."""
    base: Loc = ("services", name)
    currencies: dict[str, Loc] = {}
    vendors: set[str] = set()
    for j, backend in _items(svc.get("backends")):
        if not isinstance(backend, dict):
            continue
        for field in ("provider", "name"):
            if isinstance(backend.get(field), str):
                vendors.add(str(backend[field]))
                break
        price = backend.get("price")
        if isinstance(price, dict):
            currency = price.get("currency", "USD")
            if isinstance(currency, str) and currency not in currencies:
                currencies[currency] = (*base, "backends", j, "price")
    if len(currencies) > 1:
        (first, _), (second, where) = list(currencies.items())[:2]
        yield located.problem(
            where,
            f"this price is in {second}, an earlier one of the service in {first}; Bastion "
            "converts no currency into another, so give every price of a service in one",
        )
    for i, budget in _items(svc.get("budgets")):
        if not isinstance(budget, dict):
            continue
        loc: Loc = (*base, "budgets", i)
        currency = budget.get("currency", "USD")
        if currencies and isinstance(currency, str) and currency not in currencies:
            yield located.problem(
                (*loc, "currency") if "currency" in budget else loc,
                f"budget in {currency}, the service's prices in {next(iter(currencies))}; "
                "give the budget in the prices' currency",
            )
        vendor = budget.get("vendor")
        if isinstance(vendor, str) and vendors and vendor not in vendors:
            yield located.problem(
                (*loc, "vendor"),
                f"{vendor!r} is no backend's provider or name (they are: "
                f"{', '.join(sorted(vendors))})",
            )
        if budget.get("scope") == "key" and not isinstance(svc.get("auth"), dict):
            yield located.problem(
                (*loc, "scope"),
                "scope key needs client keys, and the service has no auth; add "
                f"services.{name}.auth.keys_env, or use scope service",
            )


def _pipeline_problems(tree: CommentedMap, located: _Locator) -> Iterator[ManifestProblem]:
    """A pipeline whose stages pass the schema is checked as a graph (bastion.pipeline's
    pure ``_dag``: one judge of cycles, unknown refs and outputs written twice)."""
    pipelines = tree.get("pipelines")
    if not isinstance(pipelines, dict):
        return
    from bastion.manifest._model import Pipeline
    from bastion.pipeline._dag import problems

    for name, raw in pipelines.items():
        try:
            spec = Pipeline.model_validate(_plain(raw))
        except ValidationError:
            continue  # the schema's problems are reported already
        for loc, message in problems(str(name), spec):
            yield located.problem(loc, message)


def _playbook_problems(tree: CommentedMap, located: _Locator) -> Iterator[ManifestProblem]:
    """Playbook rules against the event kinds Bastion emits (bastion.playbooks' pure
    ``_conditions``: one judge of kinds, conditions and templates) and against the names
    the manifest declares (services, backends, jobs, slots, segments, SLOs)."""
    playbooks = tree.get("playbooks")
    rules = playbooks.get("rules") if isinstance(playbooks, dict) else None
    if not isinstance(rules, dict):
        return
    from bastion.playbooks._conditions import kind_problem, problems

    services = tree.get("services") if isinstance(tree.get("services"), dict) else {}
    jobs = tree.get("jobs") if isinstance(tree.get("jobs"), dict) else {}
    segments = tree.get("segments") if isinstance(tree.get("segments"), list) else []
    slos = {s.get("id") for _, s in _items(tree.get("slos")) if isinstance(s, dict)}

    def known(loc: Loc, value: Any, names: Iterable[Any], what: str) -> Iterator[ManifestProblem]:
        if not isinstance(value, str) or "{" in value:
            return  # a template: judged when an event fills it in
        listed = sorted(str(n) for n in names)
        if value not in listed:
            hint = difflib.get_close_matches(value, listed, n=1, cutoff=0.6)
            extra = (
                f"did you mean {hint[0]!r}?" if hint else f"{what}s: {', '.join(listed) or 'none'}"
            )
            yield located.problem(loc, f"unknown {what} {value!r} ({extra})")

    def check_check(loc: Loc, check: Any) -> Iterator[ManifestProblem]:
        if isinstance(check, dict) and "slo" in check:
            yield from known((*loc, "slo"), check["slo"], slos, "slo")

    for name, rule in rules.items():
        if not isinstance(rule, dict):
            continue
        base: Loc = ("playbooks", "rules", str(name))
        on = rule.get("on")
        if isinstance(on, str):
            bad = kind_problem(on)
            if bad:
                yield located.problem((*base, "on"), bad)
        when: dict[str, Any] = rule["when"] if isinstance(rule.get("when"), dict) else {}
        templates: dict[str, str] = {}
        where: dict[str, Loc] = {}
        if isinstance(rule.get("incident"), str):
            templates["t:incident"] = str(rule["incident"])
            where["t:incident"] = (*base, "incident")
        yield from check_check((*base, "check"), rule.get("check"))
        for i, action in _items(rule.get("actions")):
            if not isinstance(action, dict):
                continue
            at: Loc = (*base, "actions", i)
            for key, value in action.items():
                if isinstance(value, str):
                    templates[f"t:{i}.{key}"] = value
                    where[f"t:{i}.{key}"] = (*at, str(key))
                elif isinstance(value, list) and key == "command":
                    for j, arg in enumerate(value):
                        if isinstance(arg, str):
                            templates[f"t:{i}.{key}.{j}"] = arg
                            where[f"t:{i}.{key}.{j}"] = (*at, str(key), j)
            yield from check_check((*at, "check"), action.get("check"))
            do = action.get("do")
            if do == "quarantine":
                yield from known((*at, "segment"), action.get("segment"), segments, "segment")
            if do in ("failover", "scale"):
                yield from known((*at, "service"), action.get("service"), services, "service")
            svc = (
                services.get(action.get("service"))
                if isinstance(action.get("service"), str)
                else None
            )
            if do == "scale" and isinstance(svc, dict):
                backends = [
                    b.get("name") for _, b in _items(svc.get("backends")) if isinstance(b, dict)
                ]
                yield from known((*at, "backend"), action.get("backend"), backends, "backend")
            tier = action.get("tier")
            plain_tier = isinstance(tier, str) and "{" not in tier
            named = tier in ("primary", "fallback") or str(tier).isdigit()
            if do == "failover" and plain_tier and not named:
                yield located.problem(
                    (*at, "tier"), f"tier {tier!r} is not primary, fallback or a number"
                )
            if do == "restart":
                yield from known((*at, "job"), action.get("job"), jobs, "job")
                job = jobs.get(action.get("job")) if isinstance(action.get("job"), str) else None
                if isinstance(job, dict) and action.get("slot") is not None:
                    slots = [
                        s.get("name") for _, s in _items(job.get("slots")) if isinstance(s, dict)
                    ]
                    yield from known((*at, "slot"), action.get("slot"), slots, "slot")
        for key, message in problems(when, templates):
            loc = where.get(key, (*base, "when", key))
            yield located.problem(loc, message)
