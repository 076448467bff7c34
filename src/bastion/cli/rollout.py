"""``bastion rollout start | status | promote | abort``: a model rollout on a running gateway.

Each command asks the service's running gateway (``bastion serve``) over its
``/bastion/rollout`` routes, with the service's client key when it has ``auth``. Exit 0
when done; 2 on bad input (an unknown service, a candidate that does not verify, a
second rollout while one runs, nothing to promote or abort); 1 when the gateway is not
running (``status`` then shows the rollout's last record from the state directory).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption

__all__ = ["register"]

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print the rollout as JSON (keys in docs/cli-json.md).")
]


def _ask(file: Path, service: str, method: str, path: str, body: Any = None) -> dict[str, Any]:
    import urllib.error
    import urllib.request

    from bastion.cli._common import load_manifest
    from bastion.errors import NotFoundError, UnavailableError, UsageError
    from bastion.serve._auth import client_keys

    manifest = load_manifest(file)
    svc = manifest.services.get(service)
    if svc is None:
        known = ", ".join(manifest.services) or "none"
        raise NotFoundError(f"service {service!r} is not in {file} (its services: {known})")
    keys = client_keys(service, svc.auth.keys_env if svc.auth else None)
    headers = {"Content-Type": "application/json"}
    if keys:
        headers["Authorization"] = f"Bearer {keys[0]}"
    url = f"http://{svc.listen}{path}"
    data = json.dumps(body).encode() if body is not None else None
    asking = urllib.request.Request(url, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(asking, timeout=120) as resp:  # noqa: S310 - http:// built above
            return dict(json.loads(resp.read()))
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read())["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = f"{exc.code} {exc.reason}"
        if exc.code < 500:
            raise UsageError(message) from None
        raise UnavailableError(f"{url}: {message}") from None
    except OSError as exc:
        cause = getattr(exc, "reason", exc)
        why = cause.strerror if isinstance(cause, OSError) and cause.strerror else cause
        raise UnavailableError(
            f"the gateway of service {service} does not answer at {svc.listen} "
            f"({str(why).lower()}); start it with `bastion serve {service}`"
        ) from None


def _show(rollout: dict[str, Any] | None, as_json: bool, *, live: bool = True) -> None:
    from bastion.cli._common import console

    if as_json:
        print(json.dumps({"rollout": rollout, "live": live}, sort_keys=True))
        return
    if rollout is None:
        console.print("no rollout yet")
        return
    steps = rollout["steps"]
    colour = {
        "promoted": "green",
        "rolled_back": "red",
        "aborted": "yellow",
    }.get(rollout["status"], "cyan")
    console.print(
        f"rollout {rollout['id']} of {rollout['candidate']} (stable {rollout['stable']}), "
        f"{rollout['strategy']}: [{colour}]{rollout['status']}[/{colour}]"
        + ("" if live else " (from the state directory: the gateway is not running)")
    )
    console.print(
        f"  step {rollout['step'] + 1} of {len(steps)} "
        f"({', '.join(f'{s:g}%' for s in steps)}), candidate share now {rollout['weight']:g}%, "
        f"{rollout['looks']} analyses"
    )
    for arm, stats in (rollout.get("arms") or {}).items():
        p50 = f"{stats['p50_ms']:.1f} ms" if stats["p50_ms"] is not None else "-"
        p99 = f"{stats['p99_ms']:.1f} ms" if stats["p99_ms"] is not None else "-"
        console.print(
            f"  {arm:9} {stats['requests']} requests, {stats['errors']} errors, "
            f"p50 {p50}, p99 {p99}"
        )
    if rollout.get("mirrored"):
        console.print(f"  mirrored {rollout['mirrored']} copies, agreement {rollout['agreement']}")
    verdict = rollout.get("last_verdict")
    if verdict:
        console.print(f"  last verdict: {verdict['outcome']}: {verdict['reason']}")
    if rollout.get("reason"):
        console.print(f"  reason: {rollout['reason']}")


def start(
    service: Annotated[str, typer.Argument(help="The service, as named under services.")],
    candidate: Annotated[str, typer.Argument(help="The model snapshot, e.g. model/digits@7.")],
    strategy: Annotated[
        str | None,
        typer.Option(help="canary, shadow or blue-green (default: services.<s>.rollout)."),
    ] = None,
    backend: Annotated[
        str | None, typer.Option(help="The model backend, when the service has several.")
    ] = None,
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Roll CANDIDATE out on SERVICE's running gateway, step by step, judged as it goes."""
    body = {"candidate": candidate, "strategy": strategy, "backend": backend}
    _show(_ask(Path(file), service, "POST", "/bastion/rollout", body)["rollout"], as_json)


def status(
    service: Annotated[str, typer.Argument(help="The service, as named under services.")],
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Where SERVICE's rollout stands: step, share, both arms, the last verdict."""
    from bastion.errors import UnavailableError

    try:
        _show(_ask(Path(file), service, "GET", "/bastion/rollout")["rollout"], as_json)
    except UnavailableError:
        from bastion.cli._common import load_manifest
        from bastion.rollout import read_record

        record = read_record(load_manifest(Path(file)).state_dir, service)
        if record is None:
            raise
        shown = record.model_dump()
        shown["weight"] = record.weight
        _show(shown, as_json, live=False)
        raise typer.Exit(1) from None


def promote(
    service: Annotated[str, typer.Argument(help="The service, as named under services.")],
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Promote the running rollout's candidate now (@prod moves through the validation gate)."""
    _show(_ask(Path(file), service, "POST", "/bastion/rollout/promote", {})["rollout"], as_json)


def abort(
    service: Annotated[str, typer.Argument(help="The service, as named under services.")],
    as_json: JsonOption = False,
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Stop the running rollout: the candidate's share to 0, its replicas drained and stopped."""
    _show(_ask(Path(file), service, "POST", "/bastion/rollout/abort", {})["rollout"], as_json)


def register(app: typer.Typer) -> None:
    sub = typer.Typer(
        help="Roll a model out: canary, shadow or blue-green, rolled back on a regression."
    )
    sub.command("start")(start)
    sub.command("status")(status)
    sub.command("promote")(promote)
    sub.command("abort")(abort)
    app.add_typer(sub, name="rollout")
