"""``bastion up | down | status | reload | token``: the whole system under one command."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Annotated, Any

import typer

from bastion.cli._common import DEFAULT_MANIFEST, ManifestOption, console, load_manifest
from bastion.errors import CheckFailed, UsageError

__all__ = ["register"]

JsonOption = Annotated[
    bool, typer.Option("--json", help="One JSON document (keys in docs/cli-json.md).")
]


def up(
    file: ManifestOption = DEFAULT_MANIFEST,
    detach: Annotated[
        bool,
        typer.Option(
            "--detach",
            "-d",
            help="Run in the background (pid file and logs under <state_dir>/up/); return "
            "once every service is healthy.",
        ),
    ] = False,
) -> None:
    """Run everything the manifest declares: gateways and replicas, the vault guard, the
    scheduled scrub, and the control API. SIGTERM (or `bastion down`) stops it all;
    SIGHUP (or `bastion reload`) applies a changed manifest. Started again after it was
    killed, it takes over the children still running instead of starting new ones."""
    from bastion.control import UpFiles

    manifest = load_manifest(file)
    if detach:
        _detach(manifest, UpFiles(manifest.state_dir))
    else:
        _run(manifest)


def _run(manifest: Any) -> None:
    from bastion.control import Up

    runner = Up(manifest)
    runner.start()
    try:
        took = runner.wait_ready()
    except BaseException:
        runner.shutdown()
        raise
    console.print(
        f"{manifest.system}: {len(manifest.services)} services healthy in {took:.2f} s; "
        f"control API on {runner.api_url} (docs at {runner.api_url}/api/openapi.json)",
        markup=False,
        soft_wrap=True,
    )
    runner.serve_forever()


def _detach(manifest: Any, files: Any) -> None:
    """Fork (not a new interpreter: everything is imported and the manifest loaded), the
    child in its own session with its output in ``up.log``; the parent returns once the
    child says every service is healthy, or with the child's error."""
    from bastion.control._files import read_json, write_private_json
    from bastion.errors import BastionError

    files.make()
    other = files.running_pid()
    if other is not None:
        raise UsageError(
            f"`bastion up` is already running on {files.state_dir} (pid {other}); see "
            "`bastion status`, or stop it with `bastion down`"
        )
    log_path = files.logs / "up.log"
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: becomes `bastion up`
        code = 0
        try:
            os.setsid()  # out of the terminal's session: a closed terminal does not stop it
            fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            _run(manifest)
        except BastionError as exc:
            print(f"error: {exc}", file=sys.stderr, flush=True)
            write_private_json(
                files.state, {"pid": os.getpid(), "phase": "failed", "error": str(exc)}
            )
            code = exc.exit_code
        except BaseException as exc:
            print(f"internal error: {exc!r}", file=sys.stderr, flush=True)
            write_private_json(
                files.state, {"pid": os.getpid(), "phase": "failed", "error": repr(exc)}
            )
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        state = read_json(files.state) or {}
        if state.get("pid") == pid and state.get("phase") == "ready":
            console.print(
                f"bastion up is running (pid {pid}); control API on {state.get('api')}; "
                f"log {log_path}",
                markup=False,
                soft_wrap=True,
            )
            return
        if state.get("pid") == pid and state.get("phase") == "failed":
            os.waitpid(pid, 0)
            raise UsageError(str(state.get("error")))
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            raise UsageError(
                f"bastion up exited ({os.waitstatus_to_exitcode(status)}) before it was ready; "
                f"see {log_path}"
            )
        time.sleep(0.02)  # one small file read: `up --detach` returns as soon as it says ready
    raise UsageError(f"bastion up (pid {pid}) was not ready within 180 s; see {log_path}")


