"""The replica set: the only holder of the vault's ``Store``s, and every loop over them.

Owns: which replicas are read first (the manifest's order, with a health-aware
preference), the one "first copy that verifies, repair the rest" path (reads of chunks
and documents) and its exhaustive form for scrub (every copy checked, the bad ones
repaired from a good one), repair itself, put-to-all with a write quorum and degraded
mode (``Write``), listing, sweeping and housekeeping across replicas, the cross-process
publish lock when the vault has no state directory, the ``vault.repaired`` /
``vault.repair_failed`` / ``vault.integrity.failed`` / ``vault.unrecoverable`` /
``vault.degraded`` events, and ``ReplicaSetStatistics``.

Must never: serve or copy bytes that did not verify, repair from anything but a copy
that verified, count a write as done on a replica it did not reach, or look behind the
``Store`` protocol (no backend is special here).

Read order: the reachable replicas (``Store.available()``, asked at most once a second)
in the manifest's order, except that a replica that failed recently (a read raised, a
copy did not verify, or a read took longer than ``slow_s``) is tried after the others
until ``cooldown_s`` has passed since its last failure, or until it serves a good copy.
Unreachable replicas are not tried at all. The preference only reorders: every
reachable replica is still tried before a read gives up, so it can never lose data, and
it keeps the healthy replicas' order stable (the manifest's), so which copy is read is
predictable. Defaults: ``cooldown_s`` 30 s (long enough that a failing disk is not asked
first for every chunk of a restore, short enough that a replica back from a hiccup is
used again within a minute), ``slow_s`` 5 s (a local disk or NAS answers a chunk in
milliseconds to tens of them; five seconds is a replica in trouble).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Container, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Generic, NamedTuple, TypeVar, cast

from bastion import event_kinds as ek
from bastion.errors import (
    BastionError,
    IntegrityError,
    NotFoundError,
    UnavailableError,
    UsageError,
)
from bastion.events import NO_EVENTS, Emit
from bastion.store import Buffer, Store, StoreStatistics

__all__ = [
    "Checked",
    "Copy",
    "CopyCheck",
    "ReplicaSet",
    "ReplicaSetStatistics",
    "ReplicaStatistics",
    "Write",
]

_T = TypeVar("_T")
# A copy read ahead (scrub): its stored bytes, the read's error, or None (not listed there).
Copy = bytes | BaseException | None

_AVAILABLE_TTL_S = 1.0  # reads ask once per chunk; a replica failing in between is caught


class _Threads:
    """Kept threads that run one job per replica at once (a put, a flush) and return
    when every one has ended. Why: each replica's durable write is its own chain of
    fsyncs, each waiting on the disk; run at once, the replicas' chains overlap (and
    share journal commits when they share a filesystem) instead of adding up. Kept,
    because starting a thread costs about as much as a small fsync on a quiet disk.
    Made on first use, and again in a child after ``fork`` (threads do not survive
    it). A job only ever calls a ``Store``, never this pool, so a full pool cannot
    deadlock."""

    def __init__(self, workers: int) -> None:
        self._workers = workers
        self._lock = threading.Lock()
        self._pool: ThreadPoolExecutor | None = None
        os.register_at_fork(after_in_child=self._forget)

    def _forget(self) -> None:
        self._lock = threading.Lock()
        self._pool = None

    def run_all(self, jobs: Sequence[Callable[[], _T]]) -> list[_T]:
        """Run ``jobs`` at once (the first in this thread, the rest on the pool) and
        return their results in order, once every one has ended. The first job that
        raised raises."""
        if len(jobs) <= 1:
            return [job() for job in jobs]
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="vault-io")
            pool = self._pool
        futures = [pool.submit(job) for job in jobs[1:]]
        try:
            first = jobs[0]()
        finally:
            wait(futures)
        return [first, *(f.result() for f in futures)]


_POOL = _Threads(16)


@dataclass(frozen=True, slots=True)
class ReplicaStatistics:
    """One replica, as the set sees it.

    Attributes:
        url: the replica (``Store.url``).
        available: it answered ``available()`` at the last look (at most a second ago).
        demoted: it failed recently and is read after the others (see the module).
        failures: reads that raised, copies that did not verify, slow reads, and writes
            that failed, since the set was made.
        last_error: what the last failure was ("" if none).
        reads_served: verified reads this replica served.
        repairs: bad or missing copies rewritten on this replica.
        store: the backend's own counts (``StoreStatistics``).
    """

    url: str
    available: bool
    demoted: bool
    failures: int
    last_error: str
    reads_served: int
    repairs: int
    store: StoreStatistics


@dataclass(frozen=True, slots=True)
class ReplicaSetStatistics:
    """The replica set as a whole.

    Attributes:
        quorum: replicas a write must reach (1 unless ``vault.quorum`` says more).
        reachable: replicas reachable now.
        degraded: at least one replica is unreachable.
        integrity_failures: copies that failed verification on a read or a scrub.
        unrecoverable: keys found with no good copy on any replica (never served).
        repairs: copies rewritten from a good one, over every replica.
        repair_failures: repairs that could not be written.
        replicas: each replica, in the manifest's order.
    """

    quorum: int
    reachable: int
    degraded: bool
    integrity_failures: int
    unrecoverable: int
    repairs: int
    repair_failures: int
    replicas: tuple[ReplicaStatistics, ...]


@dataclass(slots=True)
class _Health:
    failures: int = 0
    last_error: str = ""
    demoted_until: float = 0.0
    served: int = 0
    repairs: int = 0


class CopyCheck(NamedTuple, Generic[_T]):
    """One replica's copy of a key, checked: ``value`` when it verified, else ``problem``.
    (A tuple: scrub makes one per object per replica.)"""

    store: Store
    stored: bytes | None
    value: _T | None
    problem: str | None


@dataclass(slots=True)
class Checked(Generic[_T]):
    """Every copy of one key (``ReplicaSet.check``): which is good, which were bad, and
    what repair did. ``good`` is None when no copy verified."""

    key: str
    copies: list[CopyCheck[_T]]
    good: bytes | None = None
    bad: list[tuple[Store, str]] = field(default_factory=list)
    repaired: int = 0
    repair_failed: list[tuple[str, str]] = field(default_factory=list)


class ReplicaSet:
    """The vault's replicas (see the module). Thread-safe.

    ``clock`` is monotonic seconds (read order and the availability cache); ``events``
    records repairs, integrity failures and degraded writes under ``subject``.
    """

    def __init__(
        self,
        stores: Sequence[Store],
        *,
        quorum: int | None = None,
        events: Emit = NO_EVENTS,
        subject: str = "vault",
        clock: Callable[[], float] = time.monotonic,
        cooldown_s: float = 30.0,
        slow_s: float = 5.0,
    ) -> None:
        if not stores:
            raise UsageError("a vault needs at least one replica (vault.replicas in bastion.yaml)")
        if quorum is not None and not 1 <= quorum <= len(stores):
            raise UsageError(
                f"vault quorum {quorum} cannot be met by {len(stores)} replicas "
                "(set vault.quorum between 1 and the number of vault.replicas)"
            )
        self.stores: tuple[Store, ...] = tuple(stores)
        self.quorum = quorum
        self.events = events
        self.subject = subject
        self.cooldown_s = cooldown_s
        self.slow_s = slow_s
        self._clock = clock
        self._lock = threading.Lock()
        self._health = {id(s): _Health() for s in self.stores}
        # The latest end of any demotion: once past, read_order is the manifest's order
        # without looking at any replica's health (the common, healthy case).
        self._demoted_until = 0.0
        self._available: tuple[float, tuple[Store, ...]] | None = None
        self._integrity_failures = 0
        self._unrecoverable = 0
        self._repair_failures = 0

    def __len__(self) -> int:
        return len(self.stores)

    def __repr__(self) -> str:
        return f"ReplicaSet({[s.url for s in self.stores]!r}, quorum={self.needed})"

    @property
    def needed(self) -> int:
        """Replicas a write must reach."""
        return self.quorum or 1

    def emit(self, kind: str, subject: str | None = None, **data: Any) -> None:
        """Record an event through the set's emitter (subject: the vault's, by default)."""
        self.events.emit(kind, subject or self.subject, **data)

    # ----------------------------------------------------------------- health

    def available(self) -> list[Store]:
        """Replicas reachable now, in the manifest's order (cached for a second)."""
        now = self._clock()
        cached = self._available
        if cached is not None and now - cached[0] < _AVAILABLE_TTL_S:
            return list(cached[1])
        found = tuple(s for s in self.stores if s.available())
        self._available = (now, found)
        return list(found)

    def unavailable(self) -> list[str]:
        """URLs of the replicas that cannot be reached now (asked afresh)."""
        return [s.url for s in self.stores if not s.available()]

    def read_order(self) -> list[Store]:
        """The reachable replicas in the order a read tries them (see the module)."""
        stores = self.available()
        now = self._clock()
        if now >= self._demoted_until:
            return stores
        with self._lock:
            late = [s for s in stores if self._health[id(s)].demoted_until > now]
        if not late:
            return stores
        return [s for s in stores if s not in late] + late

    def note_failure(self, store: Store, why: str) -> None:
        """Record that ``store`` failed: it is read after the others for ``cooldown_s``."""
        until = self._clock() + self.cooldown_s
        with self._lock:
            health = self._health[id(store)]
            health.failures += 1
            health.last_error = why
            health.demoted_until = until
            self._demoted_until = max(self._demoted_until, until)

    def _served(self, store: Store) -> None:
        with self._lock:
            health = self._health[id(store)]
            health.served += 1
            health.demoted_until = 0.0  # it answered with a good copy: healthy again

    # ------------------------------------------------------------------ reads

    def read(
        self,
        key: str,
        verify: Callable[[bytes], _T],
        *,
        what: str,
        required: bool,
        context: str = "",
    ) -> _T:
        """The first copy of ``key``, in read order, that ``verify`` accepts (it raises
        ``IntegrityError`` for a bad copy and returns what the caller wants); the copies
        tried before it that were bad are repaired from it.

        ``required``: the key must exist (a chunk a snapshot names): a copy missing on a
        replica is repaired too, and missing everywhere is data loss (``IntegrityError``).
        Otherwise (a document that may simply not be there) a missing copy is left alone
        and missing everywhere is ``NotFoundError``. ``UnavailableError`` if no replica is
        reachable. ``what`` names the key in messages.
        """
        stores = self.read_order()
        if not stores:
            raise UnavailableError(
                f"vault: no replica reachable to read {what} ({', '.join(self.unavailable())})"
            )
        bad: list[tuple[Store, str]] = []
        for store in stores:
            started = self._clock()
            try:
                stored = store.get(key)
            except NotFoundError:
                if required:
                    bad.append((store, "missing"))
                continue
            except (OSError, UnavailableError) as exc:
                self.note_failure(store, f"unreadable: {exc}")
                bad.append((store, f"unreadable: {exc}"))
                continue
            except IntegrityError as exc:  # the backend's own checksum failed (S3)
                self._integrity_failed(store, key, str(exc), context)
                bad.append((store, str(exc)))
                continue
            took = self._clock() - started
            try:
                value = verify(stored)
            except IntegrityError as exc:
                self._integrity_failed(store, key, str(exc), context)
                bad.append((store, str(exc)))
                continue
            if took > self.slow_s:
                self.note_failure(store, f"slow: a read took {took:.1f} s")
            else:
                self._served(store)
            for target, why in bad:
                self.repair(target, key, stored, why, context=context)
            return value
        if not bad:
            raise NotFoundError(f"vault: {what} is not on any reachable replica")
        self._lost(key, what, bad, context)
        raise IntegrityError(
            f"vault: {what} has no good copy on any replica ("
            + "; ".join(f"{s.url}: {why}" for s, why in bad)
            + "); it will not be served"
        )

    def check(
        self,
        key: str,
        verify: Callable[[bytes], _T],
        *,
        stores: Sequence[Store] | None = None,
        copies: Sequence[Copy] | None = None,
        repair: bool,
        required: bool = True,
        inferior: Callable[[_T], str | None] | None = None,
        context: str = "scrub",
    ) -> Checked[_T]:
        """Every copy of ``key`` checked (scrub): read now, or given as ``copies`` (one per
        store in ``stores``, read ahead by the caller). The good copy is the first that
        verifies; with ``repair`` every bad copy is rewritten from it.

        ``required``: a missing copy is bad, and no good copy at all is
        ``vault.unrecoverable``. ``inferior(value)``: a reason why a copy that verified
        is still worse than another (a damaged seal over the right content); such a copy
        is bad only when some other copy verified and is not inferior.
        """
        stores = list(self.available() if stores is None else stores)
        checked: list[CopyCheck[_T]] = []
        for index, store in enumerate(stores):
            copy: Copy
            if copies is None:
                try:
                    copy = store.get(key)
                except NotFoundError:
                    copy = None
                except (OSError, UnavailableError, IntegrityError) as exc:
                    copy = exc
            else:
                copy = copies[index]
            checked.append(self._check_copy(store, key, copy, verify, context))
        result = Checked(key, checked)
        good = [c for c in checked if c.problem is None]
        best = good[0] if good else None
        demoted: list[tuple[Store, str]] = []
        if inferior is not None and good:
            reasons = [(c, inferior(cast("_T", c.value))) for c in good]
            fine = [c for c, why in reasons if why is None]
            if fine:
                best = fine[0]
                demoted = [(c.store, why) for c, why in reasons if why is not None]
        result.bad = [
            (c.store, c.problem)
            for c in checked
            if c.problem is not None and (required or c.problem != "missing")
        ] + demoted
        if best is None:
            if required and result.bad:
                self._lost(key, key, result.bad, context)
            return result
        result.good = best.stored
        if repair and result.good is not None:
            for store, why in result.bad:
                if self.repair(store, key, result.good, why, context=context):
                    result.repaired += 1
                else:
                    result.repair_failed.append((store.url, why))
        return result

    def _check_copy(
        self, store: Store, key: str, copy: Copy, verify: Callable[[bytes], _T], context: str
    ) -> CopyCheck[_T]:
        if copy is None or isinstance(copy, NotFoundError):
            return CopyCheck(store, None, None, "missing")
        if isinstance(copy, IntegrityError):  # the backend's own checksum failed (S3)
            self._integrity_failed(store, key, str(copy), context)
            return CopyCheck(store, None, None, str(copy))
        if isinstance(copy, BaseException):
            self.note_failure(store, f"unreadable: {copy}")
            return CopyCheck(store, None, None, f"unreadable: {copy}")
        try:
            value = verify(copy)
        except (IntegrityError, NotFoundError, OSError) as exc:
            self._integrity_failed(store, key, str(exc), context)
            return CopyCheck(store, copy, None, str(exc))
        return CopyCheck(store, copy, value, None)

    def _integrity_failed(self, store: Store, key: str, error: str, context: str) -> None:
        with self._lock:
            self._integrity_failures += 1
        self.note_failure(store, error)
        self.emit(
            ek.VAULT_INTEGRITY_FAILED, key=key, replica=store.url, error=error, context=context
        )

    def _lost(self, key: str, what: str, bad: Sequence[tuple[Store, str]], context: str) -> None:
        with self._lock:
            self._unrecoverable += 1
        self.emit(
            ek.VAULT_UNRECOVERABLE,
            key=key,
            what=what,
            context=context,
            replicas={s.url: why for s, why in bad},
        )

    def repair(self, store: Store, key: str, good: bytes, why: str, *, context: str = "") -> bool:
        """Rewrite ``key`` on ``store`` with ``good`` (bytes that verified); True if done."""
        try:
            store.put(key, [good], replace=True, durable=True)
        except (OSError, BastionError) as exc:
            with self._lock:
                self._repair_failures += 1
            self.note_failure(store, f"repair failed: {exc}")
            self.emit(
                ek.VAULT_REPAIR_FAILED, key=key, replica=store.url, reason=why, error=str(exc)
            )
            return False
        with self._lock:
            self._health[id(store)].repairs += 1
        self.emit(ek.VAULT_REPAIRED, key=key, replica=store.url, reason=why, context=context)
        return True

    # -------------------------------------------------------------- listings

    def keys(self, prefix: str, stores: Sequence[Store] | None = None) -> list[str]:
        """Every key under ``prefix`` on any reachable replica (the union), sorted. A
        replica that fails to list is skipped (and read last for a while);
        ``UnavailableError`` if none could list."""
        found: set[str] = set()
        listed = 0
        for store in self.available() if stores is None else stores:
            try:
                found.update(store.list(prefix))
                listed += 1
            except (OSError, UnavailableError) as exc:
                self.note_failure(store, f"cannot list {prefix}: {exc}")
        if not listed:
            # Nothing answered: that is not "there is nothing" (NotFoundError).
            raise UnavailableError(
                f"vault: no replica reachable to list {prefix} "
                f"({', '.join(self.unavailable()) or 'every replica failed'})"
            )
        return sorted(found)

    def keys_each(self, prefix: str, stores: Sequence[Store]) -> list[tuple[Store, set[str]]]:
        """Each replica's keys under ``prefix`` (scrub, which checks every copy); a
        replica that cannot list is left out (and read last for a while)."""
        out = []
        for store in stores:
            try:
                out.append((store, set(store.list(prefix))))
            except (OSError, UnavailableError) as exc:
                self.note_failure(store, f"cannot list {prefix}: {exc}")
        return out

    def copies(
        self,
        key: str,
        stores: Sequence[Store],
        present: Sequence[Container[str]] | None = None,
        *,
        name: str = "",
    ) -> list[Copy]:
        """Every replica's stored bytes of ``key``, unverified (``check`` verifies them):
        the bytes, the read's error, or None where it is missing. ``present``: what each
        replica listed; a replica that did not list ``name`` is not asked."""
        out: list[Copy] = []
        for index, store in enumerate(stores):
            if present is not None and name not in present[index]:
                out.append(None)
                continue
            try:
                out.append(store.get(key))
            except NotFoundError:
                out.append(None)
            except (OSError, BastionError) as exc:
                out.append(exc)
        return out

    def put_missing(self, key: str, value: bytes, stores: Sequence[Store]) -> list[Store]:
        """Write ``key`` once on each of ``stores`` that lacks it (never replacing one
        that is there); the stores written now."""
        written = []
        for store in stores:
            try:
                if store.put(key, [value], durable=True):
                    written.append(store)
            except (OSError, BastionError) as exc:
                self.note_failure(store, f"cannot write {key}: {exc}")
        return written

    def delete(self, key: str) -> list[str]:
        """Remove ``key`` from every reachable replica; the URLs of the replicas that
        could not be asked (the key may still be there)."""
        failed = []
        for store in self.available():
            try:
                store.delete(key)
            except (OSError, UnavailableError) as exc:
                self.note_failure(store, f"cannot delete {key}: {exc}")
                failed.append(store.url)
        return failed

    def sweep(
        self, prefix: str, keep: Callable[[str], bool], *, min_age_s: float
    ) -> tuple[int, list[str]]:
        """On every reachable replica, delete each key under ``prefix`` that ``keep``
        refuses and that is older than ``min_age_s``; then clean up after dead writers.
        How many keys were deleted, and the URLs of replicas that failed midway."""
        removed = 0
        failed = []
        for store in self.available():
            try:
                for key in list(store.list(prefix)):
                    if keep(key):
                        continue
                    with contextlib.suppress(NotFoundError):
                        if store.age(key) < min_age_s:
                            continue  # may belong to a commit in flight
                        if store.delete(key):
                            removed += 1
                store.cleanup()
            except (OSError, UnavailableError) as exc:
                self.note_failure(store, f"sweep of {prefix} failed: {exc}")
                failed.append(store.url)
        return removed, failed

    @contextlib.contextmanager
    def lock(self, name: str) -> Iterator[None]:
        """The cross-process lock ``name`` on the first reachable replica in the
        manifest's order (every writer asks the same replica while it is up)."""
        for store in self.stores:
            if store.available():
                with store.lock(name):
                    yield
                return
        raise UnavailableError(f"vault: no replica reachable to take the {name} lock")

    # ----------------------------------------------------------------- writes

    def begin_write(self, what: str) -> Write:
        """A write to every reachable replica; ``UnavailableError`` unless the quorum is."""
        stores = self.available()
        if len(stores) < self.needed:
            raise UnavailableError(
                f"vault: {what}: {len(stores)} of {len(self.stores)} replicas reachable, "
                f"{self.needed} needed ({', '.join(self.unavailable())} down; bring it back "
                "or lower vault.quorum)"
            )
        return Write(self, stores, what)

    def statistics(self) -> ReplicaSetStatistics:
        now = self._clock()
        reachable = {id(s) for s in self.available()}
        with self._lock:
            replicas = tuple(
                ReplicaStatistics(
                    url=s.url,
                    available=id(s) in reachable,
                    demoted=self._health[id(s)].demoted_until > now,
                    failures=self._health[id(s)].failures,
                    last_error=self._health[id(s)].last_error,
                    reads_served=self._health[id(s)].served,
                    repairs=self._health[id(s)].repairs,
                    store=s.statistics(),
                )
                for s in self.stores
            )
            return ReplicaSetStatistics(
                quorum=self.needed,
                reachable=len(reachable),
                degraded=len(reachable) < len(self.stores),
                integrity_failures=self._integrity_failures,
                unrecoverable=self._unrecoverable,
                repairs=sum(r.repairs for r in replicas),
                repair_failures=self._repair_failures,
                replicas=replicas,
            )


