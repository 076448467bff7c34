"""What the rollout tests share: a copy of the example with a real vault, models committed
to it, a gateway with real replica processes (in this process, or ``bastion serve``), and
load from the real ``openai`` client and plain HTTP.

- ``RolloutWorld``: the example copied, its manifest rewritten for a quick rollout (one
  local backend of one replica serving ``model/digits@prod``, a free port, the
  ``rollout:`` block a test gives), keys, the gate's datasets and the stable model
  (trained 100 steps) committed and labelled ``@prod``. ``commit_*`` make candidates:
  the same weights again (``good``, with a passing model-gate verdict, so
  ``bastion.validate.promote`` accepts it), ``SwapModel`` with a degraded model,
  ``CorruptWeights``.
- ``LibraryGateway``: a real ``Gateway`` in a ``GatewayThread`` with the service's
  replica set and a ``RolloutController``, built as ``run_services`` builds them, with the
  two seams a drill uses: ``stable_url`` / ``candidate_url`` (where the gateway reaches a
  replica: a fault proxy or a fault server in between).
- ``Load``: client threads (``openai`` and ``http.client``), each request with an
  ``x-bastion-user`` drawn from the seed; every answer's ``x-bastion-backend`` and every
  failure are kept.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
import yaml

from bastion.drill.faults import CorruptWeights, Scope, SwapModel, degrade
from bastion.events import EventLog, EventWriter
from bastion.manifest import Manifest, load
from bastion.rollout import RolloutController
from bastion.serve import Gateway, GatewayThread
from bastion.serve.replicas import ReplicaSet
from bastion.starter import write_key
from bastion.validate import ModelGateConfig, Status, validate_model
from bastion.vault import Vault
from tests.conftest import EXAMPLE
from tests.helpers import wait_for
from tests.integration.test_validate_model_gate import GATE_SEED, _digits, _model_dir, _weights

SERVICE = "digits"
CANDIDATE_MARK = "-candidate-"  # in a candidate replica's name (its x-bastion-backend)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the world: manifest, vault, models ---------------------------------------------------


class RolloutWorld:
    def __init__(
        self,
        root: Path,
        rollout: dict[str, Any],
        *,
        policy: dict[str, Any] | None = None,
    ) -> None:
        self.root = root
        self.dir = root / "digits"
        shutil.copytree(EXAMPLE, self.dir, ignore=shutil.ignore_patterns(".bastion", "__pycache__"))
        self.port = free_port()
        self.manifest_path = self.dir / "bastion.yaml"
        self.write_manifest(rollout, policy=policy)
        manifest = self.manifest()
        assert manifest.vault is not None
        for key in (manifest.vault.key, manifest.vault.admin_key):
            assert key is not None
            write_key(key)
        for replica in manifest.vault.replicas:
            Path(replica).mkdir(parents=True, exist_ok=True)
        self.vault = Vault.from_manifest(manifest)
        _, _, lines = _digits(EXAMPLE / "dataset")
        for name, rows in (("holdout", lines[1201:1598]), ("golden", lines[1598:])):
            d = root / name
            d.mkdir()
            (d / f"{name}.csv").write_text("\n".join([lines[0], *rows]) + "\n")
            self._commit(f"dataset/digits-{name}", d)
        self.prod_dir = _model_dir(root / "prod", _weights(100))
        self.prod = self._commit("model/digits", self.prod_dir)
        self.vault.label("model/digits", 1, "prod")
        x, _, _ = _digits(EXAMPLE / "dataset")
        self.inputs = [",".join(f"{v:g}" for v in row) for row in x[1201:]]

    def write_manifest(
        self, rollout: dict[str, Any], *, policy: dict[str, Any] | None = None
    ) -> None:
        doc = yaml.safe_load((EXAMPLE / "bastion.yaml").read_text())
        doc["services"][SERVICE] = {
            "segment": "prod",
            "listen": f"127.0.0.1:{self.port}",
            "backends": [
                {"name": "local", "model": "model/digits@prod", "replicas": {"min": 1, "max": 1}}
            ],
            # no hedge: a hedged request cancels the slow first attempt, and a
            # measurement needs it to finish (the tests judge the arms, not the hedge)
            # a queue wait of 5 s, not the default 0.5: on the loaded CI machine one
            # replica fell behind for a moment and a request was shed (seed 3266391878);
            # shedding is tested on its own, here no request may fail
            "policy": {
                "timeout_ms": 3000,
                "retry_budget": 0.5,
                "queue_timeout_ms": 5000,
                **(policy or {}),
            },
            "rollout": rollout,
        }
        self.manifest_path.write_text(yaml.safe_dump(doc, sort_keys=False))

    def manifest(self) -> Manifest:
        return load(self.manifest_path)

    @property
    def state_dir(self) -> Path:
        return self.dir / ".bastion"

    def _commit(self, name: str, directory: Path) -> str:
        return self.vault.commit(name, {p.name: p for p in sorted(directory.iterdir())}).ref

    def prod_version(self) -> int:
        return Vault.from_manifest(self.manifest()).labels("model/digits")["prod"]

    # -- candidates ---------------------------------------------------------------------
    def commit_good(self) -> str:
        """The stable weights committed again (a new snapshot), with a passing verdict."""
        ref = self._commit("model/digits", self.prod_dir)
        run = validate_model(
            self.vault,
            ref,
            "model/digits@prod",
            holdout="dataset/digits-holdout@latest",
            golden="dataset/digits-golden@latest",
            config=ModelGateConfig(seed=GATE_SEED),
        )
        assert run.status is Status.PASSED, run.document["findings"]
        return ref

    def commit_other(self, steps: int = 200) -> str:
        """Different weights (trained longer): chunks the stable model does not share."""
        return self._commit("model/digits", _model_dir(self.root / f"m{steps}", _weights(steps)))

    def commit_swapped(self, seed: int) -> str:
        swapped = self.root / "swapped"
        shutil.copytree(self.prod_dir, swapped)
        # noise 1.0 (as tests/integration/test_serve_golden.py): clearly wrong answers. But
        # the digits are balanced, and a noisy model's label histogram can stay balanced
        # too (seed 1935821693: 13% against 14% on the commonest label; the predictions
        # check rightly saw no drift), so the degraded model also collapses toward one
        # label, as over-fitted or poisoned models do: a shift the histogram must show.
        worse = degrade(
            self.prod_dir / "model.safetensors", self.root / "worse.st", noise=1.0, seed=seed
        )
        _collapse_toward_one_label(worse, self.prod_dir / "model.json", self.inputs, seed)
        with SwapModel(swapped / "model.safetensors", worse, scope=Scope.of(paths=[swapped])):
            return self._commit("model/digits", swapped)

    def commit_corrupt(self, mode: str, seed: int) -> str:
        damaged = self.root / f"corrupt-{mode}"
        shutil.copytree(self.prod_dir, damaged)
        with CorruptWeights(
            damaged / "model.safetensors",
            scope=Scope.of(paths=[damaged]),
            mode=mode,
            tensors=["0.weight"],
            fraction=0.2 if mode == "nan" else 1.0,
            seed=seed,
        ):
            return self._commit("model/digits", damaged)

    # -- what happened --------------------------------------------------------------------
    def events(self, kind: str | None = None) -> list[Any]:
        log = EventLog.in_state_dir(self.state_dir)
        try:
            return log.query(kind=kind)
        finally:
            log.close()


# -- a gateway in this process ------------------------------------------------------------


class LibraryGateway:
    """The service's gateway with its replica set and rollout controller, on a
    ``GatewayThread`` (as ``bastion.serve.runner.run_services`` builds them)."""

    def __init__(
        self,
        world: RolloutWorld,
        *,
        stable_url: Callable[[str, int], str] | None = None,
        candidate_url: Callable[[str, int], str] | None = None,
    ) -> None:
        manifest = world.manifest()
        assert manifest.path is not None
        service = manifest.services[SERVICE]
        self.sink = EventWriter.in_state_dir(manifest.state_dir)
        self.gateway = Gateway(
            SERVICE,
            service.policy,
            segment=service.segment or "",
            events=self.sink,
            probe_interval_s=0.2,
        )
        backend = service.backends[0]
        pinned = world.vault.snapshot(str(backend.model)).ref
        self.stable = ReplicaSet(
            self.gateway,
            backend,
            manifest_path=manifest.path,
            log_dir=manifest.state_dir / "serve" / SERVICE,
            model=pinned,
            url_for=stable_url,
        )
        self.sets = {backend.name: self.stable}
        self.controller = RolloutController(
            self.gateway, manifest, self.sets, candidate_url=candidate_url
        )
        self.thread = GatewayThread(self.gateway)

    def __enter__(self) -> LibraryGateway:
        self.thread.__enter__()
        try:
            self.thread.call(self.stable.start())
            wait_for(lambda: self.thread.run(self.stable.ready), "the stable replica's probe")
            self.thread.call(self.controller.resume())
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.thread.call(self.controller.close())
            for rs in list(self.sets.values()):
                self.thread.call(rs.close())
        finally:
            self.thread.stop()
            self.sink.close()

    @property
    def url(self) -> str:
        return self.gateway.url

    def start(self, candidate: str, strategy: str | None = None) -> str:
        record = self.thread.call(self.controller.start(candidate, strategy=strategy), 60)
        return str(record.id)

    def status(self) -> dict[str, Any]:
        return get_rollout(self.url)

    def wait_ended(self, seconds: float = 60.0) -> dict[str, Any]:
        def ended() -> dict[str, Any] | None:
            r = self.status()
            return r if r["status"] not in ("starting", "running") else None

        return dict(wait_for(ended, "the rollout to end", seconds))

    def wait_running(
        self, cond: Callable[[dict[str, Any]], bool], what: str, seconds: float = 60.0
    ) -> dict[str, Any]:
        """Poll the rollout until ``cond(status)``; fail at once should it end first."""
        return running_until(self.url, cond, what, seconds)

    def arms(self) -> dict[str, str]:
        """Every upstream's arm now, by name."""
        return self.thread.run(lambda: {n: u.arm for n, u in self.gateway.pool.upstreams.items()})


