"""A supervised job's vault-server token: minted by its supervisor, refreshed before it
expires, handed over in a file.

Owns: the scope of a job's token (its segment, the prefix ``ckpt/<job>/``, read and
append, an expiry of at most an hour), the token file the worker reads
(``<state_dir>/tokens/<job>.token``, 0600 in a 0700 directory, replaced whole by a
rename), and the thread that mints the next token when half of the current one's life
is gone.

Why a file and not an environment variable: a process's environment cannot change once
it runs, so a token in ``BASTION_VAULT_TOKEN`` would expire under a long job (or would
have to live for the whole run, which a stolen token then does too). The worker gets
``BASTION_VAULT_URL`` and ``BASTION_VAULT_TOKEN_FILE`` (a path, no secret) and its
``VaultClient`` re-reads the file when it changes, so a job keeps checkpointing across
any number of refreshes without a restart. The environment of a process is also
readable by every process of its user (``/proc/PID/environ``) and inherited by
whatever it starts; the file is readable by the owner alone and only while the job runs.

Must never: put a token in an event, a log line or an error (events carry the token's
id only), or mint again after the job's token was revoked or its segment quarantined
(revoking a job's credential must stop its writes, not last until the next refresh):
the refresher then stops and says so (``segment.token.refresh_stopped``).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from bastion import event_kinds as ek
from bastion.errors import BastionError
from bastion.segment._segments import _events, mint_token
from bastion.segment._state import SegmentState
from bastion.segment._token import MAX_TTL_S, inspect_token

if TYPE_CHECKING:
    from bastion.manifest import Manifest

__all__ = ["JobTokens", "job_token_path"]

#: refresh when this fraction of the token's life is left
_REFRESH_AT = 0.5


def job_token_path(state_dir: Path | str, job: str) -> Path:
    return Path(state_dir) / "tokens" / f"{job}.token"


class JobTokens:
    """The token of job ``job`` in ``segment`` for the manifest's vault server
    (``vault.server``): ``start()`` mints the first and returns the worker's
    environment; a thread mints the next one at half-life until ``stop()``."""

    def __init__(
        self,
        manifest: Manifest,
        job: str,
        segment: str,
        *,
        url: str,
        ttl_s: float = MAX_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.manifest = manifest
        self.job = job
        self.segment = segment
        self.url = url
        self.ttl_s = min(float(ttl_s), MAX_TTL_S)
        self.clock = clock
        self.path = job_token_path(manifest.state_dir, job)
        self.token_id = ""
        self.expires = 0.0
        self.minted = 0
        self.stopped_why = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def env(self) -> dict[str, str]:
        from bastion.vault._client import ENV_TOKEN_FILE, ENV_URL

        return {ENV_URL: self.url, ENV_TOKEN_FILE: str(self.path)}

    def start(self) -> dict[str, str]:
        """Mint the first token (a ``UsageError`` if the segment is quarantined or the
        prefix outside its namespace) and start refreshing."""
        self._mint()
        self._thread = threading.Thread(target=self._loop, name=f"token-{self.job}", daemon=True)
        self._thread.start()
        return self.env()

    def stop(self) -> None:
        """Stop refreshing and delete the token file; a revocation the refresher had not
        seen yet (the job ended on it first) is still reported."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if not self.stopped_why and self.token_id and (why := self._refusal()):
            self._report(why)
        with contextlib.suppress(OSError):
            self.path.unlink()

    def _mint(self) -> None:
        token = mint_token(
            self.manifest,
            self.segment,
            prefixes=(f"ckpt/{self.job}/",),
            ops=("read", "append"),
            ttl_s=self.ttl_s,
            clock=self.clock,
        )
        claims = inspect_token(token)[0]
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, token.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(self.path)
        self.token_id = str(claims["id"])
        self.expires = float(claims["exp"])
        self.minted += 1

    def _refusal(self) -> str:
        state = SegmentState(Path(self.manifest.state_dir))
        if state.quarantined(self.segment):
            return f"segment {self.segment!r} is quarantined"
        if self.token_id in state.read().get("revoked", {}):
            return f"the job's token {self.token_id} was revoked"
        return ""

    def _loop(self) -> None:
        while True:
            left = self.expires - self.clock()
            if self._stop.wait(max(0.05, left - self.ttl_s * _REFRESH_AT)):
                return
            why = self._refusal()
            if not why:
                try:
                    self._mint()
                    continue
                except BastionError as exc:
                    why = str(exc)
            self._report(why)
            return

    def _report(self, why: str) -> None:
        self.stopped_why = why
        with contextlib.closing(_events(self.manifest)) as log:
            log.emit(
                ek.SEGMENT_TOKEN_REFRESH_STOPPED,
                self.job,
                segment=self.segment,
                job=self.job,
                id=self.token_id,
                reason=why,
            )
