"""Client API keys of one gateway (``services.<s>.auth``), as LiteLLM's virtual keys.

Owns: reading the accepted keys from the environment variable ``auth.keys_env`` names
(comma-separated), registering each as a secret with the event log's redactor, and
checking a request's ``Authorization: Bearer <key>`` in constant time.

Must never: log, emit or echo a key (not even a wrong one); short-circuit the comparison
(a wrong key's answer must not take longer the more of it is right).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping, Sequence

from bastion.errors import UsageError

__all__ = ["ClientKeys", "client_keys"]


def client_keys(
    service: str, keys_env: str | None, environ: Mapping[str, str] | None = None
) -> tuple[str, ...]:
    """The keys a service accepts: none without ``auth``; otherwise the comma-separated
    keys in ``$keys_env``, each registered as a secret. An unset or empty variable is a
    UsageError (fail closed: a gateway meant to need keys never starts open)."""
    if keys_env is None:
        return ()
    from bastion.events import add_secret

    env = os.environ if environ is None else environ
    raw = env.get(keys_env, "")
    add_secret(raw)
    keys = tuple(k.strip() for k in raw.split(",") if k.strip())
    if not keys:
        raise UsageError(
            f"services.{service}.auth.keys_env: ${keys_env} is "
            f"{'empty' if keys_env in env else 'not set'}; export it with the client keys "
            "(comma-separated), or remove auth to serve without keys"
        )
    for key in keys:
        add_secret(key)
    return keys


class ClientKeys:
    """Checks ``Authorization`` headers against a set of keys (empty: auth is off)."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Sequence[str] = ()) -> None:
        # Compare digests, so the comparison's time does not depend on a key's length.
        self._digests = tuple(hashlib.sha256(k.encode()).digest() for k in keys)

    @property
    def enabled(self) -> bool:
        return bool(self._digests)

    def allows(self, authorization: str | None) -> bool:
        """Does this ``Authorization`` header carry one of the keys?"""
        if not authorization:
            return False
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return False
        given = hashlib.sha256(token.strip().encode("utf-8", "surrogateescape")).digest()
        found = False
        for digest in self._digests:
            found |= hmac.compare_digest(given, digest)
        return found