def get_rollout(url: str) -> dict[str, Any]:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("GET", "/bastion/rollout")
        resp = conn.getresponse()
        body = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, body
    rollout = body["rollout"]
    assert rollout is not None, "no rollout on this gateway"
    return dict(rollout)


def running_until(
    url: str, cond: Callable[[dict[str, Any]], bool], what: str, seconds: float = 60.0
) -> dict[str, Any]:
    """Poll the rollout at ``url`` until ``cond(status)``; fail at once should it end
    first (with its reason), instead of waiting out the deadline."""

    def check() -> dict[str, Any] | None:
        r = get_rollout(url)
        if cond(r):
            return r
        if r["status"] not in ("starting", "running"):
            raise AssertionError(
                f"waiting for {what}, the rollout ended: {r['status']}: {r['reason']}"
            )
        return None

    return dict(wait_for(check, what, seconds))


# -- a `bastion serve` process ------------------------------------------------------------


@contextlib.contextmanager
def bastion_serve(world: RolloutWorld) -> Iterator[subprocess.Popen[bytes]]:
    """``bastion serve`` on the world's manifest, until the block ends (SIGKILL after a
    SIGTERM grace, so a test that kills it first is fine)."""
    log = (world.root / "serve.log").open("ab")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bastion", "serve", "-f", str(world.manifest_path)],
        cwd=world.dir,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://127.0.0.1:{world.port}"
        wait_for(lambda: proc.poll() is not None or _ready(url), "bastion serve to listen", 60)
        assert proc.poll() is None, (world.root / "serve.log").read_text()[-3000:]
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()


