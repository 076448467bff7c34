"""A replica in an S3 bucket (AWS, or any S3 server): the ``Store`` for ``s3://`` URLs.

Owns: the S3 form of one replica (``<prefix>/<key>`` objects, the vault's keys as they
are; ``<prefix>/tmp/<name>.lock`` lease objects for the named locks, under ``tmp/``
where no key can be), the boto3 clients that reach it, and how each ``Store`` promise
is kept on a service that has no rename, no flock and no fsync:

- **Write once.** A put is ``PutObject`` with ``If-None-Match: *``: the server refuses
  it (412) when the key exists, atomically across every writer on every host. A value of
  ``multipart_threshold`` bytes or more is uploaded in parts by boto3's transfer manager
  (parallel parts, each retried alone), which cannot send ``If-None-Match``; those are
  written head-then-put: a HEAD first, then the upload. That is a race only between two
  writers of the same key at the same moment, and the vault's big values are
  content-addressed chunks (both writers write the same bytes); its version documents
  are small and written under the publish lock. ``?write_once=head`` makes every put
  head-then-put, for a server that ignores conditional writes. S3 shows a value whole or
  not at all (an object appears when its upload completes), so a reader never sees a
  part. ``replace=True`` (the vault's repair) is a plain PUT.
- **Checksums.** Every put asks for a CRC32 checksum (``ChecksumAlgorithm``), which the
  server checks against the bytes it received and keeps; every get asks for it back
  (``ChecksumMode``) and botocore checks the bytes it read against it. Every value also
  carries its BLAKE3 in its metadata (``x-amz-meta-bastion-blake3``), checked on every
  get: that covers multipart objects too (whose CRC is a checksum of part checksums,
  which botocore does not check) and an object replaced behind Bastion's back under the
  old metadata. A mismatch is an ``IntegrityError`` (the vault then reads another
  replica and repairs this one); an object without the metadata (written by something
  else) is returned as it is, for the vault's own hashes to judge.
- **Failures.** Every request goes through botocore's ``standard`` retry mode (a few
  attempts with jittered backoff, for throttling, 5xx and dropped connections), with
  short connect and read timeouts; what still fails is an ``UnavailableError`` naming
  the replica, the key and the cause, so the vault drops this replica out of a write
  and goes on degraded. ``available()`` is one ``HeadBucket`` through a second client
  with one attempt and 1 s connect and read timeouts, so a replica that is down is
  known fast and never holds up a commit; "down" is then kept for ``recheck_s`` (2 s)
  before the next probe.
- **Durable.** A put returns when S3 has acknowledged it, which is durable, so ``sync``
  has nothing to flush; ``sync(keys)`` checks (HEAD) the keys it was not the one to
  write in this process, so a flush of a missing value still fails.
- **Locks.** S3 has no lock. ``lock(name)`` is a *lease*: an object created with
  ``If-None-Match: *`` (one creator wins), renewed by its holder every ``lease_s / 3``
  with ``If-Match`` on its ETag, and deleted with ``If-Match`` on release. A lease not
  renewed for ``lease_s`` (its holder died or lost the network) may be taken over, with
  ``If-Match`` on the stale ETag, so of two processes that find it stale one wins. Age
  is measured on the server's clock (its ``Date`` header against the lease's
  ``LastModified``), so host clocks need not agree. Its limit, as for any lease: a
  holder paused longer than ``lease_s`` (SIGSTOP, a VM freeze) may find its lock taken;
  ``statistics`` cannot show that, so the renewal thread counts it in ``leases_lost``.
- **Object Lock** (``?object_lock=compliance&retain_days=N``): every value is put with
  ``ObjectLockMode=COMPLIANCE`` and a retain-until date N days on, in a bucket with
  Object Lock enabled (made so when this store creates the bucket; an existing bucket
  without it makes every put fail, clearly). Nobody, the bucket's owner and root
  included, can then delete or overwrite that version before the date: the replica is
  append-only for real. ``delete`` of a locked key fails (``PermissionError``, which the
  vault's gc reports for that replica) without asking; a repair writes a new version
  over a damaged one, which stays locked until its date too.
- **Cleanup.** Multipart uploads under the prefix started more than an hour ago (a
  writer killed midway) are aborted; a running upload of one chunk takes seconds.

Must never: put a credential in a URL, a message or an event (they come from the AWS
credential chain only), replace a value unless told to, return bytes that failed a
checksum, or reach a key outside its prefix.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import socket
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

import blake3

from bastion.errors import (
    IntegrityError,
    InvalidNameError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from bastion.store._protocol import Buffer, StoreStatistics
from bastion.store._url import ReplicaUrl, parse_replica_url

__all__ = ["S3Store"]

_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._@-]*(/[A-Za-z0-9_][A-Za-z0-9._@-]*)*$")
_TMP = "tmp"
_LOCK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
_META = "bastion-blake3"
# S3's smallest part is 5 MiB; at 8 MiB (boto3's own default) a value of the vault's
# small chunking (1 MiB average, 4 MiB at most) is one request, and a big checkpoint
# chunk (up to 16 MiB) goes in parallel parts.
_MULTIPART = 8 << 20
_STALE_UPLOAD_S = 3600.0
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
_EXISTS = {"412", "PreconditionFailed"}
_CONFLICT = {"409", "ConditionalRequestConflict", "OperationAborted"}


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _why(exc: BaseException) -> str:
    """A failure in words, without anything from the request (no credential is in a
    botocore message; a ClientError's is the server's code and message)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict) and "Error" in response:
        err = response["Error"]
        return f"{err.get('Code', '?')}: {err.get('Message', '') or 'no message'}"
    name = type(exc).__name__
    if name == "NoCredentialsError":
        return (
            "no AWS credentials found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
            "AWS_PROFILE or ?profile=, or use an instance role)"
        )
    return f"{name}: {exc}"


