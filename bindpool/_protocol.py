"""A protocol wrapper that gives a lease back when its connection is lost.

Used where the event loop, not bindpool, owns the socket: on uvloop, `create_connection` and
`open_connection` let libuv bind the chosen port and connect (its native path is the fastest
there, FIELD-NOTES.md "asyncio and uvloop"), so there is no `PooledSocket` to watch. The
transport calls `connection_lost()` exactly once after a connection was made; a failed
connect never reaches it, and the retry policy gives the lease back itself in that case.

Every callback goes to the caller's protocol unchanged; `create_connection` returns that
protocol, and only `transport.get_protocol()` shows the wrapper.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bindpool._claim import Claim
    from bindpool._socket import LeaseOwner

__all__ = ["LeasedProtocol", "leased"]


class LeasedProtocol(asyncio.Protocol):
    """Forwards to `inner`; gives the adopted lease back at `connection_lost` (or GC)."""

    __slots__ = ("_claim", "_inner", "_lost", "_owner")

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self._inner: Any = inner  # Any: a BaseProtocol that implements what the loop calls
        self._claim: Claim | None = None
        self._owner: LeaseOwner | None = None
        self._lost = False

    def _adopt(self, claim: Claim, owner: LeaseOwner) -> None:
        """Own the lease from now on. If the connection is already gone, give it back."""
        self._claim, self._owner = claim, owner
        if self._lost:
            self._give_back()

    def _give_back(self) -> None:
        claim, owner = self._claim, self._owner
        if claim is not None and owner is not None:
            self._claim = self._owner = None
            owner._give_back(claim)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        try:
            self._inner.connection_lost(exc)
        finally:
            self._give_back()

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    def data_received(self, data: bytes) -> None:
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self._inner.eof_received()
        return result

    def __del__(self) -> None:
        self._give_back()  # the transport went away without connection_lost()


class _LeasedBufferedProtocol(LeasedProtocol, asyncio.BufferedProtocol):
    """The same for a `BufferedProtocol`: the loop then calls these two instead."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)


def leased(inner: asyncio.BaseProtocol) -> LeasedProtocol:
    """The wrapper for `inner`, buffered if `inner` is."""
    if isinstance(inner, asyncio.BufferedProtocol):
        return _LeasedBufferedProtocol(inner)
    return LeasedProtocol(inner)
