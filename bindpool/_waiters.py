"""Waiting for a 4-tuple: the pool's `wait=`, first come, first served.

When no 4-tuple is free for a destination, a connect may wait up to `wait` seconds for one
(HAProxy queues a connection when its servers are full instead of failing it). Each waiter
is a future in the destination's queue; the release of a lease for that destination wakes
the first one, which then asks the allocator again. Nothing polls and nothing sleeps: a
waiting connect costs no CPU until a release or its deadline. While anyone waits for a
destination, new connects to it queue behind them instead of taking the next free 4-tuple
first. A waiter that was woken but leaves without taking anything (cancelled, timed out)
passes the wake on, so a release is never lost.
"""

from __future__ import annotations

import asyncio
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
        self.queues: dict[Destination, deque[asyncio.Future[None]]] = {}

    async def wait(self, key: Destination, seconds: float, take: Callable[[], _T | None]) -> _T:
        """Wait in line for `key`, then `take()`; again if something else took it first.

        Raises:
            TimeoutError: `seconds` passed first.
        """
        loop = asyncio.get_running_loop()
        queue = self.queues.setdefault(key, deque())
        waiter: asyncio.Future[None] = loop.create_future()
        queue.append(waiter)
        taken = False
        try:
            async with asyncio.timeout(seconds):
                while True:
                    await waiter
                    result = take()
                    if result is not None:
                        taken = True
                        return result
                    waiter = loop.create_future()  # beaten to it: keep the head of the line
                    queue.appendleft(waiter)
        finally:
            if not waiter.done():
                waiter.cancel()
            if waiter in queue:
                queue.remove(waiter)
            if not taken and waiter.done() and not waiter.cancelled():
                self.wake(key)  # woken, but leaving without it: the next in line gets it
            if not queue and self.queues.get(key) is queue:
                del self.queues[key]

    def wake(self, key: Destination) -> None:
        """A 4-tuple for `key` may be free: wake the first in line."""
        queue = self.queues.get(key)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def wake_all(self) -> None:
        """Room may have appeared for every destination (a source was added)."""
        for key in list(self.queues):
            self.wake(key)
