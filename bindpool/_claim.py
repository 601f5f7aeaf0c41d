"""A claim: one 4-tuple an allocator handed out, until it is given back.

Allocators are the port table (strategy "table") and the kernel strategy's ledger. The pool,
the socket and the protocol wrapper only read `source`, `port` and `destination` and give the
claim back through the pool; what the allocator needs to take it back rides in `slot`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Claim", "Destination"]

Destination = tuple[str, int]


class Claim:
    """One (source, port, destination) held by a connection or an attempt.

    Attributes:
        source: the source IP to bind.
        port: the source port (0 until the kernel picks it, with strategy "kernel").
        destination: the destination `(ip, port)`.
        live: True until the allocator takes the claim back.
        rank: the port's place in the table's order (-1 for the kernel strategy).
        slot: the allocator's own record for this (source, destination).
        reused: True when the table handed out a 4-tuple of its own still cooling
            (released less than `cooldown` ago): a clash on it is the pool's own
            connection still closing, not a stranger's.
    """

    __slots__ = ("destination", "live", "port", "rank", "reused", "slot", "source")

    def __init__(
        self, source: str, destination: Destination, port: int, rank: int, slot: Any
    ) -> None:
        self.source = source
        self.destination = destination
        self.port = port
        self.rank = rank
        self.slot: Any = slot  # Any: each allocator keeps its own kind of record here
        self.live = True
        self.reused = False

    def __repr__(self) -> str:
        state = "live" if self.live else "returned"
        return f"<Claim {self.source}:{self.port} -> {self.destination} {state}>"
