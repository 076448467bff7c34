"""``bastion serve [SERVICE] | status``: run the inference gateways, or ask them how they are."""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from bastion.cli._common import (
    DEFAULT_MANIFEST,
    ManifestOption,
    console,
    err_console,
    load_manifest,
)
from bastion.errors import UnavailableError

if TYPE_CHECKING:
    from bastion.manifest import Manifest
    from bastion.serve import GatewayStatistics
    from bastion.serve._early import Early

__all__ = ["register"]


class LogLevel(enum.StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


def _names(manifest_services: list[str], service: str | None) -> list[str]:
    return [service] if service else manifest_services


def serve(
    service: Annotated[
        str | None,
        typer.Argument(help="One service (default: all), or 'status' to inspect running ones."),
    ] = None,
    which: Annotated[str | None, typer.Argument(help="With 'status': one service.")] = None,
    as_json: Annotated[
        bool,
        typer.Option("--json", help="With 'status': one JSON document (keys in docs/cli-json.md)."),
    ] = False,
    file: ManifestOption = DEFAULT_MANIFEST,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            help="What the gateways log to stderr: info adds an access line per request.",
            case_sensitive=False,
        ),
    ] = LogLevel.warning,
    listen: Annotated[
        str | None,
        typer.Option(
            "--listen",
            help="Run SERVICE's gateway at this host:port, one of services.SERVICE.gateways "
            "(active-active gateways behind an L4 load balancer; docs/serving.md).",
        ),
    ] = None,
) -> None:
    """Run the gateway for each service in the manifest (Ctrl-C stops it; SIGHUP reloads
    the manifest: changed backends and replica bounds are applied in place).

    'bastion serve status [SERVICE]' shows the running gateways instead, and exits 1 when
    one is not running.
    """
    # One command, not a group: a group's positional SERVICE would swallow 'status'.
    if service == "status":
        status(which, file, as_json=as_json)
        return
    from bastion.serve._early import start_early

    logging.basicConfig(
        level=log_level.value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    manifest = load_manifest(file)
    names = _names(list(manifest.services), service)
    # the replicas first: they load their model while the gateway's modules import
    early = start_early(manifest, names, listen)
    try:
        _serve(manifest, names, file, listen, early)
    finally:
        if early is not None:
            early.stop()  # those no replica set took (it stops its own)


def _serve(
    manifest: Manifest, names: list[str], file: Path, listen: str | None, early: Early | None
) -> None:
    import os

    from bastion.control._files import RELOAD_ACK_ENV, write_private_json
    from bastion.serve import run_services
    from bastion.serve.runner import unset_api_keys

    for line in unset_api_keys(manifest, names):
        err_console.print(f"[yellow]warning:[/yellow] {escape(line)}", soft_wrap=True)

    def serving(name: str, url: str) -> None:
        console.print(f"serving {name} on {url}", soft_wrap=True, markup=False)

    def reloaded(result: dict[str, object]) -> None:
        if result.get("ok"):
            console.print(f"reloaded {file}: {json.dumps(result.get('changes'))}", markup=False)
        else:
            err_console.print(
                f"reload refused, nothing changed: {result.get('error')}", markup=False
            )
        ack = os.environ.get(RELOAD_ACK_ENV)
        if ack:  # `bastion up` waits for this file to name the manifest it asked for
            write_private_json(Path(ack), result)

    async def main() -> None:
        stop, reload = asyncio.Event(), asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload.set)
        await run_services(
            manifest,
            names,
            stop=stop,
            serving=serving,
            reload=reload,
            reloaded=reloaded,
            listen=listen,
            early=early,
        )

    asyncio.run(main())


def status(service: str | None, file: Path, *, as_json: bool = False) -> None:
    """Show each running gateway's backends: breaker state, load, latency, ejections."""
    import pydantic

    from bastion.serve import GatewayDown, GatewayStatistics
    from bastion.serve import status as gateway_status

    manifest = load_manifest(file)
    found = gateway_status(manifest, _names(list(manifest.services), service))
    down = [item for item in found if isinstance(item, GatewayDown)]
    if as_json:
        dump = pydantic.TypeAdapter(GatewayStatistics)
        services = [
            {"service": i.service, "listen": i.listen, "running": False, "reason": i.reason}
            if isinstance(i, GatewayDown)
            else {
                "service": i.service,
                "listen": i.listen,
                "running": True,
                "status": dump.dump_python(i, mode="json"),
            }
            for i in found
        ]
        print(json.dumps({"services": services}, sort_keys=True))
    else:
        _show_status([i for i in found if not isinstance(i, GatewayDown)])
    if down:
        raise UnavailableError(
            "; ".join(
                f"no gateway is running for service {d.service} at {d.listen} ({d.reason}); "
                f"start it with `bastion serve {d.service}`"
                for d in down
            )
        )


def _show_status(running: list[GatewayStatistics]) -> None:
    for item in running:
        table = Table(title=f"{item.service} on {item.listen}")
        for col in (
            "backend",
            "tier",
            "arm",
            "breaker",
            "in flight",
            "limit",
            "latency ms",
            "down",
        ):
            table.add_column(col)
        for up in item.pool.upstreams:
            table.add_row(
                up.name,
                str(up.tier),
                up.arm,
                up.breaker.state,
                str(up.outstanding),
                f"{up.limit.limit:.2f}",
                f"{up.latency_ewma_ms:.2f}",
                up.down_reason or ("waiting for probe" if up.needs_probe else ""),
            )
        console.print(table)
        budget, queue = item.retry_budget, item.admission
        console.print(
            f"retry budget {budget.ratio:.0%}: {budget.retries} retries/hedges for "
            f"{budget.requests} requests ({budget.denied} denied); at most "
            f"{item.attempts.max_attempts} attempts per request; queue "
            f"{queue.waiting}/{queue.max_queue}"
        )
        ro = item.rollout
        if ro is not None:
            console.print(
                f"rollout {ro.id} of {ro.candidate} (stable {ro.stable}), {ro.strategy}: "
                f"{ro.status}, step {ro.step + 1} of {len(ro.steps)}, candidate share "
                f"{ro.weight:g}%, {ro.looks} analyses" + (f"; {ro.reason}" if ro.reason else "")
            )
        cost = item.cost
        if cost is not None:
            causes = ", ".join(f"{c} {v:.6g}" for c, v in cost.by_cause.items() if v)
            console.print(
                f"spend since start {cost.total:.6g} {cost.currency}"
                + (f" ({causes})" if causes else "")
                + "".join(
                    f"; budget {b.name}: {b.spent:.6g} spent, {b.reserved:.6g} reserved of "
                    f"{b.hard:g}" + (" (past soft: no hedging)" if b.over_soft else "")
                    for b in cost.budgets
                ),
                soft_wrap=True,
            )


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
