"""Public value types: what a lease is and what `Pool.statistics()` reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bindpool._health import State

__all__ = ["Lease", "PoolStatistics", "SourceStatistics"]


@dataclass(frozen=True, slots=True)
class Lease:
    """One 4-tuple the pool handed to a connection (or to an attempt it gave up on).

    Attributes:
        source: the local IP the socket was bound to, in canonical form.
        port: the local port the socket was bound to.
        destination: the remote `(ip, port)`, the ip in canonical form.
    """

    source: str
    port: int
    destination: tuple[str, int]


@dataclass(frozen=True, slots=True)
class SourceStatistics:
    """Figures for one source IP.

    Attributes:
        ports: how many ports this source may use (its range, or its shard of it).
        in_use: live leases on this source.
        footprint: distinct ports bound by live leases now: what other programs on the host
            lose from the kernel's automatic port pick.
        cooling: released (port, destination) pairs still resting (always 0 with
            strategy "kernel", which leaves TIME_WAIT to the kernel).
        held: (port, destination) pairs resting after the kernel reported them taken by
            another socket (EADDRNOTAVAIL at connect) or their port unusable (EADDRINUSE at
            bind): briefly at first, twice as long at each refusal in a row, up to 60 s.
            Always 0 with strategy "kernel", which asks the kernel again every time.
        closing: (port, destination) pairs of the pool's own, released moments ago and
            refused because they are still closing (FIN_WAIT2): resting about
            10 ms. Always 0 with strategy "kernel".
        blocked: ports unusable on this source for a while (EADDRINUSE at bind: a listener,
            or a socket without SO_REUSEADDR, holds them); always 0 with strategy "kernel".
        destinations: destinations this source keeps any state for.
        state: "up"; "down" while its address is not on this host (bind() said
            EADDRNOTAVAIL: it is skipped and tried again every second at most);
            "draining" while it is being removed.
    """

    ports: int
    in_use: int
    footprint: int
    cooling: int
    held: int
    blocked: int
    destinations: int
    closing: int = 0
    state: State = "up"


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    """A snapshot of a pool: frozen, picklable, `dataclasses.asdict`-able.

    Attributes:
        in_use: live leases (connections open, or being opened).
        footprint: distinct (source, port) pairs held by live leases now.
        cooling: released 4-tuples still in cool-down.
        connects: connections opened.
        retries: attempts that met EADDRINUSE or EADDRNOTAVAIL and moved on to another port.
        exhausted: `PortsExhausted` errors raised.
        sources: per-source figures, keyed by source IP.
    """

    in_use: int
    footprint: int
    cooling: int
    connects: int
    retries: int
    exhausted: int
    sources: dict[str, SourceStatistics]  # a copy: changing it changes nothing
