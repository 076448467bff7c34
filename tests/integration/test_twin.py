"""The sandbox twin (issue 15, part 4): an isolated copy of the example's system.

Isolation is checked the hard way: every file of production's state directory and
vault replicas is hashed (bytes and mode) before real faults (FlipBytes, DeleteFiles,
Ransomware) run in the twin's scope and a snapshot is put through the twin's manifest,
and hashed again after. The twin's vault must read and verify production's snapshots,
and the CLI's errors (a port clash, an existing twin, no manifest) are exit 2.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import random
import socket
import sqlite3
import stat
from pathlib import Path

import pytest

from bastion.drill.faults import Scope
from bastion.drill.faults.ransomware import Ransomware
from bastion.drill.faults.storage import DeleteFiles, FlipBytes
from bastion.errors import ScopeError, UsageError
from bastion.manifest import load
from bastion.twin import Twin
from bastion.vault import Vault
from tests.helpers import commit_model, run_bastion


def _rows(db: Path) -> str:
    """An event log's content: its rows (its bytes change when SQLite checkpoints the
    WAL, which is not a change of what production holds)."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        dump = "\n".join(conn.iterdump())
    return hashlib.sha256(dump.encode()).hexdigest()


def _fingerprint(root: Path, *, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """Every file and directory under ``root``: its content hash and mode (``skip``:
    subtrees left out, e.g. the twin itself inside production's state directory)."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if here / d not in skip]
        found[str(here.relative_to(root)) + "/"] = oct(stat.S_IMODE(here.stat().st_mode))
        for name in filenames:
            path = here / name
            if name.endswith(("events.db-wal", "events.db-shm")):
                continue
            info = path.lstat()
            if name == "events.db":
                digest = _rows(path)
            else:
                digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "-"
            found[str(path.relative_to(root))] = f"{digest} {oct(stat.S_IMODE(info.st_mode))}"
    return found


def _production(example: Path, rng: random.Random) -> Path:
    """The example with a model and a dataset in its vault; its manifest path."""
    commit_model(example, rng.randrange(2**31))
    data = example / "raw"
    data.mkdir()
    for i in range(5):
        (data / f"shard-{i}.bin").write_bytes(rng.randbytes(rng.randrange(1000, 300_000)))
    manifest = load(example / "bastion.yaml")
    Vault.from_manifest(manifest).commit(
        "dataset/raw", files={f"shard-{i}.bin": data / f"shard-{i}.bin" for i in range(5)}
    )
    return example / "bastion.yaml"


def test_twin_up_has_its_own_state_ports_keys_and_a_vault_that_reads_production(
    example_copy: Path, rng: random.Random
) -> None:
    path = _production(example_copy, rng)
    production = load(path)
    twin = Twin(path)
    record = twin.up()
    mirror = twin.manifest()
    assert Path(mirror.state_dir) != Path(production.state_dir)
    assert Path(mirror.state_dir).is_relative_to(twin.root)
    # every owned port rewritten, to ports production does not use
    assert set(record.ports) == {8700, 8790, 8801}  # 8790: the control API (bastion up)
    assert mirror.control.listen == f"127.0.0.1:{record.ports[8790]}"
    assert not set(record.ports.values()) & set(record.ports)
    assert mirror.services["digits"].listen == f"127.0.0.1:{record.ports[8700]}"
    vendor = str(mirror.services["digits"].backends[1].url)
    assert f":{record.ports[8801]}" in vendor
    # its own keys, not production's
    assert mirror.vault is not None
    assert production.vault is not None
    assert mirror.vault.key != production.vault.key
    assert Path(str(mirror.vault.key)).read_bytes() != Path(str(production.vault.key)).read_bytes()
    # objects shared, not copied: each twin object is production's inode (or a reflink)
    for view in record.replicas:
        assert view.linked + view.reflinked > 0
        assert view.resigned >= 2
        for obj in (Path(view.twin) / "objects").rglob("*"):
            if obj.is_file() and view.linked:
                prod = Path(view.production) / obj.relative_to(view.twin)
                assert obj.stat().st_ino == prod.stat().st_ino
    # the twin's vault serves production's snapshots, verified (re-signed by the twin)
    mine, theirs = Vault.from_manifest(mirror), Vault.from_manifest(production)
    assert mine.names() == theirs.names()
    for name in theirs.names():
        a, b = mine.snapshot(f"{name}@latest"), theirs.snapshot(f"{name}@latest")
        assert a.id == b.id
        assert a.key_id != b.key_id
        for file in b.files:
            assert mine.read(a, file) == theirs.read(b, file)
    report = mine.scrub(repair=False)
    assert report.ok, report
    # production's vault does not trust the twin's key: a twin document copied into
    # production is refused
    assert a.key_id == mine.verifier.key_id != theirs.verifier.key_id


def test_faults_and_writes_in_the_twin_leave_production_unchanged(
    example_copy: Path, rng: random.Random, seed: int, tmp_path: Path
) -> None:
    path = _production(example_copy, rng)
    production = load(path)
    twin = Twin(path)
    twin.up()
    state = Path(production.state_dir)
    before = _fingerprint(state, skip=(twin.root,))
    scope = twin.scope()
    vault = twin.state_dir / "vault"
    objects = [p for p in (vault / "a" / "objects").rglob("*") if p.is_file()]
    assert objects
    chosen = rng.sample(objects, min(4, len(objects)))
    with FlipBytes(chosen, scope=scope, count=8, seed=seed, max_files=len(chosen)):
        pass  # injected and reverted; the shared inodes were copied up before any write
    flip = FlipBytes(vault / "b" / "objects", scope=scope, count=4, seed=seed, max_files=10_000)
    flip.inject()  # left damaged: production must still be intact
    DeleteFiles(vault / "a" / "snapshots", scope=scope, max_files=10_000).inject()
    Ransomware(vault / "b", scope=scope, keyfile=tmp_path / "ransom.key", max_files=10_000).inject()
    mirror = Vault.from_manifest(twin.manifest())
    (tmp_path / "new.bin").write_bytes(rng.randbytes(50_000))
    mirror.commit("dataset/twin-only", files={"new.bin": tmp_path / "new.bin"})
    after = _fingerprint(state, skip=(twin.root,))
    assert after == before, sorted(set(after.items()) ^ set(before.items()))[:10]
    # and production still verifies end to end
    report = Vault.from_manifest(production).scrub(repair=False)
    assert report.ok, report
    assert "dataset/twin-only" not in Vault.from_manifest(production).names()


def test_the_twin_scope_refuses_production(example_copy: Path, rng: random.Random) -> None:
    path = _production(example_copy, rng)
    production = load(path)
    twin = Twin(path)
    twin.up()
    scope = twin.scope()
    prod_vault = Path(production.state_dir) / "vault" / "a"
    with pytest.raises(ScopeError, match="outside scope 'twin twin'"):
        FlipBytes(prod_vault / "objects", scope=scope, max_files=10_000)
    with pytest.raises(ScopeError):
        scope.check_port(8700)
    assert scope.check_port(twin.record().ports[8700])


def test_copy_up_gives_a_linked_file_its_own_bytes(tmp_path: Path, seed: int) -> None:
    outside, inside = tmp_path / "prod.bin", tmp_path / "twin" / "obj.bin"
    inside.parent.mkdir()
    outside.write_bytes(bytes(range(256)) * 64)
    outside.chmod(0o400)
    os.link(outside, inside)
    scope = Scope.of(paths=[tmp_path / "twin"], copy_up=[tmp_path / "twin"])
    FlipBytes(inside, scope=scope, count=16, seed=seed).inject()
    assert outside.read_bytes() == bytes(range(256)) * 64
    assert inside.read_bytes() != outside.read_bytes()
    assert inside.stat().st_nlink == 1
    assert stat.S_IMODE(inside.stat().st_mode) == 0o400
    # without copy-up the same fault writes through the link: the guard is what works
    os.link(outside, tmp_path / "twin" / "bare.bin")
    FlipBytes(tmp_path / "twin" / "bare.bin", scope=Scope.of(paths=[tmp_path / "twin"])).inject()
    assert outside.read_bytes() != bytes(range(256)) * 64


def test_twin_down_removes_what_up_made_and_nothing_else(
    example_copy: Path, rng: random.Random
) -> None:
    path = _production(example_copy, rng)
    events = Path(load(path).state_dir) / "events.db"

    def everything() -> dict[str, str]:
        # production's log gains twin.up and twin.down (its record of the system's
        # history); everything else must be as it was
        return {k: v for k, v in _fingerprint(example_copy).items() if example_copy / k != events}

    before = everything()
    up = run_bastion("twin", "up", "--json", cwd=example_copy)
    assert up.returncode == 0, up.stderr
    made = json.loads(up.stdout)
    assert Path(made["manifest"]).is_file()
    assert everything() != before
    status = json.loads(run_bastion("twin", "status", "--json", cwd=example_copy).stdout)
    assert status["exists"]
    assert status["twin"]["ports"] == made["ports"]
    assert status["listening"] == {str(p): False for p in made["ports"].values()}
    down = run_bastion("twin", "down", "--json", cwd=example_copy)
    assert down.returncode == 0, down.stderr
    assert made["root"] in json.loads(down.stdout)["removed"]
    assert everything() == before
    status = json.loads(run_bastion("twin", "status", "--json", cwd=example_copy).stdout)
    assert status["exists"] is False


def test_bad_input_is_exit_2_naming_the_thing(example_copy: Path, rng: random.Random) -> None:
    _production(example_copy, rng)
    missing = run_bastion("twin", "up", "-f", "nope.yaml", cwd=example_copy)
    assert missing.returncode == 2
    assert "nope.yaml does not exist" in missing.stderr
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        taken = held.getsockname()[1]
        clash = run_bastion("twin", "up", "--port-base", str(taken), cwd=example_copy)
    assert clash.returncode == 2, clash.stderr
    assert f"port {taken}" in clash.stderr
    assert "services.digits.listen" in clash.stderr
    assert not (example_copy / ".bastion" / "twin").exists()  # nothing left half made
    own = run_bastion("twin", "up", "--port-base", "8700", cwd=example_copy)
    assert own.returncode == 2
    assert "production's own port" in own.stderr
    assert run_bastion("twin", "up", cwd=example_copy).returncode == 0
    again = run_bastion("twin", "up", cwd=example_copy)
    assert again.returncode == 2
    assert "already exists" in again.stderr
    assert run_bastion("twin", "down", cwd=example_copy).returncode == 0
    gone = run_bastion("twin", "down", cwd=example_copy)
    assert gone.returncode == 2
    assert "does not exist" in gone.stderr
    with pytest.raises(UsageError, match="not valid"):
        Twin(example_copy / "bastion.yaml", "Bad Name")


def _experiment(tmp_path: Path, name: str, target: Path) -> Path:
    experiment = {
        "title": f"flip bytes in {name}",
        "description": "a storage fault, aimed by path",
        "method": [
            {
                "type": "action",
                "name": "flip",
                "provider": {
                    "type": "python",
                    "module": "bastion.drill.actions",
                    "func": "inject",
                    "arguments": {
                        "fault": "storage.flip_bytes",
                        "targets": str(target),
                        "count": 4,
                        "max_files": 10_000,
                    },
                },
            }
        ],
        "rollbacks": [
            {
                "type": "action",
                "name": "unflip",
                "provider": {"type": "python", "module": "bastion.drill.actions", "func": "revert"},
            }
        ],
        # the experiment's own scope names production; --twin replaces it
        "extensions": [{"name": "bastion", "scope": {"paths": [str(target.parents[3])]}}],
    }
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(experiment))
    return path


def test_drill_run_twin_runs_in_the_twins_scope_and_log(
    example_copy: Path, rng: random.Random, seed: int, tmp_path: Path
) -> None:
    path = _production(example_copy, rng)
    production = load(path)
    state = Path(production.state_dir)
    assert run_bastion("twin", "up", cwd=example_copy).returncode == 0
    twin = Twin(path)
    before = _fingerprint(state, skip=(twin.root,))
    in_twin = _experiment(tmp_path, "twin", twin.state_dir / "vault" / "a" / "objects")
    done = run_bastion(
        "drill", "run", str(in_twin), "--twin", "twin", "--no-live", "--seed", str(seed),
        "--journal", str(tmp_path / "j1.json"), cwd=example_copy,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    journal = json.loads((tmp_path / "j1.json").read_text())
    assert "twin twin" in journal["bastion"]["scope"]
    aimed = _experiment(tmp_path, "production", state / "vault" / "a" / "objects")
    refused = run_bastion(
        "drill", "run", str(aimed), "--twin", "twin", "--no-live",
        "--journal", str(tmp_path / "j2.json"), cwd=example_copy,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "refused to touch" in refused.stderr
    assert _fingerprint(state, skip=(twin.root,)) == before
    # the drills' events are the twin's, not production's
    with contextlib.closing(sqlite3.connect(twin.state_dir / "events.db")) as conn:
        kinds = {row[0] for row in conn.execute("SELECT kind FROM events")}
    assert "drill.started" in kinds
    prod_db = state / "events.db"
    with contextlib.closing(sqlite3.connect(prod_db)) as conn:
        kinds = {row[0] for row in conn.execute("SELECT kind FROM events")}
    assert "drill.started" not in kinds
    assert "twin.up" in kinds


def test_port_base_gives_consecutive_ports_and_down_waits_for_the_twin(
    example_copy: Path, rng: random.Random
) -> None:
    from bastion.twin._ports import port_free

    path = _production(example_copy, rng)
    # three consecutive free ports below the kernel's ephemeral range (32768 and up on
    # Linux), where no other test's client socket or server on port 0 can take one of
    # them between this pick and the twin's start
    base = next(
        b
        for b in (rng.randrange(20000, 30000) for _ in range(200))
        if all(port_free(b + i) for i in range(3))
    )
    twin = Twin(path)
    record = twin.up(port_base=base)
    assert record.ports == {8700: base, 8801: base + 1, 8790: base + 2}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base))
        busy.listen()
        assert twin.status().listening[base] is True
        with pytest.raises(UsageError, match=rf"port\(s\) \[{base}\] are still in use"):
            twin.down()
        assert twin.exists()
    twin.down()
    assert not twin.exists()


def test_synthetic_load_reaches_the_twins_gateway_at_its_rate(seed: int) -> None:
    from aiohttp import web

    from bastion.twin import replay_synthetic
    from tests.helpers import served

    seen: list[int] = []

    async def predict(request: web.Request) -> web.Response:
        body = await request.json()
        seen.append(len(body["inputs"]))
        if len(seen) % 10 == 0:
            return web.json_response({"error": "injected"}, status=503)
        return web.json_response({"outputs": [0]})

    app = web.Application()
    app.router.add_post("/v1/predict", predict)
    with served(app) as url:
        stats = replay_synthetic(url.removeprefix("http://"), rate=50, seconds=1, seed=seed)
    assert stats.sent == 50 == len(seen)
    assert set(seen) == {64}
    assert (stats.ok, stats.failed) == (45, 5)
    assert stats.p50_ms is not None
    assert stats.p99_ms is not None


def test_twin_load_with_no_gateway_is_exit_1_saying_what_to_start(
    example_copy: Path, rng: random.Random
) -> None:
    _production(example_copy, rng)
    assert run_bastion("twin", "up", cwd=example_copy).returncode == 0
    done = run_bastion(
        "twin", "load", "--rate", "5", "--seconds", "0.4", "--json", cwd=example_copy
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert json.loads(done.stdout)["failed"] == 2
    assert "bastion serve -f" in done.stderr


def test_the_twins_gateway_serves_production_s_model_and_is_in_its_scope(
    example_copy: Path, rng: random.Random
) -> None:
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    path = _production(example_copy, rng)
    twin = Twin(path)
    record = twin.up()
    port = record.ports[8700]
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "digits", "-f", record.manifest],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    def ready() -> int:
        try:
            url = f"http://127.0.0.1:{port}/bastion/status"
            with urllib.request.urlopen(url, timeout=2) as r:
                ups = json.loads(r.read())["pool"]["upstreams"]
        except OSError:
            return 0
        return len([u for u in ups if u["group"] == "local" and not u["needs_probe"]])

    try:
        deadline = time.monotonic() + 90
        while ready() < 1:
            assert proc.poll() is None, f"bastion serve -f twin exited {proc.returncode}"
            assert time.monotonic() < deadline, "the twin's replicas never became ready"
            time.sleep(0.1)
        load = run_bastion(
            "twin", "load", "--rate", "10", "--seconds", "1", "--json", cwd=example_copy
        )
        assert load.returncode == 0, load.stdout + load.stderr
        stats = json.loads(load.stdout)
        assert stats["target"] == f"127.0.0.1:{port}"
        assert stats["ok"] > 0
        scope = twin.scope()
        assert proc.pid in scope.pids  # it listens on a twin port
        assert 8700 not in scope.ports
        with pytest.raises(UsageError, match="still in use"):
            twin.down()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 20
    while twin.status().listening[port]:
        assert time.monotonic() < deadline, "the twin's gateway port stayed busy"
        time.sleep(0.1)
    twin.down()


def test_a_worker_slots_scratch_is_the_twins_own(example_copy: Path) -> None:
    from ruamel.yaml import YAML

    yaml = YAML()
    path = example_copy / "bastion.yaml"
    doc = yaml.load(path)
    doc["jobs"]["train-digits"]["slots"] = [{"name": "w0", "scratch": "scratch/w0"}]
    yaml.dump(doc, path)
    production = load(path)
    assert production.jobs["train-digits"].slots[0].scratch == example_copy / "scratch" / "w0"
    twin = Twin(path)
    twin.up()
    mirror = twin.manifest()
    scratch = mirror.jobs["train-digits"].slots[0].scratch
    assert scratch == twin.state_dir / "scratch" / "train-digits" / "w0"
    # the job still runs production's code, in production's directory
    assert mirror.jobs["train-digits"].workdir == example_copy
    assert mirror.jobs["train-digits"].command == production.jobs["train-digits"].command


def test_down_removes_a_twin_that_up_never_finished(example_copy: Path, rng: random.Random) -> None:
    path = _production(example_copy, rng)
    twin = Twin(path)
    twin.up()
    (twin.root / "twin.json").unlink()  # as if up was SIGKILLed before its last write
    assert twin.status().record is None
    twin.down()
    assert not twin.root.exists()
    twin.up()
    (twin.root / "twin.json").unlink()
    (twin.root / "notes.txt").write_text("someone else's")
    with pytest.raises(UsageError, match="which twin up does not make"):
        twin.down()
    assert (twin.root / "notes.txt").exists()


def test_a_service_with_two_gateways_gets_both_addresses_rewritten(
    example_copy: Path, rng: random.Random
) -> None:
    """Active-active gateways: the twin moves every gateway's port, and ``listen`` stays
    among them (the manifest insists on it), so the twin's manifest loads."""
    path = _production(example_copy, rng)
    text = path.read_text()
    assert "listen: 127.0.0.1:8700" in text
    path.write_text(
        text.replace(
            "listen: 127.0.0.1:8700",
            "listen: 127.0.0.1:8700\n    gateways: [127.0.0.1:8700, 127.0.0.1:8702]",
            1,
        )
    )
    twin = Twin(path)
    record = twin.up()
    try:
        service = twin.manifest().services["digits"]
        assert 8702 in record.ports
        assert service.gateways == [
            f"127.0.0.1:{record.ports[8700]}",
            f"127.0.0.1:{record.ports[8702]}",
        ]
        assert service.listen == service.gateways[0]
    finally:
        twin.down()
