"""Attacks on the vault server with a writer token (issue 16): each is refused with a
clear 4xx naming the reason and the fix, and no restorable history is lost.

A real server (aiohttp on 127.0.0.1), a real vault on disk with two replicas, real
tokens, the real client over a real socket. The server's clock is a counter the test
moves (token expiry, snapshot times); a client has no way to set it.
"""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bastion.errors import IntegrityError, UsageError
from bastion.segment import (
    SegmentState,
    TokenError,
    TokenKey,
    TokenRefused,
    attenuate,
    mint,
)
from bastion.vault import Vault, VaultClient, VaultServer, make_key
from tests.helpers import served

DAY = 86400.0


class Clock:
    """The server's wall clock: moved by the test, never by a client."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


@dataclass
class World:
    vault: Vault
    server: VaultServer
    url: str
    key: TokenKey
    clock: Clock
    state: SegmentState
    clients: list[VaultClient]

    def token(self, segment: str = "staging", **kw: Any) -> str:
        kw.setdefault("prefixes", [f"model/{segment}/"])
        return mint(self.key, segment, clock=self.clock, **kw)

    def client(self, token: str, segment: str | None = None) -> VaultClient:
        c = VaultClient(self.url, token, segment=segment)
        self.clients.append(c)
        return c

    def history(self) -> dict[str, list[tuple[int, str, dict[str, bytes]]]]:
        """Every restorable version of every name, its files read back verified."""
        out = {}
        for name in self.vault.names():
            out[name] = [
                (s.version, s.id, {p: self.vault.read(s, p) for p in s.files})
                for s in self.vault.versions(name)
            ]
        return out


def kept(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every version restorable before is restorable after, byte for byte."""
    for name, versions in before.items():
        assert name in after, f"{name} lost"
        now = {v: (i, f) for v, i, f in after[name]}
        for version, snap_id, files in versions:
            assert now.get(version) == (snap_id, files), f"{name}@{version} lost or changed"


@pytest.fixture
def world(tmp_path: Path, rng: random.Random) -> Iterator[World]:
    make_key(tmp_path / "keys" / "signing.key")
    make_key(tmp_path / "keys" / "admin.key")
    clock = Clock()
    vault = Vault(
        [tmp_path / "a", tmp_path / "b"],
        key_path=tmp_path / "keys" / "signing.key",
        admin_key_path=tmp_path / "keys" / "admin.key",
        state_dir=tmp_path / "state",
        clock=clock,
    )
    key = TokenKey.generate()
    state = SegmentState(tmp_path / "state")
    server = VaultServer(
        vault,
        token_key=key,
        state=state,
        namespaces={"prod": ("model/prod/",), "staging": ("model/staging/", "ckpt/etl/")},
        max_upload=1 << 20,
        clock=clock,
    )
    with served(server.app) as url:
        w = World(vault, server, url, key, clock, state, [])
        # real history in both segments, written through the server by their own tokens
        for i in range(3):
            for segment in ("prod", "staging"):
                c = w.client(w.token(segment))
                c.commit(f"model/{segment}/m", {"w.bin": rng.randbytes(4096 + i)})
            clock.advance(DAY)
        try:
            yield w
        finally:
            for c in w.clients:
                c.close()


def raw(
    world: World,
    method: str,
    path: str,
    token: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, Any]:
    """One request as an attacker would send it, over a plain socket."""
    sent = {"Authorization": f"Bearer {token}", **(headers or {})}
    status, data = _bare(world, method, path, sent, body)
    return status, json.loads(data) if data[:1] == b"{" else data


def _bare(
    world: World, method: str, path: str, headers: dict[str, str], body: bytes | None = None
) -> tuple[int, bytes]:
    import http.client
    import urllib.parse

    u = urllib.parse.urlsplit(world.url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port)
    conn.request(method, path, body=body, headers=headers)
    resp = conn.getresponse()
    out = resp.status, resp.read()
    conn.close()
    return out


# ----------------------------------------------------------------- time and retention


def test_forged_timestamps_are_refused_and_never_stored(world: World) -> None:
    before = world.history()
    c = world.client(world.token())
    for key in ("created", "Created", "timestamp", "bastion.received"):
        with pytest.raises(UsageError, match=r"server records when it received") as exc:
            c.commit("model/staging/m", {"w.bin": b"x"}, meta={key: "2001-01-01T00:00:00+00:00"})
        assert "HTTP 400" in str(exc.value)
    status, body = raw(
        world,
        "POST",
        "/v1/segments/staging/snapshots?name=model/staging/m",
        world.token(),
        headers={"X-Bastion-Created": "2001-01-01"},
        body=b'{"files": [["w", 1]]}\nx',
    )
    assert status == 400
    assert "X-Bastion-Created is refused" in body["error"]
    kept(before, world.history())
    # what is stored is the server's time of receipt
    snap = c.commit("model/staging/m", {"w.bin": b"honest"})
    assert snap["meta"]["bastion.received"].startswith("2027-01-")  # the server's clock
    assert snap["created"] == snap["meta"]["bastion.received"]


