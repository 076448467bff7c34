"""Replica URLs: the one grammar of where a replica lives.

Owns: reading a ``vault.replicas`` entry: a local directory (a path, or ``file://`` and
a path, optionally ``?mode=private|group`` to give that replica its own access mode) or
``<scheme>://<location>`` for a backend, and saying whether Bastion can open it.
``open_store`` opens what this parses; the manifest checks ``vault.replicas`` with it
when it is loaded, and the map draws replicas from it, so no caller guesses with
``"://" in``.

Must never: touch the filesystem or the network (the manifest calls it while loading, a
replica's disk may be unmounted then), or accept a scheme no backend here opens.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from bastion.errors import UsageError
from bastion.store._access import ACCESS_MODES

__all__ = ["SCHEMES", "ReplicaUrl", "parse_replica_url"]

#: Schemes a backend in ``bastion.store`` opens, and what each is.
SCHEMES: dict[str, str] = {"file": "a local directory (another disk, a NAS mount)"}

# RFC 3986 scheme, then "://": anything else is a path (a Windows-style "c:\x" is not ours).
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
# Schemes users write that have no backend yet, with what to do instead.
_LATER = {
    "s3": "S3 replicas are not supported yet",
    "gs": "Google Cloud Storage replicas are not supported",
    "az": "Azure Blob replicas are not supported",
}
_LOCAL_FIX = "use a local directory such as .bastion/vault/b, or file:///mnt/backup/vault"


@dataclass(frozen=True, slots=True)
class ReplicaUrl:
    """One replica's address, as parsed (no I/O was done to make it).

    ``scheme`` is ``file`` for a plain path. ``location`` is the path for ``file``, and
    what follows ``<scheme>://`` otherwise (``bucket/prefix`` for ``s3``). ``mode``: the
    access mode a ``file://...?mode=`` URL asks for (None: the vault's ``vault.mode``).
    """

    url: str
    scheme: str
    location: str
    mode: str | None = None

    @property
    def is_local(self) -> bool:
        """A directory on this machine's filesystem."""
        return self.scheme == "file"

    @property
    def problem(self) -> str | None:
        """Why Bastion cannot open this replica, with the fix; None if it can."""
        if self.mode is not None and self.mode not in ACCESS_MODES:
            return f"mode {self.mode!r} is not one of {', '.join(ACCESS_MODES)}"
        if self.scheme in SCHEMES:
            return None
        why = _LATER.get(self.scheme.lower())
        if why is None:
            hint = difflib.get_close_matches(self.scheme.lower(), list(SCHEMES), n=1, cutoff=0.5)
            why = f"no backend opens {self.scheme}:// replicas" + (
                f" (did you mean {hint[0]}://?)" if hint else ""
            )
        return f"{why}; {_LOCAL_FIX}"


def parse_replica_url(url: str) -> ReplicaUrl:
    """Read one replica entry. ``UsageError`` if it is not a path or a URL at all.

    A scheme without a backend parses (the map still draws an ``s3://`` replica); its
    ``problem`` says why it cannot be opened, and ``open_store`` refuses it.
    """
    if not isinstance(url, str) or not url.strip():
        raise UsageError(f"replica {url!r} is empty; {_LOCAL_FIX}")
    if "\x00" in url:
        raise UsageError(f"replica {url!r} contains a NUL byte")
    match = _URL.match(url)
    if match is None:
        if "://" in url:
            raise UsageError(
                f"replica {url!r} is neither a path nor a URL (a URL starts with a scheme "
                f"such as file://); {_LOCAL_FIX}"
            )
        return ReplicaUrl(url, "file", url)
    scheme, location = match.group(1), match.group(2)
    if not location:
        raise UsageError(f"replica {url!r} names no location after {scheme}://")
    mode = None
    if scheme.lower() == "file" and "?" in location:
        location, _, query = location.partition("?")
        key, sep, mode = query.partition("=")
        if key != "mode" or not sep:
            raise UsageError(
                f"replica {url!r}: {query!r} is not an option of a file:// replica (the "
                f"one option is ?mode=, one of {', '.join(ACCESS_MODES)})"
            )
    return ReplicaUrl(url, scheme.lower(), location, mode)
