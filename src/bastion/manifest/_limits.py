"""What reading a manifest may cost: its size, its nesting, and what its YAML aliases expand to.

Owns: the limits (``MAX_BYTES``, ``MAX_DEPTH``, ``MAX_ALIAS_NODES``) and the checks that
refuse a manifest past them with a located problem, before the expensive work starts:

- size, before the file is read whole (a 50 MB file, ``/dev/zero``);
- nesting, by a scan of the text before the YAML parser sees it (ruamel's scanner is
  quadratic in flow nesting, and its composer recursive: ``[[[[...`` took seconds, then a
  RecursionError);
- alias expansion, on the parsed tree, whose aliases are still shared objects (a "billion
  laughs" document is small until something copies it out: validation did, and ran past a
  minute at 1.6 GB);
- escaped UTF-16 surrogates (``"\\ud835"``), which are not characters: a pair becomes the
  character it encodes, as in JSON; a lone one is refused (it would break every printout).

Why these numbers: ruamel's round-trip parser (which the loader needs for line:column)
reads about 100-200 KB a second on a busy 2-core machine, so at ``MAX_BYTES`` (128 KiB,
some 700 components written out in block style) any manifest is parsed, checked and, if
need be, refused within about a second. Real manifests nest 6 deep and alias a policy or
two; the limits are generous to those.

Must never: parse YAML itself, or let a document that passed cost more than these bounds.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from ruamel.yaml.comments import CommentedMap, CommentedSeq

from bastion.errors import ManifestError, ManifestProblem, UsageError

__all__ = ["MAX_ALIAS_NODES", "MAX_BYTES", "MAX_DEPTH", "check_text", "check_tree", "read"]

MAX_BYTES = 128 * 1024
MAX_DEPTH = 64
MAX_ALIAS_NODES = 10_000  # how many nodes aliases may add when the document is expanded

# A line whose value starts a block scalar: "key: |", "- >-", "key: |2  # comment".
_BLOCK_SCALAR = re.compile(r"(^|[:\-]\s)[|>][-+0-9]*\s*(#.*)?$")


def _refuse(filename: str, line: int, column: int, path: str, message: str) -> ManifestError:
    return ManifestError([ManifestProblem(filename, line, column, path, message)])


def _too_big(filename: str, size: int) -> ManifestError:
    return _refuse(
        filename,
        1,
        1,
        "",
        f"the manifest is {size:,} bytes; a manifest is at most {MAX_BYTES:,} bytes "
        f"({MAX_BYTES // 1024} KiB): is this the right file? (split generated parts out, "
        "or shorten descriptions)",
    )


def read(path: Path) -> str:
    """The text of a manifest file, read no further than the limit."""
    try:
        with path.open("rb") as handle:
            size = path.stat().st_size
            if size > MAX_BYTES:
                raise _too_big(str(path), size)
            data = handle.read(MAX_BYTES + 1)  # a device or pipe has no size: read past it
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such manifest (create one with `bastion init`, or pass -f FILE)"
        ) from None
    except (IsADirectoryError, PermissionError) as exc:
        raise UsageError(f"{path}: cannot read the manifest: {exc}") from None
    if len(data) > MAX_BYTES:
        raise _too_big(str(path), len(data))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise _refuse(
            str(path),
            line,
            column,
            "",
            f"byte 0x{data[exc.start]:02x} is not UTF-8 (save the manifest as UTF-8)",
        ) from None


def _opens_flow(line: str, col: int) -> bool:
    # A "[" or "{" opens a flow collection where a value starts: at the start of the line
    # or after ": ", "- ", ",", or another opener. Elsewhere it is part of a plain scalar
    # ("see [1]"), which YAML allows and which does not nest.
    before = line[:col].rstrip(" \t")
    return not before or before[-1] in ":-,[{"


def check_text(text: str, filename: str) -> None:
    """Refuse text over ``MAX_BYTES`` or nested deeper than ``MAX_DEPTH``, before parsing."""
    if len(text) > MAX_BYTES or len(text.encode("utf-8", "surrogatepass")) > MAX_BYTES:
        raise _too_big(filename, len(text.encode("utf-8", "surrogatepass")))
    flow = 0
    indents: list[int] = []
    literal = -1  # the indent of the line that opened a block scalar (| or >), if in one
    for number, line in enumerate(text.splitlines(), 1):
        body = line.lstrip(" ")
        if not body or body.startswith("#"):
            continue
        indent = len(line) - len(body)
        if literal >= 0:
            if indent > literal:
                continue  # a block scalar's text: anything goes, nothing nests
            literal = -1
        if flow == 0 and _BLOCK_SCALAR.search(body):
            literal = indent
        if flow == 0:
            while indents and indents[-1] >= indent:
                indents.pop()
            indents.append(indent)
            # "- - - x" nests one sequence per dash on a single line.
            dashes = 0
            rest = body
            while rest.startswith("- ") or rest == "-":
                dashes += 1
                rest = rest[2:].lstrip(" ")
            if len(indents) + dashes > MAX_DEPTH:
                raise _deep(filename, number, indent + 1)
        quote = ""
        for col, char in enumerate(line):
            if quote:
                if char == quote and (quote == "'" or line[col - 1] != "\\"):
                    quote = ""
            elif char in "'\"" and _opens_flow(line, col):
                quote = char
            elif char == "#" and (col == 0 or line[col - 1] in " \t"):
                break
            elif char in "[{" and (flow > 0 or _opens_flow(line, col)):
                flow += 1
                if flow + len(indents) > MAX_DEPTH:
                    raise _deep(filename, number, col + 1)
            elif char in "]}" and flow > 0:
                flow -= 1


def _deep(filename: str, line: int, column: int) -> ManifestError:
    return _refuse(
        filename,
        line,
        column,
        "",
        f"the manifest nests deeper than {MAX_DEPTH} levels here; a manifest needs fewer "
        "than 10 (is this the right file?)",
    )


def _surrogates(text: str) -> str | None:
    """``text`` with escaped surrogate pairs joined into characters; None if one is alone."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    try:
        return text.encode("utf-16", "surrogatepass").decode("utf-16")
    except UnicodeDecodeError:
        return None


