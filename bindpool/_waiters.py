"""Waiting for a 4-tuple: the pool's `wait=`, first come, first served.

When no 4-tuple is free for a destination, a connect may wait up to `wait` seconds for one
(HAProxy queues a connection when its servers are full instead of failing it). Each waiter
is a future in the destination's queue; the release of a lease for that destination wakes
the first one, which then asks the allocator again. Nothing polls and nothing sleeps: a
waiting connect costs no CPU until a release or its deadline. While anyone waits for a
destination, new connects to it queue behind them instead of taking the next free 4-tuple
first. A waiter that was woken but leaves without taking anything (cancelled, timed out)
passes the wake on, so a release is never lost.

A released 4-tuple may not be usable at once: until the peer closes its end, the kernel
refuses it (FIN_WAIT2), and the table rests it a moment (`_health.py`). So the head of the
line also sets one timer for the end of the earliest such rest for its destination, if any:
the moment it can succeed without a release. A connect that was in line and met such a
refusal goes back to the head of the line, not the end; whoever leaves the head of the
line while such a rest is on hands the timer to the next, who looks again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    from bindpool._claim import Destination

__all__ = ["Waiters"]

_T = TypeVar("_T")


class Waiters:
    """Per destination, the connects waiting for one of its 4-tuples to be released."""

    __slots__ = ("queues",)

    def __init__(self) -> None:
        # Empty while nobody waits: the connect and release paths test it and go on.
        # True: woken by a release (and taken out of line); False: by a rest's timer.
        self.queues: dict[Destination, deque[asyncio.Future[bool]]] = {}

    async def wait(
        self,
        key: Destination,
        seconds: float,
        take: Callable[[], _T | None],
        resting: Callable[[], float | None],
        *,
        first: bool = False,
    ) -> _T:
        """Wait in line for `key`, then `take()`; again if something else took it first.

        `resting()`: seconds until a 4-tuple for `key` ends its rest, or None. `first`: the
        caller was in line already; it goes back to the head.

        Raises:
            TimeoutError: `seconds` passed first.
        """
        loop = asyncio.get_running_loop()
        queue = self.queues.setdefault(key, deque())
        waiter: asyncio.Future[bool] = loop.create_future()
        if first:
            queue.appendleft(waiter)
        else:
            queue.append(waiter)
        queued = True  # in `queue`: tracked, for `in` on a deque of thousands costs ~20 us
        taken = False
        try:
            async with asyncio.timeout(seconds):
                while True:
                    due = resting() if queue[0] is waiter else None
                    timer = None if due is None else loop.call_later(due, _wake, waiter, False)
                    try:
                        released = await waiter
                    finally:
                        if timer is not None:
                            timer.cancel()
                    if not released:  # woken by its timer: in line, unless a wake() that
                        # went past it, done, has dropped it already
                        with contextlib.suppress(ValueError):
                            queue.remove(waiter)
                    queued = False
                    result = take()
                    if result is not None:
                        taken = True
                        return result
                    waiter = loop.create_future()  # beaten to it: keep the head of the line
                    queue.appendleft(waiter)
                    queued = True
        finally:
            if queued and waiter.done() and not waiter.cancelled() and waiter.result():
                queued = False  # a release woke it (out of line), then it was cancelled
            # Woken, but leaving without the 4-tuple: the next in line gets the wake.
            pass_on = not queued and not taken and waiter.done() and not waiter.cancelled()
            if queued:  # cancelled or timed out in line (a rare way out: remove() scans)
                # Leaving the head of the line while a refused 4-tuple rests: the next one
                # sets the timer. Not on every hand-over: a wake that finds nothing free
                # costs a task switch (benchmarks/waiting.py).
                pass_on = bool(queue) and queue[0] is waiter and resting() is not None
                if not waiter.done():
                    waiter.cancel()
                with contextlib.suppress(ValueError):  # a wake() may have dropped it, done
                    queue.remove(waiter)
            if pass_on and queue:
                self.wake(key)
            if not queue and self.queues.get(key) is queue:
                del self.queues[key]

    def wake(self, key: Destination) -> None:
        """A 4-tuple for `key` may be free: wake the first in line."""
        queue = self.queues.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return

    def wake_all(self) -> None:
        """Room may have appeared for every destination (a source was added)."""
        for key in list(self.queues):
            self.wake(key)


def _wake(waiter: asyncio.Future[bool], released: bool) -> None:
    if not waiter.done():
        waiter.set_result(released)