def test_retention_cannot_be_gamed_by_a_writer(world: World) -> None:
    """restic#22057: forged times let the next prune delete real history. Here a writer
    floods appends (the only thing it can do) and gc still keeps every version inside
    the retention window, by the server's clock."""
    before = world.history()
    c = world.client(world.token())
    with pytest.raises(UsageError, match="server records"):
        c.commit("model/staging/m", {"w.bin": b"x"}, meta={"created": "1970-01-01T00:00:00Z"})
    for i in range(12):
        c.commit("model/staging/m", {"w.bin": f"junk {i}".encode()})
    report = world.vault.gc(keep_last=2, keep_within_days=30, grace_s=0)
    assert report["snapshots_deleted"] == 0
    kept(before, world.history())
    # and the writer cannot run gc at all: there is no route, and DELETE is refused
    status, body = raw(world, "DELETE", "/v1/segments/staging/snapshots", world.token())
    assert status == 403
    assert "admin key" in body["error"]


# ------------------------------------------------------------ delete and overwrite


def test_delete_is_refused(world: World) -> None:
    before = world.history()
    token = world.token()
    for path in (
        "/v1/segments/staging/snapshots?name=model/staging/m",
        "/v1/segments/staging/snapshot?ref=model/staging/m@1",
        "/snapshots/model/staging/m/_v/00000001",
    ):
        status, body = raw(world, "DELETE", path, token)
        assert status == 403, (path, body)
        assert "append-only" in body["error"]
        assert "admin key" in body["error"]
    kept(before, world.history())


def test_overwrite_is_refused(world: World) -> None:
    before = world.history()
    token = world.token()
    status, body = raw(
        world,
        "PUT",
        "/v1/segments/staging/snapshots?name=model/staging/m",
        token,
        body=b'{"files": [["w.bin", 1]]}\nx',
    )
    assert status == 403
    assert "append-only" in body["error"]
    c = world.client(token)
    with pytest.raises(UsageError, match="HTTP 400"):
        c.commit("model/staging/m@1", {"w.bin": b"evil"})  # a version is not a name
    # a commit to the same name is a new version: version 1 is untouched
    snap = c.commit("model/staging/m", {"w.bin": b"evil"})
    assert snap["version"] == 4
    kept(before, world.history())


# -------------------------------------------------------------------- other segments


def test_read_or_write_in_another_segment_is_refused(world: World) -> None:
    before = world.history()
    staging = world.token("staging")
    into_prod = world.client(staging, segment="prod")
    with pytest.raises(TokenRefused, match=r"for segment 'staging', not 'prod'"):
        into_prod.commit("model/prod/m", {"w.bin": b"evil"})
    with pytest.raises(TokenRefused, match=r"for segment 'staging', not 'prod'"):
        into_prod.read("model/prod/m", "w.bin")
    # its own segment's URL, another segment's name: outside the token's prefixes
    own = world.client(staging)
    with pytest.raises(TokenRefused, match="outside this token's prefixes"):
        own.read("model/prod/m", "w.bin")
    with pytest.raises(TokenRefused, match="outside this token's prefixes"):
        own.commit("model/prod/m", {"w.bin": b"evil"})
    # a token minted (by a careless operator) for a prefix outside the namespace
    wide = world.client(world.token("staging", prefixes=["model/"]))
    with pytest.raises(TokenRefused, match="outside the namespace of segment 'staging'"):
        wide.commit("model/prod/m", {"w.bin": b"evil"})
    assert own.names() == ["model/staging/m"]
    kept(before, world.history())


# ---------------------------------------------------------------------- token life


def test_an_expired_token_is_refused(world: World) -> None:
    before = world.history()
    c = world.client(world.token(ttl_s=60))
    c.read("model/staging/m", "w.bin")
    world.clock.advance(61)
    with pytest.raises(TokenError, match=r"expired token.*bastion segment token"):
        c.commit("model/staging/m", {"w.bin": b"late"})
    kept(before, world.history())


