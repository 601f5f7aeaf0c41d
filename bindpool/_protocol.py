"""A protocol wrapper that gives a lease back when its connection is lost.

Used where the event loop, not bindpool, owns the socket: on uvloop, `create_connection` and
`open_connection` let libuv bind the chosen port and connect (its native path is the fastest
there, FIELD-NOTES.md "asyncio and uvloop"), so there is no `PooledSocket` to watch. The
transport calls `connection_lost()` exactly once after a connection was made; a failed
connect never reaches it, and the retry policy gives the lease back itself in that case.

The lease follows the transport, not the wrapper: whoever swaps the transport's protocol
(`transport.set_protocol()`) drops the wrapper, and the new protocol, not the wrapper, hears
of the loss. So each wrapper with a lease stays in `_HOLDING` and watches its transport with
a weak reference: the lease goes back at `connection_lost()` or, failing that, when the
transport is collected (a closed, dropped transport), whichever comes first, once.

Every callback goes to the caller's protocol unchanged; `create_connection` returns that
protocol, and only `transport.get_protocol()` shows the wrapper.
"""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bindpool._claim import Claim
    from bindpool._socket import LeaseOwner

__all__ = ["LeasedProtocol", "leased"]


class LeasedProtocol(asyncio.Protocol):
    """Forwards to `inner`; gives the adopted lease back at `connection_lost`, or when the
    transport is collected."""

    __slots__ = ("_claim", "_inner", "_lost", "_owner", "_watch")

    def __init__(self, inner: asyncio.BaseProtocol) -> None:
        self._inner: Any = inner  # Any: a BaseProtocol that implements what the loop calls
        self._claim: Claim | None = None
        self._owner: LeaseOwner | None = None
        self._watch: weakref.ref[asyncio.BaseTransport] | None = None
        self._lost = False

    def _adopt(self, claim: Claim, owner: LeaseOwner, transport: asyncio.BaseTransport) -> None:
        """Own the lease from now on. If the connection is already gone, give it back."""
        self._claim, self._owner = claim, owner
        self._watch = weakref.ref(transport, self._transport_gone)
        _HOLDING.add(self)
        if self._lost:
            self._give_back()

    def _transport_gone(self, _: weakref.ref[asyncio.BaseTransport]) -> None:
        self._give_back()

    def _give_back(self) -> None:
        claim, owner = self._claim, self._owner
        if claim is not None and owner is not None:
            self._claim = self._owner = self._watch = None
            _HOLDING.discard(self)
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


class _LeasedBufferedProtocol(LeasedProtocol, asyncio.BufferedProtocol):
    """The same for a `BufferedProtocol`: the loop then calls these two instead."""

    __slots__ = ()

    def get_buffer(self, sizehint: int) -> Any:
        return self._inner.get_buffer(sizehint)

    def buffer_updated(self, nbytes: int) -> None:
        self._inner.buffer_updated(nbytes)


# Every wrapper holding a lease, so that dropping it (a protocol swap) cannot lose the lease.
_HOLDING: set[LeasedProtocol] = set()


def leased(inner: asyncio.BaseProtocol) -> LeasedProtocol:
    """The wrapper for `inner`, buffered if `inner` is."""
    if isinstance(inner, asyncio.BufferedProtocol):
        return _LeasedBufferedProtocol(inner)
    return LeasedProtocol(inner)
