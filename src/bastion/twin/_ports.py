"""The ports a manifest owns, and the twin's replacements for them.

Owns: which ports count as the system's own (every service's ``listen:`` and
``gateways:``, the control
API's ``control.listen``, and every
backend URL on a loopback host, since a local backend may be production's own replica
or fake vendor), and how each is given a twin port (a free one the kernel picks, or
``port_base``, ``port_base + 1`` ... in the manifest's order), checked free before use.

Must never: hand out a port something is listening on, or a production port: a twin
that reached a production process would not be isolated.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from contextlib import ExitStack
from dataclasses import dataclass
from urllib.parse import urlsplit

from bastion.errors import UsageError

__all__ = ["OwnedPort", "allocate", "is_loopback", "owned_ports", "port_free"]

_LOOPBACK = ("127.", "localhost", "::1", "[::1]")


def is_loopback(host: str) -> bool:
    return host.startswith(_LOOPBACK) or host == "0.0.0.0"  # noqa: S104 - a bind-all listen is ours


@dataclass(frozen=True)
class OwnedPort:
    """One port the manifest owns: where it is written (``services.digits.listen``)."""

    port: int
    where: str


def owned_ports(raw: dict[str, object]) -> list[OwnedPort]:
    """The ports of a manifest's plain YAML tree, in the manifest's order."""
    found: list[OwnedPort] = []
    services = raw.get("services") or {}
    if not isinstance(services, dict):
        services = {}
    for name, spec in services.items():
        if not isinstance(spec, dict):
            continue
        listen = spec.get("listen")
        if isinstance(listen, str) and ":" in listen:
            found.append(OwnedPort(int(listen.rpartition(":")[2]), f"services.{name}.listen"))
        for i, address in enumerate(spec.get("gateways") or []):  # active-active peers
            if isinstance(address, str) and ":" in address:
                found.append(
                    OwnedPort(int(address.rpartition(":")[2]), f"services.{name}.gateways[{i}]")
                )
        for i, backend in enumerate(spec.get("backends") or []):
            url = backend.get("url") if isinstance(backend, dict) else None
            if not isinstance(url, str):
                continue
            parts = urlsplit(url)
            if parts.hostname and is_loopback(parts.hostname) and parts.port:
                found.append(OwnedPort(parts.port, f"services.{name}.backends[{i}].url"))
    # last, so a --port-base gives the services the ports it gave them before
    control = raw.get("control")
    listen = control.get("listen") if isinstance(control, dict) else None
    if isinstance(listen, str) and ":" in listen:
        found.append(OwnedPort(int(listen.rpartition(":")[2]), "control.listen"))
    return found


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether ``port`` can be bound on ``host`` now (nothing listens there).

    With ``SO_REUSEADDR``, as servers bind (aiohttp does): connections a stopped server
    left in TIME_WAIT do not make its port look taken; a listener still does.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def allocate(
    owned: Iterable[OwnedPort], *, port_base: int | None = None, manifest: str = "bastion.yaml"
) -> dict[int, int]:
    """Production port -> twin port, one twin port per distinct production port.

    With ``port_base``, the twin's ports are ``port_base``, ``port_base + 1``, ...; a port
    among them that is taken, or that production itself uses, is a ``UsageError`` naming
    it (the fix: another ``--port-base``, or none to let the kernel choose).
    """
    distinct = list(dict.fromkeys(p.port for p in owned))
    where = {p.port: p.where for p in owned}
    if port_base is None:
        mapping: dict[int, int] = {}
        with ExitStack() as held:  # hold each socket until all are picked: no repeats
            for port in distinct:
                while True:
                    s = held.enter_context(socket.socket())
                    s.bind(("127.0.0.1", 0))
                    twin = int(s.getsockname()[1])
                    if twin not in where:
                        break
                mapping[port] = twin
        return mapping
    if not 1024 <= port_base <= 65535 - len(distinct) + 1:
        raise UsageError(
            f"twin: --port-base {port_base} is out of range; give one in 1024.."
            f"{65535 - len(distinct) + 1} so {len(distinct)} port(s) fit"
        )
    mapping = {port: port_base + i for i, port in enumerate(distinct)}
    for port, twin in mapping.items():
        if twin in where:
            raise UsageError(
                f"twin: port {twin} (for {where[port]} = {port} in {manifest}) is production's "
                f"own port ({where[twin]}); choose a --port-base clear of production's ports"
            )
        if not port_free(twin):
            raise UsageError(
                f"twin: port {twin} (for {where[port]} = {port} in {manifest}) is already in "
                "use; choose another --port-base, or leave it out to use free ports"
            )
    return mapping
