"""The ledger for strategy="kernel": the kernel picks each port, bindpool keeps the books.

Theory of operation
-------------------
With IP_BIND_ADDRESS_NO_PORT, `bind((ip, 0))` takes no port; `connect()` then picks one
knowing the destination, so the kernel itself shares each port among destinations and keeps
the 4-tuple unique, atomically across every process on the host. The per-socket
IP_LOCAL_PORT_RANGE option (Linux >= 6.3) narrows that pick to the pool's block, which also
keeps the kernel's search short when the host range is large (FIELD-NOTES.md: connect cost
stays flat up to 99% of the block). Without it the pick spans the host's ephemeral range.

What is left to bindpool: choosing a source (the one with the most room for the
destination), refusing at once when no source has room, leases and their release hooks,
and statistics. The ledger counts live claims per (source, destination) and records the port
the kernel chose, for the footprint. When `connect()` says EADDRNOTAVAIL the kernel found no
free port for that 4-tuple in the block (other programs may hold some), so that (source,
destination) is marked full until one of its leases ends or a second passes; with several
sources the next attempt goes elsewhere, with one it ends as `PortsExhausted`.

TIME_WAIT is the kernel's business here: there is no cool-down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bindpool._claim import Claim, Destination
from bindpool._table import family_of
from bindpool._types import SourceStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["FULL_FOR", "KernelLedger"]

# How long a (source, destination) the kernel reported full is skipped, unless one of its
# leases ends first: long enough not to ask the kernel again on every call, short enough to
# notice ports other programs give back.
FULL_FOR = 1.0


@dataclass
class _Source:
    address: str
    size: int
    live: dict[Destination, int] = field(default_factory=dict)
    ports: dict[int, int] = field(default_factory=dict)  # port -> live claims on it
    full_until: dict[Destination, float] = field(default_factory=dict)


class KernelLedger:
    """Claims without ports: the kernel picks each at connect time, `bound()` records it.

    Args:
        sources: source IP -> how many ports the kernel may pick from for it.
        clock: monotonic seconds.
    """

    def __init__(
        self, sources: Mapping[str, int], *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._clock = clock
        self._sources = {ip: _Source(ip, size) for ip, size in sources.items()}
        self._families: dict[int, list[_Source]] = {}
        for source in self._sources.values():
            self._families.setdefault(family_of(source.address), []).append(source)
        self._turn = 0

    def acquire(self, destination: Destination, family: int) -> Claim | None:
        """A claim on the source with the most room for `destination`, or None if none has."""
        sources = self._families.get(family)
        if not sources:
            return None
        now = self._clock()
        self._turn = (self._turn + 1) % len(sources)
        best, room = None, 0
        for source in sources[self._turn :] + sources[: self._turn]:  # ties rotate
            if source.full_until.get(destination, -1.0) > now:
                continue
            left = source.size - source.live.get(destination, 0)
            if left > room:
                best, room = source, left
        if best is None:
            return None
        best.live[destination] = best.live.get(destination, 0) + 1
        return Claim(best.address, destination, 0, -1, best)

    def bound(self, claim: Claim, port: int) -> None:
        """The kernel picked `port` for this claim at connect time (0: it kept none)."""
        if port and claim.live and not claim.port:
            source: _Source = claim.slot
            claim.port = port
            source.ports[port] = source.ports.get(port, 0) + 1

    def release(self, claim: Claim) -> None:
        """The claim's connection ended, or was given up."""
        source = self._give_back(claim)
        source.full_until.pop(claim.destination, None)  # a port for it may be free now

    def clashed(self, claim: Claim) -> None:
        """connect() said EADDRNOTAVAIL: the kernel has no free port for this 4-tuple."""
        source = self._give_back(claim)
        source.full_until[claim.destination] = self._clock() + FULL_FOR

    port_in_use = clashed  # bind((ip, 0)) with NO_PORT takes no port: never EADDRINUSE

    def statistics(self) -> dict[str, SourceStatistics]:
        now = self._clock()
        figures = {}
        for source in self._sources.values():
            for key, until in list(source.full_until.items()):
                if until <= now:
                    del source.full_until[key]
            figures[source.address] = SourceStatistics(
                ports=source.size,
                in_use=sum(source.live.values()),
                footprint=len(source.ports),
                cooling=0,
                held=len(source.full_until),
                blocked=0,
                destinations=len(source.live),
            )
        return figures

    def _give_back(self, claim: Claim) -> _Source:
        if not claim.live:
            raise RuntimeError(f"{claim!r} was already given back")
        claim.live = False
        source: _Source = claim.slot
        left = source.live[claim.destination] - 1
        if left:
            source.live[claim.destination] = left
        else:
            del source.live[claim.destination]
        if claim.port:
            refs = source.ports[claim.port] - 1
            if refs:
                source.ports[claim.port] = refs
            else:
                del source.ports[claim.port]
        return source
