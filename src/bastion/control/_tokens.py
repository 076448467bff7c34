"""API bearer tokens: made once, shown once, stored only as a hash.

Owns: ``make_token`` (32 random bytes, ``bst_`` + URL-safe base64; its SHA-256 goes into
``<state_dir>/tokens.json``, 0600) and ``Tokens`` (checks a presented token in constant
time against every stored hash). A plain SHA-256 is enough: a token has 256 bits of
entropy, so there is nothing for a slow password hash to protect.

Must never: store or log a token itself, or tell apart "no such token" from "wrong token"
in what it returns to a caller.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from bastion.control._files import read_json, write_private_json
from bastion.errors import UsageError

__all__ = ["Tokens", "make_token"]

_PREFIX = "bst_"


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def make_token(path: Path, name: str) -> str:
    """A new token called ``name`` (replacing one of that name); its hash goes to ``path``.
    The token itself is returned once and kept nowhere."""
    if not name or not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise UsageError(
            f"token name {name!r}: use letters, digits, '-' and '_' (at most 64), e.g. ops"
        )
    token = _PREFIX + secrets.token_urlsafe(32)
    doc = read_json(path)
    entries = doc.get("tokens", []) if isinstance(doc, dict) else []
    entries = [e for e in entries if isinstance(e, dict) and e.get("name") != name]
    entries.append({"name": name, "sha256": _digest(token), "created": time.time()})
    write_private_json(path, {"tokens": entries})
    return token


@dataclass
class Tokens:
    """The stored token hashes, read again when the file changes."""

    path: Path
    _mtime: int = -1
    _hashes: tuple[tuple[str, str], ...] = ()

    def _load(self) -> None:
        try:
            mtime = self.path.stat().st_mtime_ns
        except OSError:
            self._mtime, self._hashes = -1, ()
            return
        if mtime == self._mtime:
            return
        doc = read_json(self.path)
        entries = doc.get("tokens", []) if isinstance(doc, dict) else []
        self._hashes = tuple(
            (str(e["name"]), str(e["sha256"]))
            for e in entries
            if isinstance(e, dict) and "name" in e and "sha256" in e
        )
        self._mtime = mtime

    def __len__(self) -> int:
        self._load()
        return len(self._hashes)

    def check(self, token: str) -> str | None:
        """The name of the token ``token`` is, or None. Every stored hash is compared
        (in constant time), so timing says nothing about which came close."""
        self._load()
        presented = _digest(token)
        found = None
        for name, digest in self._hashes:
            if hmac.compare_digest(presented, digest):
                found = name
        return found
