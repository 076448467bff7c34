"""Segments that contain a breach: capability tokens, and quarantine of one segment while
the others keep serving.

A segment (``segments:`` in the manifest) has its own vault namespace, tokens, protected
directories, jobs and backends. Jobs and replicas hold a token (``mint_token``;
``attenuate`` narrows one offline) for the vault server (``bastion vault serve``,
``bastion.vault.VaultServer``) instead of the vault's signing key. ``quarantine``
revokes a segment's tokens, takes its backends out of every running gateway, freezes
its protected directories and stops its jobs; ``release`` undoes it after a check.
"""

from __future__ import annotations

from bastion.segment._jobtoken import JobTokens, job_token_path
from bastion.segment._segments import (
    QuarantineReport,
    ReleaseReport,
    mint_token,
    namespace,
    namespaces,
    quarantine,
    release,
    revoke_token,
    token_key_path,
)
from bastion.segment._state import RevocationList, SegmentState
from bastion.segment._token import (
    MAX_TTL_S,
    OPS,
    Scope,
    TokenError,
    TokenKey,
    TokenRefused,
    attenuate,
    inspect_token,
    mint,
    verify,
)

__all__ = [
    "MAX_TTL_S",
    "OPS",
    "JobTokens",
    "QuarantineReport",
    "ReleaseReport",
    "RevocationList",
    "Scope",
    "SegmentState",
    "TokenError",
    "TokenKey",
    "TokenRefused",
    "attenuate",
    "inspect_token",
    "job_token_path",
    "mint",
    "mint_token",
    "namespace",
    "namespaces",
    "quarantine",
    "release",
    "revoke_token",
    "token_key_path",
    "verify",
]