class _PartsReader(io.RawIOBase):
    """The concatenation of ``parts`` as a seekable file, without joining them (the
    transfer manager reads a big value part by part, and seeks back to retry one)."""

    def __init__(self, views: Sequence[memoryview]) -> None:
        super().__init__()
        self._views = views
        self._starts: list[int] = []
        at = 0
        for view in views:
            self._starts.append(at)
            at += len(view)
        self._size = at
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, min(self._size, base + offset))
        return self._pos

    def readinto(self, buffer: Any) -> int:
        out = memoryview(buffer).cast("B")
        done = 0
        for start, view in zip(self._starts, self._views, strict=True):
            end = start + len(view)
            if end <= self._pos or done >= len(out):
                continue
            offset = self._pos - start
            take = min(len(view) - offset, len(out) - done)
            out[done : done + take] = view[offset : offset + take]
            done += take
            self._pos += take
        return done


class S3Store:
    """One replica in an S3 bucket under a prefix (see the module). Thread-safe; safe
    across processes and hosts (write-once by the server, leases for locks).

    ``url``: ``s3://bucket/prefix`` with the options of ``S3_OPTIONS``. ``create``:
    make the bucket when it is missing (with Object Lock if the URL asks for it), at the
    first request that finds it missing: opening a store does no I/O, so a vault whose
    S3 endpoint is down opens and runs degraded. ``lease_s``: how long a lock holder
    that stopped renewing keeps its lock. ``max_attempts``: botocore's attempts per
    request (the first included). ``recheck_s``: how long ``available()`` keeps the
    answer "down" before it probes again.
    """

    def __init__(
        self,
        url: str | ReplicaUrl,
        *,
        create: bool = True,
        multipart_threshold: int = _MULTIPART,
        lease_s: float = 20.0,
        max_attempts: int = 3,
        recheck_s: float = 2.0,
    ) -> None:
        parsed = url if isinstance(url, ReplicaUrl) else parse_replica_url(url)
        if parsed.scheme != "s3" or parsed.problem is not None:
            raise UsageError(f"vault replica {parsed.url!r}: {parsed.problem or 'not s3://'}")
        self._parsed = parsed
        self._url = parsed.url
        self.bucket = str(parsed.bucket)
        self._base = f"{parsed.prefix}/" if parsed.prefix else ""
        self._create = create
        self.multipart_threshold = max(multipart_threshold, 5 << 20)
        self.lease_s = lease_s
        self._attempts = max_attempts
        self.recheck_s = recheck_s
        self._down_until = 0.0
        retain = parsed.option("retain_days")
        self.retain_days = int(retain) if retain else None
        self._write_once = parsed.option("write_once") or "conditional"
        self._connect_s = float(parsed.option("connect_timeout") or 3)
        self._read_s = float(parsed.option("read_timeout") or 30)
        self._lock = threading.Lock()
        self._stats: dict[str, int] = {n: 0 for n in asdict(StoreStatistics("")) if n != "url"}
        #: leases this process held and found taken over (its renewal came too late)
        self.leases_lost = 0
        self._thread_locks: dict[str, threading.Lock] = {}
        self._clients: dict[str, Any] = {}
        self._transfer: Any = None
        self._bucket_checked = False
        # keys this process wrote or found (a flush of them need not ask the server)
        self._known: set[str] = set()

    # ------------------------------------------------------------------ clients

    def _client(self, kind: str = "main") -> Any:
        """The boto3 client (``main``: retries and the configured timeouts; ``probe``:
        one attempt, short timeouts). Made on first use: a session reads the AWS
        configuration files, and creating a client costs tens of milliseconds."""
        with self._lock:
            found = self._clients.get(kind)
            if found is not None:
                return found
            try:
                import boto3
                from botocore.config import Config
            except ImportError:  # pragma: no cover - the s3 extra is not installed
                raise UsageError(
                    f"vault replica {self._url}: S3 replicas need boto3 (pip install 'bastion[s3]')"
                ) from None
            profile = self._parsed.option("profile")
            session = boto3.session.Session(profile_name=profile)
            region = self._parsed.option("region") or session.region_name or "us-east-1"
            endpoint = self._parsed.endpoint
            custom = bool(
                endpoint
                or os.environ.get("AWS_ENDPOINT_URL_S3")
                or os.environ.get("AWS_ENDPOINT_URL")
            )
            probe = kind == "probe"
            config = Config(
                region_name=region,
                connect_timeout=1.0 if probe else self._connect_s,
                read_timeout=1.0 if probe else self._read_s,
                retries={
                    "mode": "standard",
                    "total_max_attempts": 1 if probe else self._attempts,
                },
                max_pool_connections=64,
                tcp_keepalive=True,
                request_checksum_calculation="when_supported",
                response_checksum_validation="when_supported",
                # A server of one's own (SeaweedFS, MinIO, moto) has no per-bucket DNS.
                s3={"addressing_style": "path"} if custom else {},
            )
            client = session.client("s3", endpoint_url=endpoint, config=config)
            self._clients[kind] = client
            return client

    def _transfers(self) -> Any:
        client = self._client()
        with self._lock:
            if self._transfer is None:
                from boto3.s3.transfer import TransferConfig, create_transfer_manager

                config = TransferConfig(
                    multipart_threshold=self.multipart_threshold,
                    multipart_chunksize=self.multipart_threshold,
                    max_concurrency=8,
                    use_threads=True,
                )
                self._transfer = create_transfer_manager(client, config)
            return self._transfer

    # ------------------------------------------------------------------- basics

    @property
    def url(self) -> str:
        return self._url

    @property
    def worker_url(self) -> None:
        # Any process with the same AWS configuration would reach the same bucket, but
        # the vault's ingest worker processes write one object at a time each, and an
        # S3 put waits on the network: the vault's I/O threads keep 16 in flight, which
        # measured faster (benchmarks/scale_s3.py). So the vault stays on threads.
        return None

    @property
    def parsed(self) -> ReplicaUrl:
        """The replica's URL as parsed (``bucket``, ``prefix``, ``endpoint_host``)."""
        return self._parsed

    def __repr__(self) -> str:
        return f"S3Store({self._url!r})"

    def _key(self, key: str) -> str:
        if not _KEY.match(key) or ".." in key.split("/") or key.split("/", 1)[0] == _TMP:
            raise InvalidNameError(f"store key {key!r} is not a safe relative key")
        return f"{self._base}{key}"

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._stats[name] += n

    def _unavailable(self, what: str, exc: BaseException) -> UnavailableError:
        return UnavailableError(f"vault replica {self._url}: {what}: {_why(exc)}")

    def _errors(self) -> tuple[type[BaseException], ...]:
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        return (BotoCoreError, ClientError, Boto3Error)

    def _ensure_bucket(self) -> None:
        """Make the bucket if it is missing and ``create`` allows (once per store);
        with Object Lock asked for, check the bucket has it."""
        if self._bucket_checked:
            return
        client = self._client()
        try:
            client.head_bucket(Bucket=self.bucket)
        except self._errors() as exc:
            if _code(exc) not in _NOT_FOUND | {"NoSuchBucket"} or not self._create:
                raise self._unavailable(f"bucket {self.bucket}", exc) from None
            args: dict[str, Any] = {"Bucket": self.bucket}
            region = client.meta.region_name
            if region and region != "us-east-1":
                args["CreateBucketConfiguration"] = {"LocationConstraint": region}
            if self.retain_days is not None:
                args["ObjectLockEnabledForBucket"] = True
            try:
                client.create_bucket(**args)
            except self._errors() as made:
                if _code(made) not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                    raise self._unavailable(f"cannot create bucket {self.bucket}", made) from None
        if self.retain_days is not None:
            try:
                got = client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = got["ObjectLockConfiguration"].get("ObjectLockEnabled") == "Enabled"
            except self._errors():
                enabled = False
            if not enabled:
                raise UnavailableError(
                    f"vault replica {self._url}: bucket {self.bucket} has no Object Lock, "
                    "so object_lock=compliance cannot be kept (make a bucket with "
                    "--object-lock-enabled-for-bucket, or drop ?object_lock)"
                )
        self._bucket_checked = True

    def available(self) -> bool:
        # A probe of a hung server takes its whole timeout; the answer "down" is kept
        # for recheck_s, so a degraded vault asking once a second (the replica set's
        # cache) does not spend most of each second waiting on it.
        if time.monotonic() < self._down_until:
            return False
        try:
            self._client("probe").head_bucket(Bucket=self.bucket)
        except Exception as exc:  # available() never raises
            if self._create and _code(exc) in _NOT_FOUND | {"NoSuchBucket"}:
                self._bucket_checked = False  # it went: make it again
                try:
                    self._ensure_bucket()
                except (UnavailableError, UsageError):
                    return self._down()
                return True
            return self._down()
        return True

    def _down(self) -> bool:
        self._down_until = time.monotonic() + self.recheck_s
        return False

    # --------------------------------------------------------------------- puts

    def put(
        self, key: str, parts: Sequence[Buffer], *, replace: bool = False, durable: bool = True
    ) -> bool:
        del durable  # an acknowledged S3 put is durable
        full = self._key(key)
        views = [memoryview(p).cast("B") for p in parts]
        size = sum(len(v) for v in views)
        multipart = size >= self.multipart_threshold
        self._ensure_bucket()
        if not replace and (multipart or self._write_once == "head") and self.has(key):
            self._count("put_existing")
            return False
        hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= (8 << 20) else 1)
        for view in views:
            hasher.update(view)
        extra: dict[str, Any] = {
            "Metadata": {_META: hasher.hexdigest()},
            "ChecksumAlgorithm": "CRC32",
        }
        if self.retain_days is not None:
            extra["ObjectLockMode"] = "COMPLIANCE"
            extra["ObjectLockRetainUntilDate"] = datetime.now(UTC) + timedelta(
                days=self.retain_days
            )
        try:
            try:
                self._upload(full, views, extra, multipart=multipart, replace=replace)
            except self._errors() as exc:
                if _code(exc) != "NoSuchBucket" or not self._create:
                    raise
                # The bucket went (a server that lost everything): make it again, once.
                self._bucket_checked = False
                self._ensure_bucket()
                self._upload(full, views, extra, multipart=multipart, replace=replace)
        except _Exists:
            self._count("put_existing")
            with self._lock:
                self._known.add(key)
            return False
        except self._errors() as exc:
            self._count("errors")
            raise self._unavailable(f"cannot put {key}", exc) from None
        except BaseException:
            self._count("errors")
            raise
        with self._lock:
            self._stats["puts"] += 1
            self._stats["put_bytes"] += size
            if len(self._known) > 1_000_000:
                self._known.clear()  # a bound on memory; a flush then asks the server
            self._known.add(key)
        return True

    def _upload(
        self,
        full: str,
        views: Sequence[memoryview],
        extra: dict[str, Any],
        *,
        multipart: bool,
        replace: bool,
    ) -> None:
        if multipart:
            self._transfers().upload(_PartsReader(views), self.bucket, full, extra).result()
        else:
            self._put_object(full, b"".join(views), extra, conditional=not replace)

    def _put_object(
        self, full: str, body: bytes, extra: dict[str, Any], *, conditional: bool
    ) -> None:
        args = {"Bucket": self.bucket, "Key": full, "Body": body, **extra}
        if conditional and self._write_once == "conditional":
            args["IfNoneMatch"] = "*"
        for attempt in range(4):
            try:
                self._client().put_object(**args)
                return
            except self._errors() as exc:
                code = _code(exc)
                if code in _EXISTS and conditional:
                    raise _Exists from None
                if code not in _CONFLICT or attempt == 3:
                    raise
                # Another writer's conditional put of this key is in flight (AWS answers
                # 409 then): wait for it to end, then ask again.
                time.sleep(0.05 * 2**attempt)

    # -------------------------------------------------------------------- reads

    def _head(self, key: str) -> dict[str, Any]:
        full = self._key(key)
        try:
            head: dict[str, Any] = self._client().head_object(Bucket=self.bucket, Key=full)
        except self._errors() as exc:
            if _code(exc) in _NOT_FOUND:
                raise NotFoundError(f"{key} is not on vault replica {self._url}") from None
            raise self._unavailable(f"cannot look at {key}", exc) from None
        return head

    def get(self, key: str) -> bytes:
        from botocore.exceptions import FlexibleChecksumError

        full = self._key(key)
        try:
            got = self._client().get_object(Bucket=self.bucket, Key=full, ChecksumMode="ENABLED")
            data: bytes = got["Body"].read()
        except FlexibleChecksumError as exc:
            raise IntegrityError(
                f"vault replica {self._url}: {key} failed its S3 checksum on read ({exc})"
            ) from None
        except self._errors() as exc:
            if _code(exc) in _NOT_FOUND:
                raise NotFoundError(f"{key} is not on vault replica {self._url}") from None
            raise self._unavailable(f"cannot get {key}", exc) from None
        expected = got.get("Metadata", {}).get(_META)
        if expected is not None:
            hasher = blake3.blake3(max_threads=blake3.blake3.AUTO if len(data) >= (8 << 20) else 1)
            actual = hasher.update(data).hexdigest()
            if actual != expected:
                raise IntegrityError(
                    f"vault replica {self._url}: {key} hashes to {actual[:16]}..., its "
                    f"metadata records {expected[:16]}... (damaged in the bucket or on the way)"
                )
        with self._lock:
            self._stats["gets"] += 1
            self._stats["get_bytes"] += len(data)
        return data

    def has(self, key: str) -> bool:
        try:
            self._head(key)
        except NotFoundError:
            return False
        return True

    def size(self, key: str) -> int:
        return int(self._head(key)["ContentLength"])

    def age(self, key: str) -> float:
        # The server's LastModified is the object's birth (a value is written once); a
        # repair's rewrite makes it young again, which only spares it from gc longer.
        modified: datetime = self._head(key)["LastModified"]
        return time.time() - modified.timestamp()

    def list(self, prefix: str = "") -> Iterator[str]:
        if prefix and not prefix.endswith("/"):
            raise InvalidNameError(f"store prefix {prefix!r} must end with '/'")
        if prefix:
            self._key(prefix.rstrip("/"))
        paginator = self._client().get_paginator("list_objects_v2")
        start = len(self._base)
        found: list[str] = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=f"{self._base}{prefix}"):
                for item in page.get("Contents", ()):
                    key = item["Key"][start:]
                    if key.split("/", 1)[0] != _TMP:
                        found.append(key)
        except self._errors() as exc:
            if _code(exc) == "NoSuchBucket":
                return  # nothing was ever written here
            raise self._unavailable(f"cannot list {prefix or '/'}", exc) from None
        # S3 lists in UTF-8 byte order, which is sorted() for these ASCII keys.
        yield from found

    # -------------------------------------------------------------- the rest

    def delete(self, key: str) -> bool:
        full = self._key(key)
        try:
            head = self._head(key)
        except NotFoundError:
            return False
        client = self._client()
        until = head.get("ObjectLockRetainUntilDate")
        if until is not None and until.timestamp() > time.time():
            raise PermissionError(
                errno.EPERM,
                f"vault replica {self._url}: {key} is under S3 Object Lock "
                f"({head.get('ObjectLockMode', 'COMPLIANCE')}) until {until.isoformat()}; "
                "nobody can delete it before then (the replica is append-only)",
            )
        try:
            if self.retain_days is None:
                client.delete_object(Bucket=self.bucket, Key=full)
            else:
                # A versioned bucket: a plain delete would only hide the value behind a
                # delete marker; remove every version of the key (the server refuses
                # any still under its lock).
                versions = client.list_object_versions(Bucket=self.bucket, Prefix=full)
                for item in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
                    if item["Key"] == full:
                        client.delete_object(
                            Bucket=self.bucket, Key=full, VersionId=item["VersionId"]
                        )
        except self._errors() as exc:
            if _code(exc) == "AccessDenied" and self.retain_days is not None:
                raise PermissionError(
                    errno.EPERM,
                    f"vault replica {self._url}: the server refused to delete {key}: "
                    f"{_why(exc)} (Object Lock keeps it)",
                ) from None
            raise self._unavailable(f"cannot delete {key}", exc) from None
        with self._lock:
            self._known.discard(key)
            self._stats["deletes"] += 1
        return True

    def sync(self, keys: Collection[str] | None = None) -> None:
        if keys is None:
            return  # every acknowledged put is durable already
        with self._lock:
            unknown = [k for k in keys if k not in self._known]
        for key in unknown:
            self._head(key)  # NotFoundError names the missing one
            with self._lock:
                self._known.add(key)

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """A lease object (see the module): every process and host that reaches this
        bucket takes the same lock. Threads of this process queue on a local lock
        first, so only one of them polls the bucket."""
        if not _LOCK_NAME.match(name):
            raise InvalidNameError(f"lock name {name!r} must be lower-case letters and digits")
        with self._lock:
            local = self._thread_locks.setdefault(name, threading.Lock())
        with local:
            self._ensure_bucket()
            lease = _Lease(self, f"{self._base}{_TMP}/{name}.lock")
            lease.acquire()
            try:
                yield
            finally:
                lease.release()

    def cleanup(self) -> int:
        """Abort multipart uploads under the prefix that began over an hour ago."""
        client = self._client()
        removed = 0
        try:
            pages = client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._base
            )
            for page in pages:
                for upload in page.get("Uploads", ()):
                    if time.time() - upload["Initiated"].timestamp() < _STALE_UPLOAD_S:
                        continue  # a writer may still be at it
                    client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    removed += 1
        except self._errors() as exc:
            if _code(exc) == "NoSuchBucket":
                return removed
            raise self._unavailable("cannot clean up multipart uploads", exc) from None
        return removed

    def statistics(self) -> StoreStatistics:
        with self._lock:
            return StoreStatistics(self._url, **self._stats)

    def absorb_statistics(self, delta: StoreStatistics) -> None:
        with self._lock:
            for name in self._stats:
                self._stats[name] += getattr(delta, name)


