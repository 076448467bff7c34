"""Replaying a recipe: one stage run made again, from its recorded lineage alone.

Owns: judging whether a recipe can be replayed exactly here (``replay_problems``: code
that was never captured, an interpreter, machine, PyTorch or NumPy other than the
recorded one) before anything runs; the replay itself, in a private work directory
(the code snapshot restored under ``code/``, every input by its exact version under
``in/<name>/``, verified by the vault, the recorded config and environment variables,
the recorded PyTorch thread count as ``OMP_NUM_THREADS``), run as one process under
``bastion.supervise`` with the stage contract of ``_runner`` (``$BASTION_STAGE_INPUTS``,
``$BASTION_STAGE_OUTPUT``, ``$BASTION_STAGE_CONFIG``, ``$BASTION_STAGE_ENVIRONMENT``);
and, after it, comparing the environment the process reported with the recorded one.

Must never: run anything when the environment already differs (``NotReplayable``,
exit 1, every difference named), read a byte of code or data that is not in the vault
(today's working copy of the code is not the recorded code), or keep a replay whose
process reported another thread count or version: it is not the recorded run, whatever
its bytes.
"""

from __future__ import annotations

import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bastion.errors import CheckFailed, UsageError
from bastion.events import NO_EVENTS, Emit, Relay
from bastion.pipeline._key import canonical
from bastion.pipeline._recipe import Recipe, reported_environment
from bastion.store import make_dirs
from bastion.supervise import Backoff, ProcessSpec, RestartBudget, Supervisor
from bastion.train import ENV_STAGE_ENVIRONMENT, PLANNED_KEYS, differences, environment

if TYPE_CHECKING:
    from bastion.vault import Vault

__all__ = ["NotReplayable", "Replayed", "replay", "replay_problems"]


class NotReplayable(CheckFailed):
    """A recipe that cannot be replayed exactly here; ``problems`` names each reason."""

    def __init__(self, ref: str, problems: list[str], *, ran: bool) -> None:
        self.problems = tuple(problems)
        self.ran = ran
        when = "the replay ran under another environment" if ran else "nothing was run"
        super().__init__(
            f"{ref} cannot be replayed exactly: {'; '.join(problems)} ({when}; restore it "
            "from a vault replica instead, or replay it where the recorded environment is)"
        )


@dataclass(frozen=True)
class Replayed:
    """A replay's output files (path -> bytes), the environment its process reported,
    and how long the process ran."""

    files: dict[str, bytes]
    environment: dict[str, Any]
    seconds: float


def replay_problems(recipe: Recipe) -> list[str]:
    """Why ``recipe`` cannot be replayed exactly here, known before running ([] if none)."""
    problems = differences(recipe.environment, environment(), keys=PLANNED_KEYS)
    if recipe.code is None:
        problems.append("its code was not recorded")
    if recipe.uncaptured:
        problems.append(f"code outside the vault was not captured: {', '.join(recipe.uncaptured)}")
    return problems


def replay(
    vault: Vault,
    recipe: Recipe,
    work: Path,
    *,
    ref: str,
    events: Emit = NO_EVENTS,
    timeout_s: float | None = None,
) -> Replayed:
    """Run ``recipe`` again in ``work`` (made empty, 0700) and return what it wrote (see
    the module). ``NotReplayable`` before running when the environment differs, or after
    when the process reported another; ``CheckFailed`` when the process failed."""
    problems = replay_problems(recipe)
    if problems:
        raise NotReplayable(ref, problems, ran=False)
    if work.exists():
        shutil.rmtree(work)
    make_dirs(work, 0o700)
    code, inputs, out = work / "code", work / "in", work / "out"
    if recipe.code is not None:
        vault.restore(recipe.code, code)
    inputs.mkdir(mode=0o700)
    for name, source in sorted(recipe.inputs.items()):
        vault.restore(source, inputs / name)
    out.mkdir(mode=0o700)
    (work / "config.json").write_bytes(canonical(dict(recipe.config), where="config"))
    cwd = (code / recipe.workdir).resolve()
    if not cwd.is_relative_to(code.resolve()):
        raise UsageError(f"{ref}: its recipe's workdir {recipe.workdir!r} leaves the code")
    env = {
        "BASTION_STAGE_INPUTS": str(inputs),
        "BASTION_STAGE_OUTPUT": str(out),
        "BASTION_STAGE_CONFIG": str(work / "config.json"),
        ENV_STAGE_ENVIRONMENT: str(work / "environment.json"),
        "BASTION_STAGE_REPLAY": ref,
        **recipe.env,
    }
    threads = recipe.environment.get("threads")
    if isinstance(threads, int) and threads > 0:
        # torch's default intra-op count follows OMP_NUM_THREADS: a script that does not
        # set its own gets the recorded one
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    head, *rest = recipe.command
    argv = [sys.executable if head in ("python", "python3") else head, *rest]

    def relay(kind: str, subject: str, at_ns: int | None, data: dict[str, Any]) -> None:
        events.emit(kind, subject, at_ns=at_ns, **{k: v for k, v in data.items() if k != "env"})

    sup = Supervisor(
        ProcessSpec(argv=argv, cwd=cwd, env=env, name=ref, log_path=work / "replay.log"),
        backoff=Backoff(initial=0.05),
        budget=RestartBudget(max_restarts=0),
        restart_on="failure",
        grace_s=5.0,
        healthy_after_s=None,
        events=Relay(relay),
        kind_prefix="model.reconstitute.replay.",
        subject=ref,
    )
    began = time.monotonic()
    thread = sup.start(poll_s=0.005)
    thread.join(timeout_s)
    if thread.is_alive():
        sup.stop(timeout=10)
        raise CheckFailed(f"the replay of {ref} did not finish within {timeout_s:g} s")
    seconds = time.monotonic() - began
    outcome = sup.outcome()
    if outcome.state != "succeeded":
        raise CheckFailed(
            f"the replay of {ref} failed ({outcome.reason}); its log: {work / 'replay.log'}"
        )
    reported = reported_environment(work / "environment.json")
    after = differences(
        recipe.environment,
        reported if reported.get("reported") else {},
        keys=tuple(k for k in reported if k not in ("format", "reported")),
    )
    if after:
        raise NotReplayable(ref, after, ran=True)
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return Replayed(files, reported, seconds)
