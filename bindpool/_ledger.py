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
free port for that 4-tuple in the block (other programs may hold some, or TIME_WAIT): the
pool's retry loop then avoids that source for the rest of the call (`acquire(avoid=...)`),
so with several sources the next attempt goes elsewhere and with one the call ends as
`PortsExhausted`. The ledger itself remembers nothing of it: the next call asks the kernel
again, so a destination is never refused longer than the kernel refuses it (a fixed
"full for a second" mark once made a churn wait 1.9 s where a plain socket waited 1.0 s).
Sources whose address left the host are down (`_health.Health`), as in the table.

TIME_WAIT is the kernel's business here: there is no cool-down.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from bindpool._claim import Claim, Destination
from bindpool._health import CLOSING_REST, Health, Strikes
from bindpool._select import Selector
from bindpool._sources import SourceSet
from bindpool._table import family_of
from bindpool._types import SourceStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

__all__ = ["KernelLedger"]


@dataclass
class _Source:
    address: str
    size: int
    live: dict[Destination, int] = field(default_factory=dict)  # destination -> live claims
    ports: dict[int, int] = field(default_factory=dict)  # port -> live claims on it
    count: int = 0  # live claims, all destinations

    @property
    def family(self) -> int:
        return family_of(self.address)


class KernelLedger:
    """Claims without ports: the kernel picks each at connect time, `bound()` records it.

    Args:
        sources: source IP -> how many ports the kernel may pick from for it.
        clock: monotonic seconds.
        health: which sources are up, shared with the pool (a new one by default).
        select: the order to try sources in (default: most room first).
    """

    def __init__(
        self,
        sources: Mapping[str, int],
        *,
        clock: Callable[[], float] = time.monotonic,
        health: Health | None = None,
        select: Selector | None = None,
    ) -> None:
        self._clock = clock
        self.health = health if health is not None else Health(clock)
        self._select = select if select is not None else Selector("room")
        self.sources = SourceSet(_Source(ip, size) for ip, size in sources.items())
        # For connects waiting (`wait=`) only: when to ask the kernel again after it said a
        # destination was full (its ports' 4-tuples may be closing). New calls ask at once.
        self._strikes = Strikes()
        self._ask_again: dict[Destination, float] = {}

    def acquire(
        self, destination: Destination, family: int, avoid: Collection[str] = ()
    ) -> Claim | None:
        """A claim on the first source, in the `select` policy's order, with room for
        `destination`, or None if none has.

        `avoid`: sources the kernel reported full for it earlier in this call.
        """
        sources = self.sources.families.get(family)
        if sources is None:
            return None
        health = self.health
        if avoid or health.down:
            now = self._clock()
            sources = [
                s for s in sources if s.address not in avoid and health.usable(s.address, now)
            ]
        if len(sources) > 1:
            sources = self._select.order(
                destination, sources, lambda s: s.size - s.live.get(destination, 0)
            )
        for source in sources:
            live = source.live.get(destination, 0)
            if live < source.size:
                source.live[destination] = live + 1
                source.count += 1
                return Claim(source.address, destination, 0, -1, source)
        return None

    def resting(self, destination: Destination, family: int) -> float | None:
        """For a connect waiting for `destination`: seconds until it asks the kernel again
        after a refusal (briefly, then longer at each refusal in a row), or None.

        Once per refusal: the answer is taken, so a waiter that asks again without a new
        refusal in between waits for a release instead of timing the same rest twice."""
        until = self._ask_again.pop(destination, None)
        return None if until is None else max(0.0, until - self._clock())

    def add_source(self, address: str, size: int) -> None:
        """A new source (or a draining one back): new connections may use it now."""
        if not self.sources.revive(address):
            self.sources.add(_Source(address, size))

    def remove_source(self, address: str) -> int:
        """No new connection uses `address`; returns its live leases (it drains)."""
        count = self.sources.all[address].count
        self.sources.retire(address, count)
        if not count:
            self.health.forget(address)
        return count

    def bound(self, claim: Claim, port: int) -> None:
        """The kernel picked `port` for this claim at connect time (0: it kept none)."""
        if port and claim.live and not claim.port:
            source: _Source = claim.slot
            claim.port = port
            source.ports[port] = source.ports.get(port, 0) + 1

    def release(self, claim: Claim) -> None:
        """The claim's connection ended, or was given up."""
        self._give_back(claim)
        if self._strikes:
            self._strikes.pop(claim.destination, None)  # the kernel took it: record ends

    def clashed(self, claim: Claim) -> float:
        """connect() said EADDRNOTAVAIL: the kernel has no free port for this 4-tuple now.

        Nothing rests (returns 0): the pool avoids the source for the rest of the call.
        """
        self._give_back(claim)
        now = self._clock()
        key = claim.destination
        self._ask_again[key] = now + self._strikes.strike(key, CLOSING_REST, now)
        return 0.0

    # bind((ip, 0)) with NO_PORT takes no port, so never EADDRINUSE; and a source that left
    # the host only ends the claim: the pool marks it down in `health`.
    port_in_use = clashed

    def source_gone(self, claim: Claim) -> None:
        self._give_back(claim)

    def statistics(self) -> dict[str, SourceStatistics]:
        self._strikes.prune(self._clock())
        figures = {}
        for source in self.sources.all.values():
            figures[source.address] = SourceStatistics(
                ports=source.size,
                in_use=sum(source.live.values()),
                footprint=len(source.ports),
                cooling=0,
                held=0,
                blocked=0,
                destinations=len(source.live),
                state=self.sources.state(source.address, self.health.state(source.address)),
            )
        return figures

    def _give_back(self, claim: Claim) -> _Source:
        if not claim.live:
            raise RuntimeError(f"{claim!r} was already given back")
        claim.live = False
        source: _Source = claim.slot
        source.count -= 1
        if self.sources.draining and self.sources.ended(source.address, source.count):
            self.health.forget(source.address)
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
