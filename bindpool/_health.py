"""Reading the kernel's refusals: how long each rests, and which sources are up.

Theory of operation
-------------------
A refusal from the kernel is evidence, not a verdict (FIELD-NOTES.md, "Learned from trying
the library from outside"):

- EADDRNOTAVAIL at `connect()` on an explicitly bound port: the 4-tuple exists right now.
  If the pool released that 4-tuple itself moments ago (it came from the cool-down), it is
  its own connection still closing (FIN_WAIT1/FIN_WAIT2 until the peer's FIN, a moment on
  loopback, a round trip or more on a network): it comes back as soon as the peer closes.
  Otherwise another socket holds it, for a few milliseconds (a racing process) or for as
  long as a connection lasts. Either way the first refusal rests the 4-tuple briefly and
  each further one twice as long, up to TCP_TIMEWAIT_LEN (60 s, the longest a closed
  4-tuple stays taken); a connection that gets through clears the record.
- EADDRINUSE at `bind()`: a listener, a socket without SO_REUSEADDR or the kernel's own
  automatic pick holds the port on this address, for every destination. Same schedule,
  longer first rest: such holders live longer than a closing connection.
- EADDRNOTAVAIL at `bind()`: the source address is not on this host any more (`ip addr
  del`). The source goes *down*: skipped, so connections go to the other sources, and tried
  again with backoff (at most every `SOURCE_RETRY_MAX` seconds while traffic continues, so
  it is back within that long of the address returning). A bind that works brings it up.

Everything here is pure: an injected clock, no I/O, no logging (the pool logs).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "CLOSING_REST",
    "HOLD_MAX",
    "PORT_REST",
    "SOURCE_RETRY_MAX",
    "STRANGER_REST",
    "Health",
    "Strikes",
    "rest",
]

# First rest of a 4-tuple of the pool's own refused while still closing: a loopback peer
# closes within a millisecond or so, a distant one within a round trip.
CLOSING_REST = 0.01
# First rest of a 4-tuple someone else holds: racing processes let go within milliseconds;
# a real connection is met again at most ~11 times on the way to HOLD_MAX.
STRANGER_REST = 0.25
# First rest of a port refused at bind (EADDRINUSE).
PORT_REST = 1.0
# TCP_TIMEWAIT_LEN: no 4-tuple stays taken longer after its connection closed.
HOLD_MAX = 60.0
# A down source is tried again after 0.125 s, then 0.25, 0.5, 1, 1, ... while traffic goes on.
SOURCE_RETRY_FIRST = 0.125
SOURCE_RETRY_MAX = 1.0

State = Literal["up", "down", "draining"]


def rest(first: float, strikes: int, ceiling: float = HOLD_MAX) -> float:
    """Seconds to rest after the `strikes`-th refusal in a row (1 = the first)."""
    return min(first * (1 << min(strikes - 1, 16)), ceiling)


class Strikes(dict[Hashable, tuple[int, float]]):
    """Refusals in a row, per rank (or destination): key -> (count, when to forget them).

    A record is forgotten when no refusal came for as long again as its last rest, so a
    4-tuple refused once a long time ago starts again from a brief rest.
    """

    def strike(self, key: Hashable, first: float, now: float) -> float:
        """One more refusal of `key`: how long it rests now."""
        count, forget = self.get(key, (0, 0.0))
        count = count + 1 if forget > now else 1
        seconds = rest(first, count)
        self[key] = (count, now + 2 * seconds)
        return seconds

    def prune(self, now: float) -> None:
        """Forget what is due to be forgotten."""
        for key in [key for key, (_, forget) in self.items() if forget <= now]:
            del self[key]


class _Down:
    """A source that is down: when it may be tried again, and how often it failed."""

    __slots__ = ("strikes", "until")

    def __init__(self) -> None:
        self.strikes = 0
        self.until = 0.0


class Health:
    """Which sources are up. Shared by the pool and its allocator.

    `down` is empty while every source is up, so the connect path pays one truthiness
    test for all of this.

    Args:
        clock: monotonic seconds.
    """

    __slots__ = ("_clock", "down", "probing")

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.down: dict[str, _Down] = {}
        # Down sources offered again (their retry time came): the next bind decides.
        self.probing: set[str] = set()

    def usable(self, address: str, now: float) -> bool:
        """Whether a connection may use `address` now: up, or down and due for a retry."""
        down = self.down.get(address)
        if down is None:
            return True
        if down.until <= now:
            self.probing.add(address)
            return True
        return False

    def went_down(self, address: str) -> bool:
        """bind() said the address is not local. True if it was up until now."""
        down = self.down.get(address)
        first = down is None
        if down is None:
            down = self.down[address] = _Down()
        down.strikes += 1
        down.until = self._clock() + rest(SOURCE_RETRY_FIRST, down.strikes, SOURCE_RETRY_MAX)
        self.probing.discard(address)
        return first

    def came_up(self, address: str) -> bool:
        """A bind on `address` worked. True if it was down until now."""
        self.probing.discard(address)
        return self.down.pop(address, None) is not None

    def forget(self, address: str) -> None:
        """`address` is no longer a source."""
        self.down.pop(address, None)
        self.probing.discard(address)

    def state(self, address: str) -> State:
        return "down" if address in self.down else "up"

    def retry_in(self, address: str) -> float:
        """Seconds until a down source is tried again (0 if up or due)."""
        down = self.down.get(address)
        return 0.0 if down is None else max(0.0, down.until - self._clock())