def test_a_token_replayed_after_revocation_is_refused(world: World) -> None:
    before = world.history()
    token = world.token()
    narrowed = attenuate(token, ops=["append"])
    c, n = world.client(token), world.client(narrowed)
    c.read("model/staging/m", "w.bin")
    scope_id = json.loads(_body(token))["b"][0]["c"]
    first = json.loads(base64.urlsafe_b64decode(scope_id + "=="))["id"]
    world.state.revoke(first)
    with pytest.raises(TokenError, match="revoked token"):
        c.read("model/staging/m", "w.bin")
    with pytest.raises(TokenError, match="revoked token"):  # its attenuations too
        n.commit("model/staging/m", {"w.bin": b"x"})
    kept(before, world.history())


def _body(token: str) -> bytes:
    text = token.removeprefix("bst1.")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _encode(doc: dict[str, Any]) -> str:
    raw = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return "bst1." + base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def test_a_widened_token_is_refused(world: World) -> None:
    before = world.history()
    token = world.token("staging", ops=["read"])
    doc = json.loads(_body(token))
    claims = json.loads(base64.urlsafe_b64decode(doc["b"][0]["c"] + "=="))
    # 1. edit the claims in place: the signature no longer matches
    for change in ({"ops": ["read", "append"]}, {"pre": ["model/"]}, {"seg": "prod"}):
        edited = {**claims, **change}
        body = json.dumps(edited, sort_keys=True, separators=(",", ":")).encode()
        doc["b"][0]["c"] = base64.urlsafe_b64encode(body).rstrip(b"=").decode()
        c = world.client(_encode(doc), segment="staging")
        with pytest.raises(TokenError, match="forged token: block 0 is not signed"):
            c.commit("model/staging/m", {"w.bin": b"x"})
    # 2. a block that widens, properly signed with the proof: refused by the server
    from bastion.segment import _token

    blocks, seed = _token._decode(token)
    proof = _token.Ed25519PrivateKey.from_private_bytes(seed)
    nxt = _token.Ed25519PrivateKey.generate()
    wider = {**claims, "id": "ab" * 16, "ops": ["read", "append"]}
    wider["nk"] = _token._b64e(_token._raw_public(nxt.public_key()))
    body = _token._canonical(wider)
    forged = _token._encode([(b, s) for b, s, _ in blocks] + [(body, proof.sign(body))], nxt)
    with pytest.raises(TokenError, match="block 1 adds operations"):
        world.client(forged).commit("model/staging/m", {"w.bin": b"x"})
    # 3. attenuate refuses to widen, offline
    with pytest.raises(UsageError, match="cannot attenuate"):
        attenuate(token, ops=["read", "append"])
    # 4. dropping the last block of a narrowed token: its proof no longer matches
    narrowed = json.loads(_body(attenuate(world.token(), ops=["read"])))
    narrowed["b"] = narrowed["b"][:1]
    with pytest.raises(TokenError, match="proof does not match"):
        world.client(_encode(narrowed), segment="staging").commit("model/staging/m", {"w": b"x"})
    # 5. a token from another server's key
    foreign = mint(TokenKey.generate(), "staging", prefixes=["model/staging/"], clock=world.clock)
    with pytest.raises(TokenError, match="another server"):
        world.client(foreign).commit("model/staging/m", {"w.bin": b"x"})
    kept(before, world.history())


def test_a_token_in_the_wrong_header_is_a_clear_401(world: World) -> None:
    token = world.token()
    path = "/v1/segments/staging/names"
    status, body = _bare(world, "GET", path, {"X-Api-Key": token})
    assert status == 401
    assert b"came in X-Api-Key" in body
    assert token.encode() not in body
    status, body = _bare(world, "GET", path + "?token=" + token, {})
    assert status == 401
    assert b"the query string" in body
    status, body = _bare(world, "GET", path, {"Authorization": token})
    assert status == 401
    assert b"Bearer <token>" in body
    assert token.encode() not in body
    status, body = _bare(world, "GET", path, {})
    assert status == 401
    assert b"bastion segment token" in body
    # a read-only token cannot append
    with pytest.raises(TokenRefused, match="not append"):
        world.client(world.token(ops=["read"])).commit("model/staging/m", {"w": b"x"})


# --------------------------------------------------------------------- bad uploads


def test_path_traversal_in_names_is_refused(world: World) -> None:
    before = world.history()
    c = world.client(world.token())
    for name in ("model/staging/../../prod/m", "model/staging/m/../../../x", "/etc/passwd"):
        with pytest.raises(UsageError, match="HTTP 400") as exc:
            c.commit(name, {"w.bin": b"evil"})
        assert "artifact name" in str(exc.value)
    for path in ("../../outside", "/abs/path", "a/../../b", "nul\x00byte"):
        with pytest.raises(UsageError, match="HTTP 400"):
            c.commit("model/staging/m", {path: b"evil"})
    status, body = raw(world, "GET", "/v1/segments/..%2Fprod/names", world.token())
    assert status == 404
    assert "no segment" in body["error"]
    with pytest.raises(UsageError, match="HTTP 400"):
        c.read("model/staging/m", "../../../../etc/passwd")
    assert not (world.vault.state_dir / "outside").exists()
    kept(before, world.history())


