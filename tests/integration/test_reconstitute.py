"""``bastion model reconstitute`` for real: the example's model, trained by its pipeline's
real PyTorch stage, lost on disk and brought back.

- restore: the gateway and its replica killed, a vault replica deleted with ``rm -rf``,
  the operator's working copy deleted; the model comes back on both replicas and a real
  gateway + replica answers over HTTP with the same predictions as before the loss;
- rebuild: every copy of the model's chunks deleted from every replica; the replay of
  its recorded lineage is hash-identical to the signed original and written back under
  the same snapshot;
- a lineage recorded under another torch version, or another thread count, is reported
  as not replayable (exit 1, naming both values), not approximated;
- a bad or unknown ref exits 2 naming it.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from bastion import event_kinds as ek
from bastion.events import EventLog
from bastion.manifest import load
from bastion.vault import Vault
from tests.helpers import BASTION, run_bastion

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "digits"
MODEL = "model/digits@latest"
MANIFEST = """\
version: 1
system: digits
state_dir: .bastion
vault:
  replicas: [.bastion/vault/a, .bastion/vault/b]
  key: .bastion/keys/signing.key
  admin_key: .bastion/keys/admin.key
segments: [prod]
services:
  digits:
    segment: prod
    listen: 127.0.0.1:{port}
    backends:
      - name: local
        model: model/digits@latest
        replicas: {{min: 1, max: 1}}
