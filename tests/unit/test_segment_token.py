"""Capability tokens: minting, offline attenuation, verification, and fuzzed parsing
(hypothesis): whatever the bytes, a token is a scope or a ``TokenError``, never a crash,
and over HTTP a 401, never a 500."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bastion.errors import UsageError
from bastion.segment import (
    MAX_TTL_S,
    SegmentState,
    TokenError,
    TokenKey,
    TokenRefused,
    attenuate,
    inspect_token,
    mint,
    verify,
)

KEY = TokenKey.generate()
NOW = 1_800_000_000.0


def clock() -> float:
    return NOW


def token(**kw: Any) -> str:
    kw.setdefault("prefixes", ["model/staging/"])
    return mint(KEY, "staging", clock=clock, **kw)


def test_a_token_grants_what_it_names_and_no_more() -> None:
    scope = verify(token(), KEY.public, now=NOW)
    assert scope.segment == "staging"
    assert scope.ops == ("read", "append")
    assert scope.prefixes == ("model/staging/",)
    assert scope.expires == NOW + MAX_TTL_S  # the default is the longest: an hour
    scope.require("append", "staging", "model/staging/m")
    with pytest.raises(TokenRefused, match="not 'prod'"):
        scope.require("read", "prod", "model/staging/m")
    with pytest.raises(TokenRefused, match="outside this token's prefixes"):
        scope.require("read", "staging", "model/prod/m")


def test_ttl_is_at_most_an_hour_and_ops_are_read_and_append() -> None:
    with pytest.raises(UsageError, match="at most 3600"):
        token(ttl_s=3601)
    with pytest.raises(UsageError, match="deleting needs the vault admin key"):
        token(ops=["delete"])
    with pytest.raises(UsageError, match="not the start of an artifact name"):
        token(prefixes=["model/../prod/"])


def test_attenuation_narrows_offline_and_chains() -> None:
    t = token()
    one = attenuate(t, ops=["read"], clock=clock)
    two = attenuate(one, prefixes=["model/staging/a/"], ttl_s=60, clock=clock)
    scope = verify(two, KEY.public, now=NOW)
    assert scope.ops == ("read",)
    assert scope.prefixes == ("model/staging/a/",)
    assert scope.expires == NOW + 60
    assert len(scope.ids) == 3
    assert len(inspect_token(two)) == 3
    with pytest.raises(UsageError, match="widens the name prefixes"):
        attenuate(two, prefixes=["model/staging/"])
    with pytest.raises(UsageError, match="adds operations"):
        attenuate(one, ops=["read", "append"])
    with pytest.raises(TokenError, match="expired"):
        verify(two, KEY.public, now=NOW + 61)


def test_revocation_by_id_and_by_quarantine(tmp_path: Path) -> None:
    from bastion.segment import RevocationList

    state = SegmentState(tmp_path)
    revoked = RevocationList(state)
    t = token()
    child = attenuate(t, ops=["read"], clock=clock)
    assert verify(child, KEY.public, now=NOW, revoked=revoked.why)
    state.revoke(inspect_token(t)[0]["id"])
    with pytest.raises(TokenError, match="revoked"):
        verify(child, KEY.public, now=NOW, revoked=revoked.why)
    with state.update() as data:
        data["segments"]["staging"] = {"quarantined": False, "revoked_before": NOW + 1}
    fresh = mint(KEY, "staging", prefixes=["model/staging/"], clock=lambda: NOW + 2)
    assert verify(fresh, KEY.public, now=NOW + 2, revoked=revoked.why)
    older = token()
    with pytest.raises(TokenError, match="issued before"):
        verify(older, KEY.public, now=NOW + 2, revoked=revoked.why)


def _same_or_refused(text: str) -> None:
    try:
        scope = verify(text, KEY.public, now=NOW)
    except TokenError as exc:
        assert text not in str(exc) or len(text) < 8  # an error never echoes the token
        return
    assert scope == verify(GOOD, KEY.public, now=NOW)  # only a no-op edit verifies


GOOD = token()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_any_text_is_refused_cleanly(text: str) -> None:
    with pytest.raises(TokenError):
        verify(text, KEY.public, now=NOW)
    with pytest.raises(TokenError):
        verify("bst1." + text, KEY.public, now=NOW)


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=5, max_value=len(GOOD) - 1), st.sampled_from("AZaz09-_=.!"))
def test_fuzz_one_character_changed(at: int, char: str) -> None:
    _same_or_refused(GOOD[:at] + char + GOOD[at + 1 :])


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _enc(doc: Any) -> str:
    raw = json.dumps(doc).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@settings(max_examples=300, deadline=None)
@given(_json, st.lists(_json, max_size=3))
def test_fuzz_structured_documents_are_refused_cleanly(doc: Any, claims: list[Any]) -> None:
    with pytest.raises(TokenError):
        verify("bst1." + _enc(doc), KEY.public, now=NOW)
    blocks = [{"c": _enc(c), "s": _enc("sig")} for c in claims]
    with pytest.raises(TokenError):
        verify("bst1." + _enc({"b": blocks, "p": _enc("x")}), KEY.public, now=NOW)


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(header=st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=200))
def test_fuzz_authorization_headers_over_http_are_401(header: str, vault_server: str) -> None:
    u = urllib.parse.urlsplit(vault_server)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        conn.request(
            "GET", "/v1/segments/staging/names", headers={"Authorization": header.strip() or "x"}
        )
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 401, (resp.status, body)
    assert body["error"]


@pytest.fixture(scope="module")
def vault_server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from bastion.vault import Vault, VaultServer, make_key
    from tests.helpers import served

    root = tmp_path_factory.mktemp("vault-server")
    make_key(root / "signing.key")
    vault = Vault([root / "a"], key_path=root / "signing.key", state_dir=root / "state")
    server = VaultServer(
        vault,
        token_key=KEY,
        state=SegmentState(root / "state"),
        namespaces={"staging": ("model/staging/",)},
    )
    with served(server.app) as url:
        yield url
