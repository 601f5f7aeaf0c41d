"""Fakes and helpers shared by the tests: a clock that moves only when told to, a loop that
refuses socket hand-overs, and a bounded wait for what the loop does later."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


class FakeClock:
    """Monotonic seconds that advance only through `advance()`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class RefusingHandOverLoop(asyncio.SelectorEventLoop):
    """A loop whose `create_connection(sock=...)` fails without closing the socket."""

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("sock") is not None:
            raise OSError("hand-over failed")
        return await super().create_connection(*args, **kwargs)


async def until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Wait (bounded) for something the loop does a few iterations later."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110  # polls state the loop changes; no event
            await asyncio.sleep(0.005)
