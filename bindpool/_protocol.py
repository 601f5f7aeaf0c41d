"""The stream protocol of `Pool.open_connection` on uvloop's native path: it holds the lease.

On uvloop, `open_connection` lets libuv bind the chosen port and connect (its native path is
the fastest there, FIELD-NOTES.md "asyncio and uvloop"), so there is no `PooledSocket` to
watch: the lease rides on the connection's own `StreamReaderProtocol` instead, and goes back
when the transport calls `connection_lost()`, which it does exactly once after a connection
was made (a failed connect never reaches it: the retry policy gives the lease back itself).

Why the stream protocol itself and not a wrapper around it: `StreamWriter.start_tls()` swaps
the transport's protocol for an SSL protocol whose application protocol is the writer's own
stream protocol, so this one still hears `connection_lost()` when the TLS connection closes;
a wrapper would be dropped by the swap and hear nothing. Should the protocol be swapped
out by hand (`transport.set_protocol()`) and dropped, the lease goes back when it is
collected. `create_connection` hands over a `PooledSocket` instead, which follows the
connection through any swap (uvloop detaches it, asyncio closes it).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bindpool._claim import Claim
    from bindpool._socket import LeaseOwner

__all__ = ["LeasedStreamProtocol"]


class LeasedStreamProtocol(asyncio.StreamReaderProtocol):
    """A `StreamReaderProtocol` that gives its adopted lease back once the connection is
    lost, or when it is collected without having been told."""

    # Class-level defaults instead of an __init__ of its own: one call less per connection.
    _claim: Claim | None = None
    _owner: LeaseOwner | None = None
    _lost = False

    def __call__(self) -> LeasedStreamProtocol:
        """Its own factory, for `loop.create_connection()`: no closure per connection."""
        return self

    def _adopt(self, claim: Claim, owner: LeaseOwner) -> None:
        """Own the lease from now on. If the connection is already gone, give it back.

        (The loop may run `connection_lost()` before the connecting coroutine resumes.)
        """
        self._claim, self._owner = claim, owner
        if self._lost:
            self._give_back()

    def _give_back(self) -> None:
        claim, owner = self._claim, self._owner
        if claim is not None and owner is not None:
            self._claim = self._owner = None
            owner._give_back(claim)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        try:
            super().connection_lost(exc)
        finally:
            self._give_back()

    def __del__(self) -> None:
        try:
            super().__del__()  # StreamReaderProtocol's own finalizer
        finally:
            self._give_back()