def down(file: ManifestOption = DEFAULT_MANIFEST, as_json: JsonOption = False) -> None:
    """Stop `bastion up` and everything it runs; no process is left behind (children of a
    killed `bastion up` are found from its records and stopped too)."""
    from bastion.control import down as do_down

    manifest = load_manifest(file)
    result = do_down(manifest)
    if as_json:
        print(json.dumps(result, sort_keys=True))
    elif result["up"] is None and not result["children_stopped"]:
        console.print("nothing was running", markup=False)
    else:
        console.print(
            (
                f"stopped bastion up (pid {result['up']})"
                if result["up"]
                else "bastion up was not running"
            )
            + (
                f"; stopped its orphaned children: {', '.join(result['children_stopped'])}"
                if result["children_stopped"]
                else ""
            ),
            markup=False,
        )


def status(file: ManifestOption = DEFAULT_MANIFEST, as_json: JsonOption = False) -> None:
    """What `bastion up` runs and whether it is healthy. Exit 1 when something is down."""
    from bastion.control import status as up_status

    manifest = load_manifest(file)
    doc = up_status(manifest)
    if as_json:
        print(json.dumps(doc, sort_keys=True))
    else:
        u = doc["up"]
        console.print(
            f"{doc['system']}: bastion up "
            + (
                f"running (pid {u['pid']}, {u['phase']}), API {u['api']}"
                if u["running"]
                else "not running"
            ),
            markup=False,
            soft_wrap=True,
        )
        for name, child in doc["children"].items():
            console.print(
                f"  {name}: pid {child['pid']} {'running' if child['running'] else 'gone'}",
                markup=False,
            )
        for name, svc in doc["services"].items():
            console.print(
                f"  service {name} on {svc['listen']}: "
                + ("healthy" if svc["healthy"] else "NOT answering"),
                markup=False,
            )
        last = u.get("last_reload")
        if last:
            console.print(
                f"  last reload (generation {last.get('generation')}): "
                + ("applied" if last.get("ok") else f"refused: {last.get('error')}"),
                markup=False,
                soft_wrap=True,
            )
    if not doc["healthy"]:
        raise CheckFailed(
            "not everything is running; see the lines above (`bastion up -d` starts it)"
        )


def reload(file: ManifestOption = DEFAULT_MANIFEST, as_json: JsonOption = False) -> None:
    """Apply the changed manifest to the running `bastion up` without dropping requests
    (changed backends, replica bounds, a new service). A manifest that does not load, or
    a change that cannot be made, is refused and nothing changes (exit 2)."""
    from bastion.control import UpFiles
    from bastion.control._files import read_json

    manifest = load_manifest(file)  # a broken manifest stops here, located; nothing sent
    files = UpFiles(manifest.state_dir)
    pid = files.running_pid()
    if pid is None:
        raise UsageError(
            f"`bastion up` is not running on {manifest.state_dir}; start it with `bastion up -d`"
        )
    before = int((read_json(files.state) or {}).get("generation", 0))
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        state = read_json(files.state) or {}
        if int(state.get("generation", 0)) > before:
            result = state.get("last_reload") or {}
            if as_json:
                print(json.dumps(result, sort_keys=True))
            if not result.get("ok"):
                raise UsageError(f"reload refused, nothing changed: {result.get('error')}")
            if not as_json:
                console.print(
                    "reloaded: "
                    + "; ".join(
                        f"{k} {', '.join(result.get(k) or []) or 'none'}"
                        for k in ("added", "removed", "reloaded", "restarted")
                    ),
                    markup=False,
                    soft_wrap=True,
                )
            return
        if files.running_pid() is None:
            raise UsageError("`bastion up` stopped during the reload; see its log")
        time.sleep(0.05)
    raise UsageError("the reload was not finished within 300 s; see `bastion status`")


def token(
    name: Annotated[str, typer.Option(help="What the token is for (shown in events).")] = "default",
    file: ManifestOption = DEFAULT_MANIFEST,
) -> None:
    """Make a bearer token for the control API's state-changing calls. It is printed
    once; only its hash is kept (<state_dir>/tokens.json, 0600). A new token of the same
    name replaces the old one."""
    from bastion.control import UpFiles, make_token

    manifest = load_manifest(file)
    files = UpFiles(manifest.state_dir)
    files.make()
    print(make_token(files.tokens, name))


def register(app: typer.Typer) -> None:
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command("reload")(reload)
    app.command("token")(token)
