"""Fakes and helpers shared by the tests: a clock that moves only when told to, a loop that
refuses socket hand-overs, and a bounded wait for what the loop does later."""

from __future__ import annotations

import asyncio
import socket
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


class Names:
    """The running loop's `getaddrinfo` answering for made-up names: no DNS, no /etc/hosts.

    `names` maps a name to the socket addresses it resolves to, in order; each is `(ip,
    port)` or, for IPv6, `(ip, port, flowinfo, scope_id)` as getaddrinfo gives them (the
    port asked for is ignored: the test says where each address really listens). Other
    hosts go to the loop's own `getaddrinfo`. Use as `with Names(loop, {...}):`.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, names: dict[str, list[Any]]) -> None:
        self._loop = loop
        self._names = names
        self.asked: list[str] = []

    async def getaddrinfo(self, host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        if host not in self._names:
            return await type(self._loop).getaddrinfo(self._loop, host, port, *args, **kwargs)
        self.asked.append(host)
        return [
            (
                socket.AF_INET6 if ":" in address[0] else socket.AF_INET,
                socket.SOCK_STREAM,
                socket.IPPROTO_TCP,
                "",
                address,
            )
            for address in self._names[host]
        ]

    def __enter__(self) -> Names:
        self._loop.getaddrinfo = self.getaddrinfo  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc: object) -> None:
        del self._loop.getaddrinfo  # the class's method again