def _ready(url: str) -> bool:
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=2)
    try:
        conn.request("GET", "/bastion/status")
        resp = conn.getresponse()
        body = json.loads(resp.read())
    except OSError:
        return False
    finally:
        conn.close()
    # listening, and a replica has passed its probe
    ups = body.get("pool", {}).get("upstreams", [])
    return resp.status == 200 and any(not u.get("needs_probe", True) for u in ups)


# -- load -----------------------------------------------------------------------------------


@dataclass
class Answer:
    user: str
    backend: str
    content: str
    via: str  # openai or http
    started: float  # time.monotonic() when the request was sent: its arm was chosen then


@dataclass
class Load:
    """Client threads against ``url`` until ``stop()``: ``openai_threads`` with the real
    ``openai`` client and ``http_threads`` with ``http.client``, ``users`` distinct
    ``x-bastion-user`` values, inputs from the example's rows; randomness from ``seed``."""

    url: str
    inputs: list[str]
    seed: int
    openai_threads: int = 1
    http_threads: int = 3
    users: int = 200
    answers: list[Answer] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __enter__(self) -> Load:
        n = 0
        for kind, count in (("openai", self.openai_threads), ("http", self.http_threads)):
            for _ in range(count):
                rng = random.Random(self.seed * 1000 + n)
                n += 1
                target = self._openai if kind == "openai" else self._http
                t = threading.Thread(target=target, args=(rng,), daemon=True)
                t.start()
                self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)
        self._threads.clear()

    @property
    def count(self) -> int:
        return len(self.answers) + len(self.failures)

    def wait(self, n: int, seconds: float = 60.0) -> None:
        start = self.count
        wait_for(lambda: self.count - start >= n, f"{n} more client requests", seconds)

    def _pick(self, rng: random.Random) -> tuple[str, str]:
        return f"user-{rng.randrange(self.users)}", self.inputs[rng.randrange(len(self.inputs))]

    def _keep(self, answer: Answer) -> None:
        with self._lock:
            self.answers.append(answer)

    def _fail(self, what: str) -> None:
        with self._lock:
            self.failures.append(what)

    def _openai(self, rng: random.Random) -> None:
        client = openai.OpenAI(
            base_url=self.url + "/v1", api_key="unused", max_retries=0, timeout=10
        )
        try:
            while not self._stop.is_set():
                user, content = self._pick(rng)
                started = time.monotonic()
                try:
                    raw = client.chat.completions.with_raw_response.create(
                        model="digits",
                        messages=[{"role": "user", "content": content}],
                        extra_headers={"x-bastion-user": user},
                    )
                    reply = raw.parse()
                except openai.APIError as exc:
                    self._fail(f"openai: {exc!r}")
                    continue
                backend = raw.headers.get("x-bastion-backend", "")
                text = reply.choices[0].message.content or ""
                self._keep(Answer(user, backend, text, "openai", started))
        finally:
            client.close()

    def _http(self, rng: random.Random) -> None:
        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            while not self._stop.is_set():
                user, content = self._pick(rng)
                body = json.dumps(
                    {"model": "digits", "messages": [{"role": "user", "content": content}]}
                )
                started = time.monotonic()
                try:
                    conn.request(
                        "POST",
                        "/v1/chat/completions",
                        body=body,
                        headers={"Content-Type": "application/json", "x-bastion-user": user},
                    )
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as exc:
                    self._fail(f"http: {exc!r}")
                    conn.close()
                    conn = http.client.HTTPConnection(host, int(port), timeout=10)
                    continue
                if resp.status != 200:
                    self._fail(f"http: {resp.status} {data[:200]!r}")
                    continue
                text = json.loads(data)["choices"][0]["message"]["content"] or ""
                backend = resp.getheader("x-bastion-backend") or ""
                self._keep(Answer(user, backend, text, "http", started))
        finally:
            conn.close()

    # -- what the clients saw -------------------------------------------------------------
    def from_candidate(self) -> list[Answer]:
        return [a for a in self.answers if CANDIDATE_MARK in a.backend]

    def sent_after(self, t: float) -> list[Answer]:
        return [a for a in self.answers if a.started > t]

    def sent_before(self, t: float) -> list[Answer]:
        return [a for a in self.answers if a.started < t]

    def vias(self) -> set[str]:
        return {a.via for a in self.answers}