def test_unsigned_or_foreign_signed_snapshots_are_refused(world: World, tmp_path: Path) -> None:
    before = world.history()
    token = world.token()
    # 1. a snapshot document sent instead of files
    status, body = raw(
        world,
        "POST",
        "/v1/segments/staging/snapshots?name=model/staging/m",
        token,
        headers={"Content-Type": "application/vnd.bastion.snapshot+json"},
        body=b"{}",
    )
    assert status == 400
    assert "server makes and signs" in body["error"]
    # 2. a foreign-signed snapshot planted on a replica by someone with disk access
    make_key(tmp_path / "evil.key")
    evil = Vault([tmp_path / "a", tmp_path / "b"], key_path=tmp_path / "evil.key")
    evil.ingest_processes = False
    evil.commit("model/staging/m", {"w.bin": b"ransom"})
    c = world.client(token)
    assert c.snapshot("model/staging/m")["version"] == 3  # the newest that verifies
    assert c.read("model/staging/m", "w.bin") == before["model/staging/m"][-1][2]["w.bin"]
    with pytest.raises(IntegrityError, match="HTTP 422"):
        c.snapshot("model/staging/m@4")
    # 3. an unsigned document in its place
    for replica in ("a", "b"):
        doc = tmp_path / replica / "snapshots/model/staging/m/_v/0000000004"
        assert doc.is_file()
        doc.chmod(0o600)
        doc.write_bytes(b'{"type": "snapshot", "name": "model/staging/m", "version": 4}')
    with pytest.raises(IntegrityError, match="fails verification"):
        c.snapshot("model/staging/m@4")
    assert c.snapshot("model/staging/m")["version"] == 3
    kept(before, world.history())


def test_an_oversize_upload_is_refused_before_it_is_stored(world: World) -> None:
    before = world.history()
    c = world.client(world.token())
    with pytest.raises(UsageError, match=r"over this server's limit.*HTTP 413") as exc:
        c.commit("model/staging/m", {"big.bin": b"\0" * ((1 << 20) + 1)})
    assert "--max-upload" in str(exc.value)
    # a header that lies about sizes: short and long bodies are both refused
    head = b'{"files": [["w.bin", 10]]}\n'
    path = "/v1/segments/staging/snapshots?name=model/staging/m"
    status, body = raw(world, "POST", path, world.token(), body=head + b"12345")
    assert status == 400
    assert "ended inside" in body["error"]
    status, body = raw(world, "POST", path, world.token(), body=head + b"0123456789extra")
    assert status == 400
    assert "longer than its header" in body["error"]
    assert world.vault.versions("model/staging/m")[-1].version == 3
    kept(before, world.history())


