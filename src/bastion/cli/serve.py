"""``bastion serve [SERVICE] | status``: run the inference gateways, or ask them how they are."""

from __future__ import annotations

import asyncio
import enum
import logging
import signal
import sys
from typing import Annotated

import typer
from rich.table import Table

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, load_manifest

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
    file: ManifestOption = DEFAULT_MANIFEST,
    log_level: Annotated[
        LogLevel,
        typer.Option(
            "--log-level",
            help="What the gateways log to stderr: info adds an access line per request.",
            case_sensitive=False,
        ),
    ] = LogLevel.warning,
) -> None:
    """Run the gateway for each service in the manifest (Ctrl-C stops it).

    ``bastion serve status [SERVICE]`` shows the running gateways instead. (One command,
    not a group: a group's positional SERVICE would swallow the word ``status``.)
    """
    if service == "status":
        status(which, file)
        return
    from bastion.serve import run_services

    logging.basicConfig(
        level=log_level.value.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    manifest = load_manifest(file)
    names = _names(list(manifest.services), service)

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        for name in names:
            console.print(
                f"serving {name} on http://{manifest.services[name].listen}"
                if name in manifest.services
                else f"service {name}"
            )
        await run_services(manifest, names, stop=stop)

    asyncio.run(main())


def status(
    service: Annotated[str | None, typer.Argument(help="One service (default: all).")] = None,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Show each running gateway's backends: breaker state, load, latency, ejections."""
    from bastion.serve import GatewayDown
    from bastion.serve import status as gateway_status

    manifest = load_manifest(file)
    for item in gateway_status(manifest, _names(list(manifest.services), service)):
        if isinstance(item, GatewayDown):
            console.print(f"{item.service}: not running on {item.listen} ({item.reason})")
            continue
        table = Table(title=f"{item.service} on {item.listen}")
        for col in ("backend", "tier", "breaker", "in flight", "limit", "latency ms", "down"):
            table.add_column(col)
        for up in item.pool.upstreams:
            table.add_row(
                up.name,
                str(up.tier),
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


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
