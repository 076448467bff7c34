"""Joining a Ray cluster, once per process, for what places processes on it: a job's
Ray slots (``train/_ray.py``) and a backend's Ray replicas (``serve/_ray.py``).

Owns: the namespace every Bastion actor lives in, the one driver connection of a
process, the fast reachability check (``ray.init`` retries an unreachable GCS for about
a minute; a TCP connect says it at once) and the errors that name the manifest place.

Must never: import ray at module import (``bastion[ray]`` is an optional extra), or join
a second cluster from one process (Ray allows one driver connection per process).
"""

from __future__ import annotations

import logging
import socket
import threading
from types import ModuleType

from bastion.errors import UsageError

__all__ = ["NAMESPACE", "import_ray", "join", "leave"]

NAMESPACE = "bastion"
EXTRA = "pip install 'bastion[ray]'"

_lock = threading.Lock()
_joined: str | None = None


def import_ray(where: str) -> ModuleType:
    """``ray``, or a ``UsageError`` naming the place that asked for it and the extra."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            f"{where}: backend ray needs the ray package, which is not installed; "
            f"install Bastion's ray extra ({EXTRA}) or use backend: local"
        ) from None
    return ray


def _reachable(address: str, timeout_s: float = 3.0) -> str:
    """Empty if ``address`` (host:port) accepts a TCP connection, else why not."""
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return ""
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def join(address: str, *, where: str) -> ModuleType:
    """Join the Ray cluster at ``address`` as this process's driver and return ``ray``;
    a ``UsageError`` naming ``where`` (the manifest place of the slot or placement, e.g.
    ``jobs.train.slots[0]``) when ray is missing or nothing answers there. A process that
    already joined (itself, or a test that called ``ray.init``) is reused for the same
    address; another address is refused."""
    ray = import_ray(where)
    global _joined
    with _lock:
        if ray.is_initialized():
            if _joined is not None and _joined != address:
                raise UsageError(
                    f"{where}.address: this process already joined the Ray cluster at "
                    f"{_joined}, not {address}; one process joins one cluster: use the same "
                    "address, or run the other part in a process of its own"
                )
            return ray
        if address != "auto":
            why = _reachable(address)
            if why:
                port = address.rpartition(":")[2]
                raise UsageError(
                    f"{where}.address: no Ray cluster answers at {address} ({why}); start "
                    f"one there (`ray start --head --port {port}`) or fix the address"
                )
        try:
            ray.init(
                address=address,
                namespace=NAMESPACE,
                ignore_reinit_error=True,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise UsageError(
                f"{where}.address: could not join the Ray cluster at {address} ({exc}); "
                "check that it runs (`ray status`) and that this Ray version matches its"
            ) from None
        _joined = address
        return ray


def leave() -> None:
    """Leave the cluster ``join`` joined (tests; a process that serves until it exits
    need not)."""
    global _joined
    with _lock:
        if _joined is not None:
            import ray

            ray.shutdown()
            _joined = None