def test_many_concurrent_uploads_of_the_same_name_all_land(
    world: World, rng: random.Random
) -> None:
    before = world.history()
    token = world.token()
    payloads = [rng.randbytes(2048) for _ in range(12)]
    results: list[dict[str, Any]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def upload(data: bytes) -> None:
        try:
            snap = world.client(token).commit("model/staging/m", {"w.bin": data})
            with lock:
                results.append(snap)
        except BaseException as exc:  # collected, asserted below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=upload, args=(p,)) for p in payloads]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    versions = sorted(r["version"] for r in results)
    assert versions == list(range(4, 16))  # dense, none lost, none shared
    after = world.history()
    kept(before, after)
    stored = {v: f["w.bin"] for v, _, f in after["model/staging/m"]}
    assert sorted(stored[v] for v in versions) == sorted(payloads)


# ------------------------------------------------- what a job does with its token


def test_a_job_checkpoints_through_the_server_with_only_a_token(
    world: World, rng: random.Random, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from bastion.manifest import load
    from bastion.train import ServerStore, open_store

    token = world.token("staging", prefixes=["ckpt/etl/"])
    monkeypatch.setenv("BASTION_VAULT_URL", world.url)
    monkeypatch.setenv("BASTION_VAULT_TOKEN", token)
    manifest = tmp_path / "job" / "bastion.yaml"
    manifest.parent.mkdir()
    manifest.write_text("version: 1\nsystem: s\n")  # no vault key anywhere near the job
    store = open_store(load(manifest), job="etl")
    assert isinstance(store, ServerStore)
    states = [rng.randbytes(70_000) for _ in range(3)]
    for step, state in enumerate(states, 1):
        ref = store.commit(
            f"ckpt/etl/step-{step:06d}", {"state.bin": state}, meta={"step": step}, lineage=[]
        )
        assert ref == f"ckpt/etl/step-{step:06d}@1"
    assert store.checkpoints("etl") == [f"ckpt/etl/step-{n:06d}" for n in (3, 2, 1)]
    assert store.read("ckpt/etl/step-000002", "state.bin") == states[1]
    assert store.prune("etl", 1) == []  # a token cannot delete
    with pytest.raises(TokenRefused, match="outside this token's prefixes"):
        store.commit("model/staging/m", {"w": b"x"}, meta={}, lineage=[])
    store.client.close()


def test_stalled_uploads_are_dropped_and_do_not_starve_reads(world: World) -> None:
    """A writer that opens uploads and sends nothing (slow loris) holds no thread that
    reads need, and each stalled upload ends in a 408 with nothing published."""
    import socket
    import urllib.parse

    before = world.history()
    world.server.stall_s = 3.0
    u = urllib.parse.urlsplit(world.url)
    token = world.token()
    head = b'{"files": [["w.bin", 1000]]}\n'
    socks = []
    for _ in range(6):  # more than the server commits at once
        s = socket.create_connection((u.hostname or "", u.port or 0), timeout=30)
        s.sendall(
            b"POST /v1/segments/staging/snapshots?name=model/staging/m HTTP/1.1\r\n"
            b"Host: x\r\nAuthorization: Bearer " + token.encode() + b"\r\n"
            b"Content-Length: " + str(len(head) + 1000).encode() + b"\r\n\r\n" + head + b"0123"
        )
        socks.append(s)
    try:
        # a read while every upload is stalled: answered, and before any upload was dropped
        assert world.client(token).read("model/staging/m", "w.bin")
        for s in socks:
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1, socket.MSG_PEEK)
            s.setblocking(True)
        for s in socks:
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                piece = s.recv(65536)
                if not piece:
                    break
                answer += piece
            assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
            assert b"sent nothing for 3 s" in answer
    finally:
        for s in socks:
            s.close()
    assert world.vault.versions("model/staging/m")[-1].version == 3
    kept(before, world.history())


def test_uploads_stream_through_a_bounded_window(
    world: World, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload bigger than the server's window: its small files pass through memory as
    the commit takes them, a file bigger than the window through the disk; every byte
    lands. Files out of sorted order are refused (the commit reads them sorted)."""
    import bastion.vault._server as server_module

    monkeypatch.setattr(server_module, "_MEMORY_SPOOL", 64 << 10)
    files = {f"part-{i:02d}.bin": rng.randbytes(16 << 10) for i in range(20)}
    files["zbig.bin"] = rng.randbytes(100 << 10)
    c = world.client(world.token())
    snap = c.commit("model/staging/big", files)
    assert snap["size"] == sum(len(v) for v in files.values())
    for path, data in files.items():
        assert c.read("model/staging/big", path) == data
    head = b'{"files": [["b", 1], ["a", 1]]}\nxy'
    status, body = raw(
        world,
        "POST",
        "/v1/segments/staging/snapshots?name=model/staging/m",
        world.token(),
        body=head,
    )
    assert status == 400
    assert "sorted order" in body["error"]


def test_an_upload_of_many_files_is_stored_by_worker_processes(
    world: World, rng: random.Random, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An upload of PROCESS_FILES small files or more is stored by the vault's worker
    processes (the bytes sent through their pipes): every byte lands, as threads would
    store it."""
    from bastion.vault._ingest import IngestWorkers
    from bastion.vault._write import PROCESS_FILES

    sent: list[int] = []
    real_submit = IngestWorkers.submit

    def submit(self: IngestWorkers, items: Any) -> Any:
        sent.append(len(items))
        return real_submit(self, items)

    monkeypatch.setattr(IngestWorkers, "submit", submit)
    files = {f"part-{i:04d}.bin": rng.randbytes(rng.randint(1, 3000)) for i in range(PROCESS_FILES)}
    c = world.client(world.token())
    snap = c.commit("model/staging/many", files)
    assert sum(sent) == PROCESS_FILES, sent
    assert snap["size"] == sum(len(v) for v in files.values())
    for path in rng.sample(sorted(files), 20):
        assert c.read("model/staging/many", path) == files[path]
    by_threads = world.vault.commit("model/staging/threads", files, processes=False)
    ours = world.vault.snapshot("model/staging/many@latest")
    assert ours.files == by_threads.files