def _position(parent: Any, key: Any) -> tuple[int, int]:
    try:
        if isinstance(parent, CommentedSeq):
            line, col = parent.lc.item(key)
        else:
            line, col = parent.lc.value(key)
        return line + 1, col + 1
    except (KeyError, IndexError, TypeError, AttributeError):
        try:
            return parent.lc.line + 1, parent.lc.col + 1
        except AttributeError:
            return 1, 1


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for step in path:
        out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else str(step))
    return out


def _children(node: Any) -> list[tuple[Any, Any]]:
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, list):
        return list(enumerate(node))
    return []


def check_tree(tree: CommentedMap, filename: str) -> None:
    """Refuse aliases that expand past ``MAX_ALIAS_NODES``, nesting past ``MAX_DEPTH`` and
    lone surrogates; join escaped surrogate pairs. Linear in the distinct nodes."""
    # Pass 1: the expanded size and height of every distinct collection, children first.
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(tree, False)]
    on_path: set[int] = set()
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            total, tallest = 1, 0
            for _, child in _children(node):
                if isinstance(child, dict | list):
                    total += size[id(child)]
                    tallest = max(tallest, height[id(child)])
                else:
                    total += 1
            size[key] = total
            height[key] = tallest + 1
            continue
        if key in size or key in on_path:
            continue  # already measured, or an alias inside itself (ruamel gives None there)
        on_path.add(key)
        stack.append((node, True))
        for _, child in reversed(_children(node)):
            if isinstance(child, dict | list) and id(child) not in size:
                stack.append((child, False))
    # Pass 2: in document order; the first visit of a collection is its anchor, every
    # later one an alias, which adds that whole subtree again.
    extra = 0
    seen: set[int] = {id(tree)}
    walk: list[tuple[Any, tuple[Any, ...], int]] = [(tree, (), 1)]
    while walk:
        node, path, depth = walk.pop()
        items = _children(node)
        for step, child in reversed(items):
            where = (*path, step)
            if isinstance(step, str) and _surrogates(step) is None:
                line, col = _position(node, step)
                raise _lone_surrogate(filename, line, col, where)
            if isinstance(child, str):
                fixed = _surrogates(child)
                if fixed is None:
                    line, col = _position(node, step)
                    raise _lone_surrogate(filename, line, col, where)
                if fixed is not child:
                    node[step] = fixed
                continue
            if not isinstance(child, dict | list):
                continue
            if depth + height[id(child)] > MAX_DEPTH:
                line, col = _position(node, step)
                raise _deep(filename, line, col)
            if id(child) in seen:
                extra += size[id(child)]
                if extra > MAX_ALIAS_NODES:
                    line, col = _position(node, step)
                    raise _refuse(
                        filename,
                        line,
                        col,
                        _dotted(where),
                        f"YAML aliases expand the manifest past {MAX_ALIAS_NODES:,} more "
                        "values (an alias bomb, or aliases of aliases); write the repeated "
                        "parts out, or alias fewer of them",
                    )
                continue
            seen.add(id(child))
            walk.append((child, where, depth + 1))


def _lone_surrogate(filename: str, line: int, column: int, path: tuple[Any, ...]) -> ManifestError:
    return _refuse(
        filename,
        line,
        column,
        _dotted(path),
        "contains an escaped UTF-16 surrogate (e.g. \\ud835) that is not half of a pair, so "
        "it is no character; write the character itself, or escape it as \\U0001D427",
    )
