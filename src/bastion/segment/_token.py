"""Capability tokens: what a job or a replica holds instead of the vault's signing key.

Owns: the token format (``bst1.``), minting (``mint``, with the token key), offline
attenuation (``attenuate``, with nothing but the token), parsing and verifying
(``verify``: signatures, narrowing, expiry, revocation), and the token key file.

Must never: accept a block that widens the one before it, a token whose last proof key
does not match, a token past its expiry, or one the revocation list names; echo a token
in an error, an event or a log (a token is a bearer secret).

Format (version 1), everything URL-safe base64 without padding::

    token  = "bst1." b64(json {"b": [block, ...], "p": b64(proof seed)})
    block  = {"c": b64(claims JSON, canonical: sorted keys, no spaces), "s": b64(sig)}
    claims = {"id": 16 random bytes hex, "seg": segment, "pre": [name prefixes],
              "ops": ["read" | "append"], "exp": whole unix seconds, "iat": unix seconds,
              "nk": b64(Ed25519 public key of the next block's signer)}

Block 0 is signed by the token key (``<state_dir>/keys/token.key``, the vault server's);
block *i* by the private key whose public half is block *i-1*'s ``nk``. The token ends
with that last private key (the *proof*): whoever holds a token can add a block (signed
with the proof, carrying a fresh ``nk``, and the new proof replaces the old), but cannot
take one off (the proof of the shorter chain is gone) nor change one (its signature
breaks). Each block may only narrow: the same segment, a subset of the operations, each
prefix under one of the previous block's, an expiry no later. This is the construction
of biscuit's attenuation (each block signed by the previous block's ephemeral key), in
60 lines with ``cryptography`` and no Datalog: biscuit-python (0.4, pre-1.0) would add a
native dependency and a policy language for four claims that a subset check covers.

Revocation: the server's ``RevocationList`` names block ids (revoking a token revokes
every token attenuated from it: they share block 0) and, per segment, a time before
which every token issued is refused (quarantine).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from bastion.errors import UsageError

__all__ = [
    "MAX_TTL_S",
    "OPS",
    "PREFIX",
    "Scope",
    "TokenError",
    "TokenKey",
    "TokenRefused",
    "attenuate",
    "inspect_token",
    "mint",
    "verify",
]

PREFIX = "bst1."
#: what a token may allow: reading snapshots, and appending new versions (never delete,
#: never overwrite: those need the vault's admin key)
OPS = ("read", "append")
#: the longest a token may live (and the default): an hour, so a stolen one expires soon
MAX_TTL_S = 3600.0
_MAX_TOKEN_CHARS = 8192
_MAX_BLOCKS = 8
_MAX_PREFIXES = 32


class TokenError(UsageError):
    """A token that cannot be parsed or fails verification (HTTP 401): malformed, bad
    signature, widened, expired, revoked. The message never contains the token."""


class TokenRefused(UsageError):
    """A valid token that does not allow this request (HTTP 403): another segment, a
    name outside its prefixes, an operation it does not carry."""


def _b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64d(text: Any, what: str) -> bytes:
    if not isinstance(text, str) or len(text) > _MAX_TOKEN_CHARS:
        raise TokenError(f"malformed token: {what} is not base64 text")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise TokenError(f"malformed token: {what} is not URL-safe base64") from None


def _canonical(claims: dict[str, Any]) -> bytes:
    return json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _raw_private(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


@dataclass(frozen=True, slots=True)
class Scope:
    """What a verified token allows (its last block's claims, each block having narrowed).

    Attributes:
        segment: the one segment it acts in.
        prefixes: artifact-name prefixes it may touch (a name must start with one).
        ops: ``read`` and/or ``append``.
        expires: unix seconds after which it is refused.
        issued: unix seconds block 0 was minted (quarantine refuses tokens issued before).
        ids: every block's id, oldest first (the revocation list may name any of them).
    """

    segment: str
    prefixes: tuple[str, ...]
    ops: tuple[str, ...]
    expires: float
    issued: float
    ids: tuple[str, ...]

    def allows(self, op: str, name: str) -> bool:
        return op in self.ops and any(name.startswith(p) for p in self.prefixes)

    def require(self, op: str, segment: str, name: str) -> None:
        """``TokenRefused`` unless this scope allows ``op`` on ``segment``'s ``name``."""
        if segment != self.segment:
            raise TokenRefused(
                f"this token is for segment {self.segment!r}, not {segment!r} "
                f"(mint one with `bastion segment token {segment}`)"
            )
        if op not in self.ops:
            raise TokenRefused(
                f"this token allows {', '.join(self.ops)}, not {op} (mint one with `--ops {op}`)"
            )
        if not any(name.startswith(p) for p in self.prefixes):
            raise TokenRefused(
                f"{name!r} is outside this token's prefixes ({', '.join(self.prefixes)})"
            )

    def to_json(self) -> dict[str, Any]:
        return {
            "segment": self.segment,
            "prefixes": list(self.prefixes),
            "ops": list(self.ops),
            "expires": self.expires,
            "issued": self.issued,
            "ids": list(self.ids),
        }


class TokenKey:
    """The Ed25519 key that signs block 0 of every token (the vault server's, never a
    job's). ``TokenKey.load_or_make(path)`` writes one (0600) the first time."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        self.public = key.public_key()
        self.key_id = _raw_public(self.public).hex()[:16]

    @classmethod
    def generate(cls) -> TokenKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_make(cls, path: Path) -> TokenKey:
        from bastion.store import write_file

        if not path.exists():
            key = Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_file(path, pem, mode=0o600, dir_mode=0o700)
            return cls(key)
        try:
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (ValueError, TypeError):
            raise UsageError(f"token key {path} is not a PEM Ed25519 private key") from None
        if not isinstance(loaded, Ed25519PrivateKey):
            raise UsageError(f"token key {path} is not an Ed25519 key")
        return cls(loaded)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


def _check_claims(
    segment: str, prefixes: Sequence[str], ops: Sequence[str], ttl_s: float
) -> tuple[list[str], list[str]]:
    if not segment:
        raise UsageError("a token needs a segment (bastion segment token SEGMENT)")
    bad = [o for o in ops if o not in OPS]
    if bad or not ops:
        raise UsageError(
            f"token ops {', '.join(bad) or '(none)'}: a token may carry {' and '.join(OPS)} "
            "only (deleting needs the vault admin key)"
        )
    if not prefixes or len(prefixes) > _MAX_PREFIXES:
        raise UsageError(f"a token needs 1 to {_MAX_PREFIXES} name prefixes (--prefix model/x/)")
    for prefix in prefixes:
        # a prefix is the start of a name: nothing a name may not hold
        if (
            not isinstance(prefix, str)
            or prefix.startswith("/")
            or any(bad in prefix for bad in ("..", "\\", "\x00", "//"))
        ):
            raise UsageError(f"token prefix {prefix!r}: not the start of an artifact name")
    if not 0 < ttl_s <= MAX_TTL_S:
        raise UsageError(f"--ttl {ttl_s:g}: a token lives more than 0 and at most {MAX_TTL_S:g} s")
    return sorted(set(prefixes)), [o for o in OPS if o in ops]


def mint(
    key: TokenKey,
    segment: str,
    *,
    prefixes: Sequence[str],
    ops: Sequence[str] = OPS,
    ttl_s: float = MAX_TTL_S,
    clock: Callable[[], float] = time.time,
) -> str:
    """A new token (block 0 signed by ``key``) for ``ops`` on names under ``prefixes`` in
    ``segment``, expiring in ``ttl_s`` (at most an hour)."""
    pres, opl = _check_claims(segment, prefixes, ops, ttl_s)
    now = clock()
    proof = Ed25519PrivateKey.generate()
    claims = {
        "id": secrets.token_hex(16),
        "seg": segment,
        "pre": pres,
        "ops": opl,
        "exp": int(now + ttl_s),
        "iat": now,
        "nk": _b64e(_raw_public(proof.public_key())),
    }
    body = _canonical(claims)
    return _encode([(body, key.sign(body))], proof)


def _encode(blocks: Sequence[tuple[bytes, bytes]], proof: Ed25519PrivateKey) -> str:
    doc = {
        "b": [{"c": _b64e(c), "s": _b64e(s)} for c, s in blocks],
        "p": _b64e(_raw_private(proof)),
    }
    return PREFIX + _b64e(_canonical(doc))


def _decode(token: Any) -> tuple[list[tuple[bytes, bytes, dict[str, Any]]], bytes]:
    """The blocks (claims bytes, signature, claims) and the proof seed, shape-checked."""
    if not isinstance(token, str) or not token.startswith(PREFIX):
        raise TokenError(f"malformed token: a Bastion token starts with {PREFIX!r}")
    if len(token) > _MAX_TOKEN_CHARS:
        raise TokenError(f"malformed token: longer than {_MAX_TOKEN_CHARS} characters")
    raw = _b64d(token[len(PREFIX) :], "the token")
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise TokenError("malformed token: its body is not JSON") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("b"), list):
        raise TokenError("malformed token: no list of blocks")
    if not 1 <= len(doc["b"]) <= _MAX_BLOCKS:
        raise TokenError(f"malformed token: 1 to {_MAX_BLOCKS} blocks, not {len(doc['b'])}")
    blocks = []
    for i, block in enumerate(doc["b"]):
        if not isinstance(block, dict):
            raise TokenError(f"malformed token: block {i} is not an object")
        body = _b64d(block.get("c"), f"block {i}'s claims")
        sig = _b64d(block.get("s"), f"block {i}'s signature")
        try:
            claims = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise TokenError(f"malformed token: block {i}'s claims are not JSON") from None
        _shape(claims, i)
        blocks.append((body, sig, claims))
    proof = _b64d(doc.get("p"), "the proof")
    if len(proof) != 32:
        raise TokenError("malformed token: the proof is not a 32-byte Ed25519 seed")
    return blocks, proof


def _shape(claims: Any, i: int) -> None:
    def bad(what: str) -> TokenError:
        return TokenError(f"malformed token: block {i}: {what}")

    if not isinstance(claims, dict):
        raise bad("claims are not an object")
    if set(claims) != {"id", "seg", "pre", "ops", "exp", "iat", "nk"}:
        raise bad("claims must be exactly id, seg, pre, ops, exp, iat, nk")
    if not isinstance(claims["id"], str) or not claims["id"]:
        raise bad("id is not text")
    if not isinstance(claims["seg"], str) or not claims["seg"]:
        raise bad("seg is not text")
    pre = claims["pre"]
    if not isinstance(pre, list) or not pre or len(pre) > _MAX_PREFIXES:
        raise bad(f"pre is not a list of 1 to {_MAX_PREFIXES} prefixes")
    if not all(isinstance(p, str) and p for p in pre):
        raise bad("pre holds something other than text")
    ops = claims["ops"]
    if not isinstance(ops, list) or not ops or not all(o in OPS for o in ops):
        raise bad(f"ops must be a list of {', '.join(OPS)}")
    if type(claims["exp"]) is not int:
        raise bad("exp is not whole seconds")
    if type(claims["iat"]) not in (int, float) or claims["iat"] != claims["iat"]:
        raise bad("iat is not a time")
    if not isinstance(claims["nk"], str):
        raise bad("nk is not a key")


def _public(raw_b64: str, i: int) -> Ed25519PublicKey:
    raw = _b64d(raw_b64, f"block {i}'s next key")
    if len(raw) != 32:
        raise TokenError(f"malformed token: block {i}'s next key is not 32 bytes")
    return Ed25519PublicKey.from_public_bytes(raw)


def _narrows(prev: dict[str, Any], cur: dict[str, Any], i: int) -> None:
    if cur["seg"] != prev["seg"]:
        raise TokenError(f"forged token: block {i} moves it to another segment")
    if not set(cur["ops"]) <= set(prev["ops"]):
        raise TokenError(f"forged token: block {i} adds operations (only narrowing is allowed)")
    for p in cur["pre"]:
        if not any(p.startswith(q) for q in prev["pre"]):
            raise TokenError(f"forged token: block {i} widens the name prefixes")
    if cur["exp"] > prev["exp"]:
        raise TokenError(f"forged token: block {i} extends the expiry")


def _chain(token: Any, root: Ed25519PublicKey) -> tuple[list[dict[str, Any]], Ed25519PrivateKey]:
    blocks, seed = _decode(token)
    signer = root
    prev: dict[str, Any] | None = None
    for i, (body, sig, claims) in enumerate(blocks):
        try:
            signer.verify(sig, body)
        except InvalidSignature:
            who = "the token key" if i == 0 else f"block {i - 1}'s next key"
            raise TokenError(
                f"forged token: block {i} is not signed by {who} (a token from another "
                "server, or one that was edited)"
            ) from None
        if prev is not None:
            _narrows(prev, claims, i)
        signer = _public(claims["nk"], i)
        prev = claims
    proof = Ed25519PrivateKey.from_private_bytes(seed)
    if _raw_public(proof.public_key()) != _raw_public(signer):
        raise TokenError("forged token: its proof does not match its last block")
    return [c for _, _, c in blocks], proof


def verify(
    token: Any,
    root: Ed25519PublicKey,
    *,
    now: float | None = None,
    revoked: Callable[[Scope], str | None] | None = None,
) -> Scope:
    """The scope ``token`` grants, or ``TokenError``: malformed, not signed by ``root``,
    widened, expired (by ``now``, the server's clock), or revoked (``revoked(scope)``
    returns why, or None)."""
    claims, _ = _chain(token, root)
    last = claims[-1]
    at = time.time() if now is None else now
    expires = min(c["exp"] for c in claims)
    if at >= expires:
        raise TokenError(
            f"expired token: it expired {at - expires:.0f} s ago (mint a new one with "
            "`bastion segment token`)"
        )
    scope = Scope(
        segment=last["seg"],
        prefixes=tuple(last["pre"]),
        ops=tuple(o for o in OPS if o in last["ops"]),
        expires=float(expires),
        issued=float(claims[0]["iat"]),
        ids=tuple(c["id"] for c in claims),
    )
    if revoked is not None and (why := revoked(scope)) is not None:
        raise TokenError(f"revoked token: {why}")
    return scope


def attenuate(
    token: str,
    *,
    prefixes: Iterable[str] | None = None,
    ops: Iterable[str] | None = None,
    ttl_s: float | None = None,
    clock: Callable[[], float] = time.time,
) -> str:
    """``token`` narrowed offline (no key, no server): fewer ``ops``, prefixes under its
    own, a sooner expiry. Widening is a ``UsageError`` here, and a forged token to the
    server."""
    blocks, seed = _decode(token)
    last = blocks[-1][2]
    new_pre = sorted(set(prefixes)) if prefixes is not None else list(last["pre"])
    new_ops = [o for o in OPS if o in set(ops)] if ops is not None else list(last["ops"])
    exp = last["exp"] if ttl_s is None else min(last["exp"], int(clock() + ttl_s))
    claims = {
        "id": secrets.token_hex(16),
        "seg": last["seg"],
        "pre": new_pre,
        "ops": new_ops,
        "exp": exp,
        "iat": clock(),
        "nk": "",
    }
    try:
        _shape({**claims, "nk": "x"}, len(blocks))
        _narrows(last, claims, len(blocks))
    except TokenError as exc:
        raise UsageError(f"cannot attenuate: {str(exc).split(': ', 1)[-1]}") from None
    proof = Ed25519PrivateKey.from_private_bytes(seed)
    fresh = Ed25519PrivateKey.generate()
    claims["nk"] = _b64e(_raw_public(fresh.public_key()))
    body = _canonical(claims)
    chain = [(b, s) for b, s, _ in blocks] + [(body, proof.sign(body))]
    return _encode(chain, fresh)


def inspect_token(token: str) -> list[dict[str, Any]]:
    """Each block's claims, unverified (for ``bastion segment token --inspect``): what a
    token says, not what a server would grant."""
    blocks, _ = _decode(token)
    return [{k: v for k, v in c.items() if k != "nk"} for _, _, c in blocks]