def _collapse_toward_one_label(
    weights: Path, meta: Path, inputs: list[str], seed: int, share: float = 0.5
) -> None:
    """Raise one label's output bias in the model at ``weights`` until it predicts that
    label for at least ``share`` of ``inputs`` (the label drawn from ``seed``)."""
    import numpy as np
    from safetensors.numpy import load_file, save_file

    from bastion.serve._mlp import Mlp

    x = np.array([[float(v) for v in row.split(",")] for row in inputs], dtype=np.float32)
    tensors = load_file(str(weights))
    last = max(int(k.split(".")[0]) for k in tensors)
    label = random.Random(seed).randrange(tensors[f"{last}.bias"].shape[0])
    lift = 1.0
    while True:
        model = Mlp.from_bytes(weights.read_bytes(), meta.read_bytes(), "skewed")
        if float((model.logits(x).argmax(axis=1) == label).mean()) >= share:
            return
        tensors[f"{last}.bias"][label] += lift
        lift *= 2
        save_file(tensors, str(weights))


def failing_checks(event_data: dict[str, Any]) -> set[str]:
    """The names of the checks a rollout event's verdict blames: those that failed, or, when
    none did (a step's extensions ran out with checks beyond their tolerance but not yet
    significant: a rollback too, docs/rollout.md), those ``regressed``."""
    checks = (event_data.get("verdict") or {}).get("checks", [])
    failed = {c["name"] for c in checks if c["outcome"] == "fail"}
    return failed or {c["name"] for c in checks if c.get("regressed")}


__all__ = [
    "CANDIDATE_MARK",
    "SERVICE",
    "Answer",
    "LibraryGateway",
    "Load",
    "RolloutWorld",
    "bastion_serve",
    "failing_checks",
    "free_port",
    "get_rollout",
    "running_until",
    "wait_for",
]
