"""Admission: a bounded priority queue that absorbs short bursts, then sheds.

Owns: waiters for capacity (a backend under its concurrency limit, or any backend back
from ejection). Priority classes come from the ``x-bastion-priority`` header: ``high`` may
fill the whole queue, ``normal`` 80% of it, ``low`` 50%, so under overload the low class
is shed first and the high class still finds room. A waiter leaves with capacity, or
at its deadline (the caller answers 503 with Retry-After). Memory stays bounded: at most
``max_queue`` waiters, one small future each; everything beyond is refused at once.

Must never: hold a request longer than its deadline, or wake a waiter whose future is done.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from dataclasses import dataclass

__all__ = ["PRIORITIES", "Admission", "AdmissionStatistics", "QueueFull"]

PRIORITIES = {"high": 0, "normal": 1, "low": 2}
_SHARE = (1.0, 0.8, 0.5)


class QueueFull(Exception):
    """The queue has no room for this priority class: shed the request."""


@dataclass(frozen=True, slots=True)
class AdmissionStatistics:
    """The admission queue.

    Attributes:
        waiting: requests waiting for capacity now.
        max_queue: the most that may wait at once (``high`` may fill it all, ``normal``
            80 %, ``low`` 50 %).
        peak: the most that ever waited at once.
        admitted: waiters that got capacity.
        timed_out: waiters whose queue time ran out (shed with 429 or 503).
        refused: requests refused at once, the queue being full for their priority.
    """

    waiting: int
    max_queue: int
    peak: int
    admitted: int
    timed_out: int
    refused: int


class Admission:
    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._heap: list[tuple[int, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self.waiting = 0
        self.admitted = 0
        self.timed_out = 0
        self.refused = 0
        self.peak = 0

    def __len__(self) -> int:
        return self.waiting

    async def wait(self, priority: int, timeout_s: float) -> bool:
        """Wait for a wake-up; True if woken, False at the deadline. Raises QueueFull."""
        if timeout_s <= 0 or self.waiting >= self.max_queue * _SHARE[priority]:
            self.refused += 1
            raise QueueFull
        if len(self._heap) > 2 * self.max_queue + 16:
            # Waiters that timed out stay in the heap until popped; compact so a long
            # burst with few wake-ups cannot grow it without bound.
            self._heap = [item for item in self._heap if not item[2].done()]
            heapq.heapify(self._heap)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._heap, (priority, next(self._seq), fut))
        self.waiting += 1
        self.peak = max(self.peak, self.waiting)
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout_s)
            self.admitted += 1
            return True
        except TimeoutError:
            self.timed_out += 1
            return False
        finally:
            self.waiting -= 1
            if not fut.done():
                fut.cancel()  # stays in the heap until popped; wake() skips it

    def wake(self, n: int = 1) -> None:
        """Capacity freed: wake up to ``n`` waiters, best priority first."""
        heap = self._heap
        while n > 0 and heap:
            _, _, fut = heapq.heappop(heap)
            if not fut.done():
                fut.set_result(None)
                n -= 1

    def wake_all(self) -> None:
        self.wake(len(self._heap))

    def statistics(self) -> AdmissionStatistics:
        return AdmissionStatistics(
            waiting=self.waiting,
            max_queue=self.max_queue,
            peak=self.peak,
            admitted=self.admitted,
            timed_out=self.timed_out,
            refused=self.refused,
        )
