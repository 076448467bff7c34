"""Replica URLs: the one grammar of where a replica lives.

Owns: reading a ``vault.replicas`` entry: a local directory (a path, or ``file://`` and
a path, optionally ``?mode=private|group`` to give that replica its own access mode), an
S3 bucket (``s3://bucket/prefix``, optionally with ``?endpoint=...&region=...`` and the
other options in ``S3_OPTIONS``), or ``<scheme>://<location>`` for a backend, and saying
whether Bastion can open it.
``open_store`` opens what this parses; the manifest checks ``vault.replicas`` with it
when it is loaded, and the map draws replicas from it, so no caller guesses with
``"://" in``.

Must never: touch the filesystem or the network (the manifest calls it while loading, a
replica's disk may be unmounted then), accept a scheme no backend here opens, or accept
a credential in a URL (S3 credentials come from the AWS credential chain only: the
environment, ``~/.aws``, a profile, an instance role), so none reaches a manifest, a
message or an event.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from bastion.errors import UsageError
from bastion.store._access import ACCESS_MODES

__all__ = ["S3_OPTIONS", "SCHEMES", "ReplicaUrl", "parse_replica_url"]

#: Schemes a backend in ``bastion.store`` opens, and what each is.
SCHEMES: dict[str, str] = {
    "file": "a local directory (another disk, a NAS mount)",
    "s3": "an S3 bucket and prefix (AWS, or any S3 server through ?endpoint=)",
}

#: The options of an ``s3://bucket/prefix?...`` replica, and what each is.
S3_OPTIONS: dict[str, str] = {
    "endpoint": "the S3 server's URL, http(s)://host[:port] (default: AWS_ENDPOINT_URL_S3, "
    "AWS_ENDPOINT_URL, the profile's endpoint_url, else AWS itself)",
    "region": "the bucket's region (default: AWS_REGION / the profile's, else us-east-1)",
    "profile": "a profile of ~/.aws/config to take credentials and settings from",
    "object_lock": "compliance: every value is written under S3 Object Lock in compliance "
    "mode, so nobody (root included) can delete or replace it before retain_days",
    "retain_days": "days each value stays locked with object_lock (a whole number >= 1)",
    "write_once": "conditional (default: If-None-Match: * on every put) or head (a HEAD "
    "before each put, for a server that ignores conditional writes)",
    "connect_timeout": "seconds to wait for a connection (default 3)",
    "read_timeout": "seconds to wait for an answer (default 30)",
}

# RFC 3986 scheme, then "://": anything else is a path (a Windows-style "c:\x" is not ours).
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)
# Schemes users write that have no backend yet, with what to do instead.
_LATER = {
    "gs": "Google Cloud Storage replicas are not supported",
    "az": "Azure Blob replicas are not supported",
}
_LOCAL_FIX = "use a local directory such as .bastion/vault/b, or file:///mnt/backup/vault"
# S3's bucket naming rules (3-63 of lower-case letters, digits, dots and hyphens).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@=+-]*$")
_SECRETS = ("key", "secret", "token", "password", "credential")


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
    #: ``s3``: the URL's options (``S3_OPTIONS``), in the order written.
    options: tuple[tuple[str, str], ...] = ()
    #: What is wrong with the URL's options (found while parsing; see ``problem``).
    issue: str | None = None

    @property
    def is_local(self) -> bool:
        """A directory on this machine's filesystem."""
        return self.scheme == "file"

    @property
    def bucket(self) -> str | None:
        """``s3``: the bucket (``location`` up to the first ``/``); None otherwise."""
        return self.location.split("/", 1)[0] if self.scheme == "s3" else None

    @property
    def prefix(self) -> str:
        """``s3``: the key prefix under the bucket, without slashes at either end."""
        if self.scheme != "s3":
            return ""
        return self.location.partition("/")[2].strip("/")

    def option(self, name: str) -> str | None:
        """The value of option ``name`` (the last one written), or None."""
        found = [v for k, v in self.options if k == name]
        return found[-1] if found else None

    @property
    def endpoint(self) -> str | None:
        """``s3``: the endpoint the URL names (``?endpoint=``), or None: then botocore
        takes it from the standard AWS configuration."""
        return self.option("endpoint") if self.scheme == "s3" else None

    @property
    def endpoint_host(self) -> str | None:
        """``s3``: ``host[:port]`` of the S3 service this replica lives on, for the map
        (one endpoint is one failure domain): the URL's ``?endpoint=``, else
        ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` from the environment, else AWS
        itself (``s3.<region>.amazonaws.com``). None for other schemes. (A profile's
        ``endpoint_url`` is not read here: this parser reads no file.)"""
        if self.scheme != "s3":
            return None
        for where in (
            self.endpoint,
            os.environ.get("AWS_ENDPOINT_URL_S3"),
            os.environ.get("AWS_ENDPOINT_URL"),
        ):
            if where:
                return urlsplit(where).netloc or where
        region = self.option("region") or os.environ.get("AWS_REGION") or "us-east-1"
        return f"s3.{region}.amazonaws.com"

    @property
    def problem(self) -> str | None:
        """Why Bastion cannot open this replica, with the fix; None if it can."""
        if self.mode is not None and self.mode not in ACCESS_MODES:
            return f"mode {self.mode!r} is not one of {', '.join(ACCESS_MODES)}"
        if self.issue is not None:
            return self.issue
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
    if scheme.lower() == "s3":
        location, _, query = location.partition("?")
        options, issue = _s3_options(url, query)
        return ReplicaUrl(
            url, "s3", location, options=options, issue=issue or _s3_location(location)
        )
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