class _Exists(Exception):
    """A conditional put found the key there already."""


class _Lease:
    """One holding of a lock object (see the module's **Locks**)."""

    def __init__(self, store: S3Store, key: str) -> None:
        self._store = store
        self._key = key
        self._etag = ""
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        self._body = json.dumps(
            {
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "lease_s": store.lease_s,
                "token": os.urandom(8).hex(),  # two holders' bodies always differ
            }
        ).encode()

    def _put(self, **condition: str) -> None:
        client = self._store._client()
        got = client.put_object(
            Bucket=self._store.bucket, Key=self._key, Body=self._body, **condition
        )
        self._etag = str(got["ETag"])

    def acquire(self) -> None:
        errors = self._store._errors()
        delay = 0.02
        while True:
            try:
                self._put(IfNoneMatch="*")
                break
            except errors as exc:
                if _code(exc) not in _EXISTS | _CONFLICT:
                    raise self._store._unavailable(f"cannot take lock {self._key}", exc) from None
            if self._take_over_if_stale():
                break
            time.sleep(delay)
            delay = min(delay * 2, 0.5)
        self._renewer = threading.Thread(target=self._renew, name="s3-lease", daemon=True)
        self._renewer.start()

    def _take_over_if_stale(self) -> bool:
        client = self._store._client()
        errors = self._store._errors()
        try:
            head = client.head_object(Bucket=self._store.bucket, Key=self._key)
        except errors as exc:
            if _code(exc) in _NOT_FOUND:
                return False  # released meanwhile: try to create it again
            raise self._store._unavailable(f"cannot look at lock {self._key}", exc) from None
        date = head.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
        now = parsedate_to_datetime(date).timestamp() if date else time.time()
        if now - head["LastModified"].timestamp() <= self._store.lease_s:
            return False
        try:
            self._put(IfMatch=str(head["ETag"]))  # of two that found it stale, one wins
        except errors:
            return False
        return True

    def _renew(self) -> None:
        errors = self._store._errors()
        while not self._stop.wait(self._store.lease_s / 3):
            try:
                self._put(IfMatch=self._etag)
            except errors as exc:
                if _code(exc) in _EXISTS | _NOT_FOUND:
                    with self._store._lock:
                        self._store.leases_lost += 1
                    return  # taken over: this holder was presumed dead
                # the bucket did not answer: try again at the next tick

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        with contextlib.suppress(*self._store._errors()):
            self._store._client().delete_object(
                Bucket=self._store.bucket, Key=self._key, IfMatch=self._etag
            )
