"""The socket the pool hands out: it gives its lease back exactly once.

A connection ends in one of three ways for the socket object, and each returns the lease:
- `close()` (asyncio's transports call it one loop iteration after `transport.close()`),
  which reaches `_real_close()` once the last `makefile()` reader is gone too;
- `detach()` (uvloop's transports detach: libuv has closed the fd itself);
- garbage collection of a socket nobody closed (`__del__`, after the base class has
  closed the fd and warned).
The lease goes back after the fd is closed, so the table never offers a 4-tuple whose
socket still exists. FIELD-NOTES.md: this fired exactly once per socket in every aiohttp
scenario tried, on both loops.
"""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING, Protocol

from bindpool._types import Lease

if TYPE_CHECKING:
    from bindpool._claim import Claim

__all__ = ["LeaseOwner", "PooledSocket"]


class LeaseOwner(Protocol):
    """Who takes a lease back: the pool."""

    def _give_back(self, claim: Claim) -> None: ...


class PooledSocket(socket.socket):
    """A connected, non-blocking TCP socket whose source port belongs to a `Pool`.

    Made by `Pool.connect()`, not constructed directly. Use it like any socket, or hand it
    to `loop.create_connection(sock=...)`, aiohttp, httpx or anyio. Its lease goes back to
    the pool exactly once: on `close()`, on `detach()`, or when it is garbage-collected
    unclosed.
    """

    __slots__ = ("_claim", "_owner")

    def __init__(
        self,
        family: int = -1,
        type: int = -1,  # socket.socket's own parameter names
        proto: int = -1,
        fileno: int | None = None,
    ) -> None:
        super().__init__(family, type, proto, fileno)
        self._claim: Claim | None = None
        self._owner: LeaseOwner | None = None

    def _adopt(self, claim: Claim, owner: LeaseOwner) -> None:
        """Take over the lease: from now on this socket is the one that gives it back."""
        self._claim = claim
        self._owner = owner

    @property
    def lease(self) -> Lease | None:
        """The 4-tuple this socket holds, or None once it was given back."""
        claim = self._claim
        if claim is None:
            return None
        return Lease(claim.source, claim.port, claim.destination)

    def _give_back(self) -> None:
        claim, owner = self._claim, self._owner
        if claim is not None and owner is not None:
            self._claim = self._owner = None
            owner._give_back(claim)

    def _real_close(self) -> None:
        # socket.close() and the last makefile() reader's close() both end here.
        try:
            super()._real_close()  # type: ignore[misc]  # private, unchanged since 3.2
        finally:
            self._give_back()

    def detach(self) -> int:
        try:
            return super().detach()
        finally:
            self._give_back()

    def __del__(self) -> None:
        try:
            super().__del__()  # type: ignore[misc]  # _socket.socket's finalizer: closes the fd
        finally:
            self._give_back()