def _s3_location(location: str) -> str | None:
    """What is wrong with ``bucket/prefix``, or None."""
    bucket, _, prefix = location.partition("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        return (
            f"{bucket!r} is not an S3 bucket name (3-63 lower-case letters, digits, dots "
            "and hyphens, starting and ending with a letter or digit): write "
            "s3://my-bucket/vault"
        )
    parts = prefix.strip("/").split("/") if prefix.strip("/") else []
    for part in parts:
        if not _PREFIX_PART.match(part) or part == "..":
            return (
                f"prefix {prefix!r} has {part!r}, which is not a safe key segment (letters, "
                "digits and ._@=+- only, no empty or '..' segments)"
            )
    return None


def _s3_options(url: str, query: str) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The options of an s3:// URL, and the first thing wrong with them (or None)."""
    if not query:
        return (), None
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        return (), f"{query!r} is not a query of name=value options ({', '.join(S3_OPTIONS)})"
    for name, value in pairs:
        if any(word in name.lower() for word in _SECRETS):
            return (), (
                f"option {name!r}: credentials never go in bastion.yaml; give them to the "
                "AWS credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
                "~/.aws/credentials, ?profile=NAME, an instance role)"
            )
        if name not in S3_OPTIONS:
            hint = difflib.get_close_matches(name, list(S3_OPTIONS), n=1, cutoff=0.6)
            return (), f"{name!r} is not an option of an s3:// replica" + (
                f" (did you mean {hint[0]}?)" if hint else f" (one of {', '.join(S3_OPTIONS)})"
            )
        wrong = _s3_option_problem(name, value)
        if wrong is not None:
            shown = "" if "@" in value else f"={value!r}"  # never echo a credential
            return (), f"option {name}{shown}: {wrong}"
    found = dict(pairs)
    if "retain_days" in found and "object_lock" not in found:
        return (), "retain_days needs object_lock=compliance beside it"
    if "object_lock" in found and "retain_days" not in found:
        return (), "object_lock=compliance needs retain_days=N (how long each value is locked)"
    return tuple(pairs), None


def _s3_option_problem(name: str, value: str) -> str | None:
    if name == "endpoint":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return "not an http(s):// URL such as http://127.0.0.1:8333"
        if parts.username is not None or parts.password is not None:
            return "credentials never go in the URL; use the AWS credential chain"
        if parts.path not in ("", "/") or parts.query:
            return "an endpoint is scheme://host[:port] only"
    elif name == "object_lock" and value != "compliance":
        return "the one mode is compliance (governance can be lifted, so it is not offered)"
    elif name == "write_once" and value not in ("conditional", "head"):
        return "one of conditional, head"
    elif name == "retain_days" and not (value.isdigit() and 1 <= int(value) <= 36500):
        return "a whole number of days from 1 to 36500"
    elif name in ("connect_timeout", "read_timeout"):
        try:
            seconds = float(value)
        except ValueError:
            return "a number of seconds"
        if not 0 < seconds <= 3600:
            return "seconds between 0 and 3600"
    elif name in ("region", "profile") and not re.match(r"^[A-Za-z0-9_.-]{1,64}$", value):
        return "letters, digits, '.', '_' and '-' only"
    return None
