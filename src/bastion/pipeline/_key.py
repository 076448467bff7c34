"""A stage's cache key: canonical bytes of everything that decides its output.

Owns: the key (BLAKE3 of canonical JSON) over the stage's input snapshot ids, its code
(the bytes of every file its command runs, or of the files it names under ``code``), its
command, config, environment variables and environment lock (a lock file, or the
interpreter and every installed distribution with its version), and the refusal to
build one from anything it cannot hash.

Must never: pickle, fall back to a partial key, or guess. Anything it cannot hash (a
non-finite or non-JSON config value, a code path that is missing, unreadable or not a
regular file, an input with no snapshot id) makes ``Unhashable``, and the stage runs
uncached with the reason in its events and status (prefect#15861 returned wrong cached
results from a key that had silently lost a part).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import stat
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

__all__ = ["CacheKey", "Unhashable", "canonical", "code_files", "environment_lock", "stage_key"]

_FORMAT = "bastion.pipeline.key/1"
_CHUNK = 1 << 20


class Unhashable(Exception):
    """A part of the key cannot be hashed; the message says which and why."""


@dataclass(frozen=True, slots=True)
class CacheKey:
    """``digest``: the key (hex); ``label``: the vault label naming the output made
    under it."""

    digest: str

    @property
    def label(self) -> str:
        return "k" + self.digest[:48]


def _plain(value: Any, where: str) -> Any:
    # Only JSON's own types, finite numbers, text keys: json.dumps would write NaN as a
    # token some readers take for the string "NaN", and a tuple like a list.
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unhashable(f"{where} is {value!r}, which has no canonical form")
        return value
    if isinstance(value, list):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise Unhashable(f"{where} has a key {k!r} that is not text")
            out[k] = _plain(v, f"{where}.{k}")
        return out
    raise Unhashable(f"{where} is a {type(value).__name__}, not a JSON value")


def canonical(value: Any, *, where: str = "value") -> bytes:
    """Sorted keys, no spaces, UTF-8, finite numbers only; ``Unhashable`` otherwise."""
    return json.dumps(
        _plain(value, where), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _hash_file(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError as exc:
        raise Unhashable(f"code {path}: cannot read it ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise Unhashable(f"code {path}: not a regular file")
        h = blake3.blake3()
        while block := os.read(fd, _CHUNK):
            h.update(block)
        return h.hexdigest()
    finally:
        os.close(fd)


def _hash_tree(path: Path) -> dict[str, str]:
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise Unhashable(f"code {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        return _hash_tree(path.resolve(strict=False))
    if stat.S_ISDIR(info.st_mode):
        out: dict[str, str] = {}
        try:
            entries = sorted(p.name for p in path.iterdir())
        except OSError as exc:
            raise Unhashable(f"code {path}: cannot list it ({exc.strerror})") from None
        for entry in entries:
            if entry == "__pycache__":
                continue  # written by the interpreter, not code
            for sub, digest in _hash_tree(path / entry).items():
                out[f"{entry}/{sub}" if sub else entry] = digest
        return out
    return {"": _hash_file(path)}


def code_files(command: Sequence[str], workdir: Path) -> list[Path]:
    """The files a command runs, when the stage does not list its ``code``: the program
    (found on ``PATH`` as the stage would find it) and every argument naming a file
    under ``workdir``."""
    found: list[Path] = []
    if command:
        program = shutil.which(command[0], path=os.environ.get("PATH"))
        if program is None and (workdir / command[0]).is_file():
            program = str(workdir / command[0])
        if program is None:
            raise Unhashable(f"command {command[0]!r}: not found on PATH")
        found.append(Path(program).resolve())
    for arg in command[1:]:
        if not arg or arg.startswith("-") or "\x00" in arg:
            continue
        candidate = workdir / arg
        try:
            if candidate.is_file():
                found.append(candidate)
        except OSError:
            continue
    return found


def code_digest(paths: Sequence[Path], base: Path) -> dict[str, str]:
    """Path (relative to ``base`` when under it) -> BLAKE3, for every file under
    ``paths``."""
    out: dict[str, str] = {}
    for path in paths:
        try:
            shown = str(path.relative_to(base))
        except ValueError:
            shown = str(path)
        for sub, digest in _hash_tree(path).items():
            out[f"{shown}/{sub}" if sub else shown] = digest
    return out


_ENV_CACHE: dict[str, Any] = {}
_DIST_SUFFIXES = (".dist-info", ".egg-info")


def _distributions() -> list[str]:
    """``name==version`` of every installed distribution, as ``pip freeze`` lists them,
    from the ``<name>-<version>.dist-info`` entries on ``sys.path`` (their names are
    the standard's normalised name and version; reading each METADATA file through
    importlib.metadata costs ~10 ms a distribution). An entry whose name does not
    parse is read through importlib.metadata instead."""
    found: set[str] = set()
    for entry in sys.path:
        try:
            names = [p.name for p in Path(entry or ".").iterdir()]
        except OSError:
            continue
        for name in names:
            if not name.endswith(_DIST_SUFFIXES):
                continue
            stem = name.rsplit(".", 1)[0]
            dist, sep, version = stem.partition("-")
            if not sep or not version or "-" in version:
                meta = importlib.metadata.Distribution.at(Path(entry or ".", name))
                dist, version = meta.metadata["Name"] or stem, meta.version
            found.add(f"{re.sub(r'[-_.]+', '-', dist).lower()}=={version}")
    return sorted(found)


def environment_lock(lock: Path | None = None) -> dict[str, Any]:
    """The stage's environment: a lock file's BLAKE3, or the interpreter (version,
    implementation, platform) and every installed distribution as ``name==version``
    (once per process)."""
    if lock is not None:
        return {"lock": str(lock), "blake3": _hash_file(lock)}
    if "python" not in _ENV_CACHE:
        _ENV_CACHE["python"] = {
            "python": sys.version,
            "implementation": sys.implementation.name,
            "platform": platform.platform(),
            "distributions": _distributions(),
        }
    return dict(_ENV_CACHE["python"])


def stage_key(
    *,
    uses: str,
    command: Sequence[str] | None,
    inputs: Mapping[str, str | None],
    code: Mapping[str, str],
    config: Mapping[str, Any],
    env: Mapping[str, str],
    environment: Mapping[str, Any],
    output: str,
) -> CacheKey:
    """The key of one stage run; ``Unhashable`` when any part has no canonical form.
    ``inputs``: input name -> snapshot id (None: an optional input that is absent)."""
    doc = {
        "format": _FORMAT,
        "uses": uses,
        "command": list(command) if command is not None else None,
        "inputs": dict(inputs),
        "code": dict(code),
        "config": dict(config),
        "env": dict(env),
        "environment": dict(environment),
        "output": output,
    }
    return CacheKey(blake3.blake3(canonical(doc, where="stage")).hexdigest())
