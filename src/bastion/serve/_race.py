"""A hedged attempt: the first attempt runs inline, a timer sends a hedge if it is slow,
and every attempt that fails while another is still out is re-routed at once.

Owns: ``Race``, the hedges and re-routes of one request as asyncio tasks, the choice of
the winner (the first success; the rest are cancelled, and a success that lost is handed
to ``discard`` so a stream's connection is closed and its attempt settled), and waiting
on them once the inline attempt has failed.

Why inline plus a timer, not tasks and ``asyncio.wait`` from the start: most requests
never hedge, and for them a timer costs a heap push, while a task and a wait cost extra
event-loop turns. When a hedge wins first, the request's own task is cancelled out of its
inline attempt and ``uncancel()``-ed, which is how asyncio lets a task recover from a
cancellation it asked for.

Why re-route at once: a hedge that lands on a replica killed a moment ago is refused in
microseconds, while the attempt it hedged may sit on a hung replica until the deadline.
A failure while another attempt is out is handled as any failure is (``Attempts``: a
refusal is requeued free, anything else needs a retry budget token, never past
``max_attempts`` or the deadline), but the next attempt goes out now, beside the one
still waiting, instead of after it.

Must never: let two successes both reach the client; leave a losing attempt running or
its exception unread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

from bastion.serve._attempts import Attempts
from bastion.serve._outcome import Failure
from bastion.serve.pool import Upstream

__all__ = ["Race", "hedged"]

T = TypeVar("T")

Run = Callable[[Upstream], Coroutine[Any, Any, T]]


class Race(Generic[T]):
    """The tasks of one hedged request (the inline attempt is not among them)."""

    __slots__ = (
        "_attempts",
        "_delay",
        "_discard",
        "_loop",
        "_me",
        "_run",
        "done",
        "settled",
        "tasks",
        "timer",
        "winner",
    )

    def __init__(
        self,
        attempts: Attempts,
        run: Run[T],
        delay: float,
        discard: Callable[[T], None] | None = None,
    ) -> None:
        """Arm the hedge timer for the current task's inline attempt."""
        loop = asyncio.get_running_loop()
        me = asyncio.current_task()
        assert me is not None
        self._attempts = attempts
        self._delay = delay
        self._run = run
        self._discard = discard
        self._loop = loop
        self._me = me
        # Made on first use: most requests never hedge, and pay for no containers.
        self.tasks: list[asyncio.Task[T]] | None = None
        self.settled: set[asyncio.Task[T]] | None = None
        self.winner: asyncio.Task[T] | None = None
        self.done = False
        self.timer = loop.call_later(delay, self.fire)

    def fire(self) -> None:
        """The hedge timer: send the request's hedge, if it may have one. When no backend
        can take it right now (every other one busy or out, or no budget token), look
        again after twice the delay rather than give the hedge up: the request's own
        attempt may be on a hung backend."""
        if self.done:
            return
        attempts = self._attempts
        if self._launch(attempts.hedge()) is None and attempts.may_hedge:
            self._delay = max(self._delay * 2, 0.001)
            self.timer = self._loop.call_later(self._delay, self.fire)

    def _launch(self, up: Upstream | None) -> asyncio.Task[T] | None:
        if up is None:
            return None
        task = self._loop.create_task(self._run(up))
        task.add_done_callback(self._on_done)
        if self.tasks is None:
            self.tasks = [task]
        else:
            self.tasks.append(task)
        return task

    def _on_done(self, task: asyncio.Task[T]) -> None:
        exc = None if task.cancelled() else task.exception()  # read, so it is never lost
        if self.done or task.cancelled():
            return
        if exc is None:
            self.done = True
            self.winner = task
            self._me.cancel()  # out of the inline attempt; hedged() uncancels
            return
        if isinstance(exc, Failure):
            if self.settled is None:
                self.settled = {task}
            else:
                self.settled.add(task)
            self._attempts.failed(exc)
            self._launch(next(self._attempts, None))

    def uncancel(self) -> None:
        """Take back the cancellation ``_on_done`` asked for when a hedge won."""
        self._me.uncancel()

    def drop(self, keep: asyncio.Task[T] | None = None) -> None:
        """Cancel every task but ``keep``; a success that lost goes to ``discard``."""
        self.done = True
        for task in self.tasks or ():
            if task is keep:
                continue
            if not task.done():
                task.cancel()
            elif not task.cancelled() and task.exception() is None and self._discard:
                self._discard(task.result())

    async def collect(self, failure: Failure) -> T:
        """The inline attempt failed with ``failure`` while tasks are out: re-route it at
        once, then wait for the first success, re-routing each further failure, until one
        succeeds or none is left (then the last failure is raised)."""
        self.done = True  # from here this coroutine reads the tasks; callbacks stand down
        self._attempts.failed(failure)
        self._launch(next(self._attempts, None))
        try:
            return await self._first_success(set(self.tasks or ()))
        except BaseException:
            self.drop()
            raise

    async def _first_success(self, pending: set[asyncio.Task[T]]) -> T:
        attempts = self._attempts
        while pending:
            finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                if task.cancelled() or (self.settled is not None and task in self.settled):
                    continue
                exc = task.exception()
                if exc is None:
                    self.drop(keep=task)
                    return task.result()
                if not isinstance(exc, Failure):
                    raise exc
                attempts.failed(exc)
                again = self._launch(next(attempts, None))
                if again is not None:
                    pending.add(again)
        assert attempts.last is not None
        raise attempts.last


async def hedged(
    up: Upstream,
    attempts: Attempts,
    run: Run[T],
    delay: float,
    discard: Callable[[T], None] | None = None,
) -> T:
    """Run ``run(up)`` inline; if it has not finished after ``delay`` seconds, hedge to
    another backend. Returns the first success; raises the last ``Failure`` when every
    attempt made here failed (the caller's attempts loop may still try more)."""
    race = Race(attempts, run, delay, discard)
    try:
        result = await run(up)
    except asyncio.CancelledError:
        race.timer.cancel()
        if race.winner is not None:
            race.uncancel()
            race.drop(keep=race.winner)
            return race.winner.result()
        race.drop()
        raise
    except Failure as failure:
        race.timer.cancel()
        if not race.tasks:
            raise
        return await race.collect(failure)
    race.timer.cancel()
    if race.tasks:
        race.drop()
    else:
        race.done = True
    return result