class Write:
    """One write across the replica set (a commit, a label move): the replicas it began
    on, and which of them dropped out and why. Chunk writers skip ``failed`` indexes.

    A replica that fails any step is out of the write from then on; ``require`` raises
    ``UnavailableError`` when fewer than the quorum are left, and ``close`` emits
    ``vault.degraded`` when the write reached fewer replicas than the set has.
    """

    def __init__(self, replicas: ReplicaSet, stores: list[Store], what: str) -> None:
        self.replicas = replicas
        self.stores = stores
        self.what = what
        #: index into ``stores`` -> why it dropped out (read without the lock by writers)
        self.failed: dict[int, str] = {}
        self._lock = threading.Lock()

    def fail(self, index: int, why: str) -> None:
        with self._lock:
            if index not in self.failed:
                self.failed[index] = why
                self.replicas.note_failure(self.stores[index], why)

    def ok(self) -> list[Store]:
        """The replicas still in the write."""
        return [s for i, s in enumerate(self.stores) if i not in self.failed]

    def require(self, stage: str) -> list[Store]:
        """The replicas still in; ``UnavailableError`` if fewer than the quorum."""
        ok = self.ok()
        if len(ok) < self.replicas.needed:
            raise UnavailableError(
                f"vault: {self.what} {stage} on {len(ok)} replicas, {self.replicas.needed} "
                "needed: " + "; ".join(f"{url}: {why}" for url, why in self.missed().items())
            )
        return ok

    def _in(self) -> list[tuple[int, Store]]:
        return [(i, s) for i, s in enumerate(self.stores) if i not in self.failed]

    def sync(self, keys: Sequence[str] | None = None) -> None:
        """Flush every replica still in, all at once; one that fails drops out.
        ``keys``: only these values need to be durable (``Store.sync(keys)``); None
        flushes everything."""

        def flush(index: int, store: Store) -> None:
            try:
                store.sync() if keys is None else store.sync(keys)
            except (OSError, BastionError) as exc:
                self.fail(index, f"flush failed: {type(exc).__name__}: {exc}")

        _POOL.run_all([partial(flush, i, s) for i, s in self._in()])

    def put(self, key: str, parts: Sequence[Buffer], *, exclusive: bool = False) -> list[Store]:
        """Write ``key`` durably on every replica still in, all at once; the ones that
        hold it now, once every replica has answered (so a caller can order writes:
        what it puts next is written after this is durable wherever it went).
        ``exclusive``: the key must be new (a version number): existing is an
        ``IntegrityError`` (another writer is not taking the vault's lock)."""
        held = self.put_all([(key, parts)])
        if exclusive:
            for store, created in held:
                if not created:
                    raise IntegrityError(
                        f"{store.url}: {key} exists already; another writer is not taking "
                        "the vault lock"
                    )
        return [store for store, _ in held]

    def put_all(self, items: Sequence[tuple[str, Sequence[Buffer]]]) -> list[tuple[Store, bool]]:
        """Write every item durably on every replica still in, all at once (items that
        must be durable one after another take a ``put`` each). For each replica that
        holds every item now, in the set's order: the store, and whether it created
        them all (False: one was there already)."""
        stores = self._in()

        def put(index: int, store: Store, key: str, parts: Sequence[Buffer]) -> bool | None:
            try:
                return store.put(key, parts, durable=True)
            except (OSError, UnavailableError) as exc:
                self.fail(index, f"{type(exc).__name__}: {exc}")
                return None

        jobs = [(i, s, key, parts) for i, s in stores for key, parts in items]
        results = _POOL.run_all([partial(put, *job) for job in jobs])
        created = dict.fromkeys((i for i, _ in stores), True)
        for (index, _, _, _), result in zip(jobs, results, strict=True):
            created[index] = created[index] and bool(result)
        return [(s, created[i]) for i, s in stores if i not in self.failed]

    def keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` on the replicas still in (the union), sorted; one
        that cannot list drops out, so nothing is numbered from a partial view."""
        found: set[str] = set()
        for index, store in enumerate(self.stores):
            if index in self.failed:
                continue
            try:
                found.update(store.list(prefix))
            except (OSError, UnavailableError) as exc:
                self.fail(index, f"cannot list {prefix}: {type(exc).__name__}: {exc}")
        return sorted(found)

    def missed(self) -> dict[str, str]:
        """Every replica of the set this write did not reach, and why."""
        reached = {id(s) for s in self.ok()}
        out: dict[str, str] = {}
        for index, store in enumerate(self.stores):
            if index in self.failed:
                out[store.url] = self.failed[index]
        for store in self.replicas.stores:
            if id(store) not in reached and store.url not in out:
                out[store.url] = "unreachable when the write began"
        return out

    def close(self, subject: str) -> dict[str, str]:
        """End the write: ``vault.degraded`` if it missed a replica. Returns ``missed()``."""
        missed = self.missed()
        if missed:
            self.replicas.emit(
                ek.VAULT_DEGRADED,
                subject,
                what=self.what,
                replicas_ok=len(self.replicas.stores) - len(missed),
                replicas_total=len(self.replicas.stores),
                down=sorted(missed),
                reasons=missed,
            )
        return missed