pipelines:
  digits:
    sources: [dataset/digits@latest]
    stages:
      ingest:
        command: [python, pipeline/split.py, train]
        inputs: {{raw: dataset/digits@latest}}
        output: dataset/digits-train
      train:
        command: [python, pipeline/train_stage.py, --steps, "60"]
        code: [pipeline/train_stage.py, train.py]
        inputs: {{data: dataset/digits-train}}
        output: model/digits
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example with its model trained once by the pipeline's real PyTorch stage."""
    root = tmp_path_factory.mktemp("reconstitute") / "digits"
    shutil.copytree(EXAMPLE, root, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
    (root / "bastion.yaml").write_text(MANIFEST.format(port=_free_port()))
    assert run_bastion("init", str(root)).returncode == 0
    f = str(root / "bastion.yaml")
    put = run_bastion("vault", "put", "dataset/digits", str(root / "dataset"), "-f", f)
    assert put.returncode == 0, put.stderr
    done = run_bastion("pipeline", "run", "digits", "-f", f, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


@pytest.fixture
def world(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained example of this test's own, on a port of its own."""
    root = tmp_path / "digits"
    shutil.copytree(trained, root, symlinks=True)
    (root / "bastion.yaml").write_text(MANIFEST.format(port=_free_port()))
    return root


def _vault(root: Path) -> tuple[Vault, EventLog]:
    manifest = load(root / "bastion.yaml")
    log = EventLog.in_state_dir(manifest.state_dir)
    return Vault.from_manifest(manifest, events=log), log


def _model_files(root: Path) -> dict[str, str]:
    vault, log = _vault(root)
    try:
        snap = vault.snapshot(MODEL)
        return {p: hashlib.sha256(vault.read(snap, p)).hexdigest() for p in sorted(snap.files)}
    finally:
        log.close()


def _predict(url: str, rows: list[list[float]]) -> tuple[int, str, list[int]]:
    request = urllib.request.Request(
        f"{url}/v1/predict",
        data=json.dumps({"inputs": rows}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        body = json.loads(resp.read())
        return resp.status, resp.headers.get("x-bastion-backend", ""), body["predictions"]


def _rows(root: Path, rng: random.Random) -> list[list[float]]:
    lines = (root / "dataset" / "shard-00.csv").read_text().splitlines()[1:]
    return [[float(v) for v in line.split(",")[:-1]] for line in rng.sample(lines, 8)]


def _kill_group(pid: int) -> None:
    """SIGKILL a gateway's process group (its replicas die with it); a child of this
    process is reaped by the caller, one started by the CLI by init."""
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return
        time.sleep(0.02)


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    """``bastion serve digits`` as an operator runs it, until a replica answers."""
    manifest = load(root / "bastion.yaml")
    url = f"http://{manifest.services['digits'].listen}"
    proc = subprocess.Popen(
        [*BASTION, "serve", "digits", "-f", str(root / "bastion.yaml")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if _predict(url, [[0.0] * 64])[1].startswith("local-"):
                break
        except OSError:
            pass
        assert proc.poll() is None, "bastion serve exited"
        time.sleep(0.05)
    else:
        _kill_group(proc.pid)
        proc.wait(timeout=20)
        pytest.fail("the gateway did not serve within 60 s")
    return proc, url


def _reconstitute(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_bastion(
        "model", "reconstitute", *args, "-f", str(root / "bastion.yaml"), timeout=300
    )


def _kinds(root: Path) -> list[str]:
    log = EventLog.in_state_dir(root / ".bastion")
    try:
        return [e.kind for e in log.query(kind="model.reconstitute.*")]
    finally:
        log.close()


def _events(root: Path, kind: str) -> list[dict[str, object]]:
    log = EventLog.in_state_dir(root / ".bastion")
    try:
        return [dict(e.data) for e in log.query(kind=kind)]
    finally:
        log.close()


def test_restore_after_total_loss_serves_the_same_model_again(
    world: Path, rng: random.Random
) -> None:
    before = _model_files(world)
    rows = _rows(world, rng)
    proc, url = _serve(world)
    try:
        _, _, predicted = _predict(url, rows)
        # the operator's working copy of the model, as `bastion vault restore` makes it
        deployed = world / "deployed"
        copy = run_bastion(
            "vault", "restore", MODEL, str(deployed), "-f", str(world / "bastion.yaml")
        )
        assert copy.returncode == 0, copy.stderr
    finally:
        _kill_group(proc.pid)  # the gateway and, dying with it, its replica
        proc.wait(timeout=20)
    # total loss: every working copy, and one vault replica, gone from the disk
    shutil.rmtree(deployed)
    shutil.rmtree(world / ".bastion" / "pipelines")
    replica_a = world / ".bastion" / "vault" / "a"
    for path in replica_a.rglob("*"):
        if path.is_dir():
            path.chmod(0o700)
    shutil.rmtree(replica_a)
    with pytest.raises(OSError):
        _predict(url, rows)

    done = _reconstitute(world, MODEL, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    try:
        assert result["path"] == "restore"
        assert result["heal"]["whole"]
        assert result["heal"]["chunks_repaired"] == result["heal"]["chunks"]
        [served] = result["serving"]
        assert served["answered_by"].startswith("local-")
        assert served["started_pid"]
        # a real request through the gateway it brought back, answered by a replica
        status, backend, again = _predict(url, rows)
        assert status == 200
        assert backend.startswith("local-")
        assert again == predicted
    finally:
        if result.get("serving"):
            _kill_group(result["serving"][0]["started_pid"])
    # the deleted replica holds the model again, as real files
    vault, log = _vault(world)
    try:
        snap = vault.snapshot(MODEL)
        store_a = vault.stores[0]
        for chunk in snap.chunk_ids():
            assert store_a.has(f"objects/{chunk[:2]}/{chunk}")
    finally:
        log.close()
    assert _model_files(world) == before
    kinds = _kinds(world)
    assert ek.MODEL_RECONSTITUTE_RESTORED in kinds
    assert ek.MODEL_RECONSTITUTE_SERVING in kinds


def _delete_chunks(root: Path, ref: str) -> int:
    vault, log = _vault(root)
    try:
        chunks = vault.snapshot(ref).chunk_ids()
    finally:
        log.close()
    gone = 0
    for replica in (root / ".bastion" / "vault").iterdir():
        for chunk in chunks:
            path = replica / "objects" / chunk[:2] / chunk
            if path.exists():
                path.parent.chmod(0o700)
                path.unlink()
                gone += 1
    return gone


def test_rebuild_from_lineage_is_hash_identical_to_the_lost_original(world: Path) -> None:
    before = _model_files(world)
    vault, log = _vault(world)
    try:
        original = vault.snapshot(MODEL)
    finally:
        log.close()
    assert _delete_chunks(world, MODEL) == 2 * len(original.chunk_ids())
    # and the training data it was made from: its own lineage is replayed first
    assert _delete_chunks(world, "dataset/digits-train@latest") > 0
    lost = run_bastion(
        "vault", "restore", MODEL, str(world / "x"), "-f", str(world / "bastion.yaml")
    )
    assert lost.returncode != 0  # really gone: nothing can read it

    done = _reconstitute(world, MODEL, "--no-serve", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert result["path"] == "rebuild"
    assert "no replica holds" in result["why"]
    assert result["heal"]["chunks_rebuilt"] == len(original.chunk_ids())
    assert result["environment"]["threads"] == 1
    assert result["environment"]["reported"]
    # the same signed snapshot reads whole again: the rebuild's bytes are the original's
    assert result["id"] == original.id
    assert _model_files(world) == before
    rebuilt = _events(world, ek.MODEL_RECONSTITUTE_REBUILT)
    assert [e["snapshot"] for e in rebuilt] == ["dataset/digits-train@1", original.ref]


def _foreign(root: Path, **environment: object) -> str:
    """The model as if trained elsewhere: its recipe, signed, naming another environment."""
    vault, log = _vault(root)
    try:
        snap = vault.snapshot(MODEL)
        recipe = dict(snap.meta["recipe"])
        recipe["environment"] = {**recipe["environment"], **environment}
        files = {p: vault.read(snap, p) for p in snap.files}
        made = vault.commit(
            "model/digits-elsewhere",
            files,
            meta={**snap.meta, "recipe": recipe},
            lineage=list(snap.lineage),
        )
        return made.ref
    finally:
        log.close()


@pytest.mark.parametrize(
    ("recorded", "said", "ran"),
    [
        ({"torch": "1.13.1+cu117"}, "torch 1.13.1+cu117 recorded, ", "nothing was run"),
        ({"threads": 4}, "threads 4 recorded, 1 here", "the replay ran"),
    ],
    ids=["torch-version", "thread-count"],
)
def test_a_lineage_that_cannot_be_replayed_exactly_is_reported(
    world: Path, recorded: dict[str, object], said: str, ran: str
) -> None:
    ref = _foreign(world, **recorded)
    done = _reconstitute(world, ref, "--from-lineage", "--no-serve")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "cannot be replayed exactly" in done.stderr, done.stderr
    assert said in done.stderr, done.stderr
    assert ran in done.stderr
    assert ek.MODEL_RECONSTITUTE_NOT_REPLAYABLE in _kinds(world)


def test_a_bad_or_unknown_ref_exits_2_naming_it(world: Path) -> None:
    bad = _reconstitute(world, "model/../etc@1")
    assert bad.returncode == 2, bad.stderr
    assert "model/../etc" in bad.stderr
    assert "escape" in bad.stderr
    unknown = _reconstitute(world, "model/nope@latest")
    assert unknown.returncode == 2, unknown.stderr
    assert "model/nope" in unknown.stderr
    assert "bastion vault log" in unknown.stderr
    assert "Traceback" not in bad.stderr + unknown.stderr
