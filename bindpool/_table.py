"""The port table: which (source, port, destination) 4-tuples are live, resting or free.

Theory of operation
-------------------
TCP needs only the 4-tuple (source IP, source port, destination IP, destination port) to be
unique. A socket bound before `connect()` gets its port at `bind()`, when the kernel does
not know the destination yet, so every destination shares one set of ports per source IP.
This table makes the choice per destination instead; the connector then binds that exact
port with SO_REUSEADDR and the kernel checks the whole 4-tuple at `connect()`
(FIELD-NOTES.md, "Kernel rules that shape the design"). The module is pure: no sockets, no
asyncio, an injected clock and random source. It is not thread-safe: one pool, one thread.

Ranks. Each source shuffles its ports once into a random order; a port's place in that order
is its *rank*. Every destination fills ranks first-fit, block by block. Because all
destinations walk the same order they crowd onto the same ports, so the ports bound at once
(the *footprint*) stay close to the busiest destination's live connections, not their sum.
That matters beyond this process: the kernel skips every explicitly bound port in other
programs' automatic port pick, for as long as the binding (and its TIME_WAIT) lasts.

Blocks. A destination keeps one int per block of 30 ranks (a single CPython digit, so bit
operations stay cheap) with a bit set for each rank it cannot take now, and one summary int
with a bit per full block. A pick is: lowest zero bit of the summary, then a free bit in that
block's word: a few int operations at any occupancy, up to the last free port. Inside the
block the pick prefers ranks another destination already keeps bound (the source's `bound`
words) and starts at a random bit, so choices are neither sequential nor predictable.

States. For one destination a rank is free, *live* (a claim holds it), *cooling* (released
less than `cooldown` seconds ago), or *resting* after the kernel refused it: EADDRNOTAVAIL at
connect (the 4-tuple exists: the pool's own still closing, or someone else's) or EADDRINUSE
at bind (the port is unusable on the source). How long a refusal rests is `_health.py`'s
rule: briefly at first, twice as long at each refusal in a row, up to TIME_WAIT's 60 s; a
connection that gets through clears the record. All but free set the rank's bit. When no
rank is free the table hands out the destination's oldest cooling rank: churn to one
destination is never capped by the cool-down, the kernel decides, and a clash moves on. A
port found unusable is also *blocked* on its source, so other destinations skip it without
asking the kernel again.

Self-connects. When the source IP is the destination's IP, the destination's own port is
never handed out: connect() from (ip, p) to (ip, p) with nothing listening succeeds by TCP
simultaneous open, and the socket talks to itself (FIELD-NOTES.md; Go's dialer checks this).

Sources. Which source a connection tries first is the `select=` policy's (`_select.py`). A
source whose address left the host is down (`_health.Health`) and skipped until its retry
time; then one connection tries it, and a bind that works brings it back. Sources are added
and retired at run time (`_sources.SourceSet`); a retired one drains, and is forgotten with
its destinations when its last lease ends.

Memory. A destination's words reach only its highest used block, and a destination with
nothing live, cooling or held is dropped (at its next wake-up, within two seconds), so an idle
destination costs nothing and a busy one about a bit per rank it uses, plus one `Claim` per
live lease.

Time. A destination expires its own cooling and held entries whenever it is used. Wake-ups,
rounded up to whole seconds and kept one per destination and second, sweep destinations
nobody asks for, so their memory comes back too.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
import socket
import time
from collections import deque
from typing import TYPE_CHECKING

from bindpool._claim import Claim, Destination
from bindpool._health import CLOSING_REST, PORT_REST, STRANGER_REST, Health, Strikes
from bindpool._select import Selector
from bindpool._sources import SourceSet
from bindpool._types import SourceStatistics

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping, Sequence

__all__ = ["BLOCK", "PortTable", "family_of"]

BLOCK = 30  # ranks per word: one CPython digit (30 bits), so word arithmetic stays cheap
FULL = (1 << BLOCK) - 1


def family_of(address: str) -> int:
    """AF_INET6 for an IPv6 literal (it has a colon), else AF_INET."""
    return socket.AF_INET6 if ":" in address else socket.AF_INET


def _room(key: Destination) -> Callable[[_Source], int]:
    """How many ports a source has left for `key`: free, not live or resting."""

    def room(source: _Source) -> int:
        dest = source.dests.get(key)
        return source.size if dest is None else source.size - dest.live - dest.resting()

    return room


class _Dest:
    """What one source keeps for one destination."""

    __slots__ = (
        "cooling",
        "full",
        "held",
        "key",
        "live",
        "source",
        "strikes",
        "wake",
        "words",
    )

    def __init__(self, source: _Source, key: Destination) -> None:
        self.source = source
        self.key = key
        self.words: list[int] = []  # per block: bit set = rank not free for this destination
        self.full = 0  # bit b set = words[b] is FULL
        self.live = 0
        # Created on first use: an empty deque alone costs ~600 bytes.
        self.cooling: deque[tuple[float, int]] | None = None  # (expiry, rank), oldest first
        # Heap of (until, rank, own): own = the pool's own 4-tuple, refused while closing.
        self.held: list[tuple[float, int, bool]] | None = None
        self.strikes: Strikes | None = None  # refusals at connect, per rank
        self.wake = -math.inf  # latest wake-up scheduled for this destination
        if key[0] == source.address and key[1] in source.rank_of:
            # Never hand out the destination's own port: that is a self-connect. Its bit is
            # set for good (no entry will ever clear it).
            rank = source.rank_of[key[1]]
            block = rank // BLOCK
            self.words = [source.initial_word(b) for b in range(block + 1)]
            self.words[block] |= 1 << (rank % BLOCK)
            if self.words[block] == FULL:
                self.full = 1 << block

    def resting(self) -> int:
        return (len(self.cooling) if self.cooling else 0) + (len(self.held) if self.held else 0)


class _Source:
    """One source IP: its ranks, which of them are bound, and its destinations."""

    __slots__ = (
        "address",
        "blocked",
        "blocks",
        "bound",
        "dests",
        "family",
        "forgotten",
        "live",
        "pad",
        "ports",
        "rank_of",
        "refs",
        "size",
        "strikes",
    )

    def __init__(self, address: str, ports: Sequence[int], rng: random.Random) -> None:
        order = sorted(set(ports))
        rng.shuffle(order)
        self.address = address
        self.family = family_of(address)
        self.live = 0  # live claims, all destinations
        self.forgotten = False  # removed and drained: nothing of it is kept any more
        self.ports = tuple(order)
        self.rank_of = {port: rank for rank, port in enumerate(order)}
        self.size = len(order)
        self.blocks = -(-self.size // BLOCK)
        tail = self.size - (self.blocks - 1) * BLOCK
        self.pad = FULL & ~((1 << tail) - 1)  # the last word's ranks past the range end
        self.refs = [0] * self.size  # live claims per rank, all destinations
        self.bound = [0] * self.blocks  # per block: bit set = rank has a live claim
        self.blocked: dict[int, float] = {}  # rank -> until (EADDRINUSE at bind)
        self.strikes = Strikes()  # refusals at bind (EADDRINUSE), per rank
        self.dests: dict[Destination, _Dest] = {}

    def initial_word(self, block: int) -> int:
        return self.pad if block == self.blocks - 1 else 0


class PortTable:
    """Per source IP, which (port, destination) pairs are live, cooling, held or free.

    Args:
        sources: source IP (canonical text) -> the ports it may use. IPv6 if it has a colon.
        cooldown: seconds a released (source, port, destination) rests, see module docs.
        clock: monotonic seconds.
        rng: random source, for the shuffle and the pick (seed it in tests).
        health: which sources are up, shared with the pool (a new one by default).
        select: the order to try sources in (default: most room first).
    """

    def __init__(
        self,
        sources: Mapping[str, Iterable[int]],
        *,
        cooldown: float,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        health: Health | None = None,
        select: Selector | None = None,
    ) -> None:
        self._rng = rng if rng is not None else random.Random()
        self._cooldown = cooldown
        self._clock = clock
        self.health = health if health is not None else Health(clock)
        self._select = select if select is not None else Selector("room")
        self._random_bits = self._rng.getrandbits
        self.sources = SourceSet(
            _Source(ip, list(ports), self._rng) for ip, ports in sources.items()
        )
        self._wakeups: list[tuple[float, int, _Dest]] = []
        self._order = itertools.count()  # tie-breaker for wake-ups due at the same second

    # -- the four calls the pool's retry policy makes -------------------------------------

    def acquire(self, destination: Destination, family: int) -> Claim | None:
        """A 4-tuple for `destination` on a source of `family`, or None if none is left.

        A free rank on the source with the most room for the destination; only when no
        source has one, the destination's oldest cooling 4-tuple. Never one that is live,
        held or blocked for it.
        """
        now = self._clock()
        if self._wakeups and self._wakeups[0][0] <= now:
            self._sweep(now)
        sources = self.sources.families.get(family)
        if sources is None:
            return None
        health = self.health
        if health.down:
            sources = [s for s in sources if health.usable(s.address, now)]
            if not sources:
                return None
        if len(sources) > 1:
            sources = self._select.order(destination, sources, _room(destination))
        for source in sources:
            dest = source.dests.get(destination)
            if dest is None:
                dest = source.dests[destination] = _Dest(source, destination)
            elif (dest.cooling and dest.cooling[0][0] <= now) or (
                dest.held and dest.held[0][0] <= now
            ):
                self._expire_entries(dest, now)  # not _expire: that may drop `dest`
            rank = self._pick_free(source, dest, now)
            if rank is not None:
                reused = False
                break
            if not dest.cooling:
                self._drop_if_idle(dest, now)
        else:
            found = self._oldest_cooling(sources, destination, now)
            if found is None:
                return None
            source, dest, rank = found
            reused = True
        dest.live += 1
        source.live += 1
        refs = source.refs
        if not refs[rank]:
            source.bound[rank // BLOCK] |= 1 << (rank % BLOCK)
        refs[rank] += 1
        claim = Claim(source.address, destination, source.ports[rank], rank, dest)
        claim.reused = reused
        return claim

    def release(self, claim: Claim) -> None:
        """The claim's connection ended (or was given up): its 4-tuple starts cooling.

        The kernel accepted the 4-tuple (no clash), so any record of refusals ends here.
        """
        dest = self._give_back(claim)
        if dest.strikes:
            dest.strikes.pop(claim.rank, None)
        if dest.source.strikes:
            dest.source.strikes.pop(claim.rank, None)
        if self._cooldown > 0:
            expiry = self._clock() + self._cooldown
            if dest.cooling is None:
                dest.cooling = deque()
            dest.cooling.append((expiry, claim.rank))
            if expiry > dest.wake:  # else a wake-up already due later covers this one
                self._schedule(dest, expiry)
        else:
            self._clear(dest, claim.rank)
            if not dest.live:
                # Idle: a wake-up drops it within two seconds, so a quick return to this
                # destination (the common case) finds it still there.
                now = self._clock()
                if now >= dest.wake:
                    self._schedule(dest, now + 1.0)

    def clashed(self, claim: Claim) -> float:
        """connect() said EADDRNOTAVAIL: the 4-tuple exists. Rest it; return for how long.

        A 4-tuple the pool released moments ago (`claim.reused`) is its own connection
        still closing; any other belongs to someone else. See `_health.py` for the rests.
        """
        dest = self._give_back(claim)
        if dest.strikes is None:
            dest.strikes = Strikes()
        now = self._clock()
        first = CLOSING_REST if claim.reused else STRANGER_REST
        seconds = dest.strikes.strike(claim.rank, first, now)
        self._hold_rank(dest, claim.rank, now + seconds, claim.reused)
        self._schedule(dest, now + 2 * seconds)  # to forget the record, if nobody asks
        return seconds

    def port_in_use(self, claim: Claim) -> float:
        """bind() said EADDRINUSE: the port is unusable on this source for a while.

        A listener, or a socket without SO_REUSEADDR, holds it; no destination can use it.
        Returns how long it rests.
        """
        dest = self._give_back(claim)
        source, rank = dest.source, claim.rank
        now = self._clock()
        seconds = source.strikes.strike(rank, PORT_REST, now)
        until = now + seconds
        source.blocked[rank] = until
        self._hold_rank(dest, rank, until)
        return seconds

    def source_gone(self, claim: Claim) -> None:
        """bind() said EADDRNOTAVAIL: the source address left the host, not this 4-tuple.

        The claim ends without a lease and its rank is free again for the destination;
        the pool marks the source down (`health`).
        """
        dest = self._give_back(claim)
        self._clear(dest, claim.rank)
        self._drop_if_idle(dest, self._clock())

    # -- introspection ---------------------------------------------------------------------

    def resting(self, destination: Destination, family: int) -> float | None:
        """Seconds until the first refused 4-tuple of `destination` ends its rest, or None."""
        ends = [
            dest.held[0][0]
            for source in self.sources.families.get(family, ())
            if (dest := source.dests.get(destination)) is not None and dest.held
        ]
        return max(0.0, min(ends) - self._clock()) if ends else None

    # -- the living set of sources --------------------------------------------------------------

    def add_source(self, address: str, ports: Iterable[int]) -> None:
        """A new source (or a draining one back): new connections may use it now."""
        if not self.sources.revive(address):
            self.sources.add(_Source(address, list(ports), self._rng))

    def remove_source(self, address: str) -> int:
        """No new connection uses `address`. Returns its live leases: it drains until they
        end, then its memory goes (`sources.on_drained` hears of it)."""
        source = self.sources.all[address]
        self.sources.retire(address, source.live)
        if not source.live:
            self._forget(source)
        return source.live

    def _forget(self, source: _Source) -> None:
        source.forgotten = True
        self.health.forget(source.address)
        self._wakeups = [w for w in self._wakeups if w[2].source is not source]
        heapq.heapify(self._wakeups)

    # -- introspection ---------------------------------------------------------------------

    def statistics(self) -> dict[str, SourceStatistics]:
        """Exact per-source figures: expires everything that is due first."""
        now = self._clock()
        self._sweep(now)  # also lets go of destinations that only a wake-up still holds
        figures = {}
        for source in self.sources.all.values():
            for dest in list(source.dests.values()):
                self._expire(dest, now)
            for rank, until in list(source.blocked.items()):
                if until <= now:
                    del source.blocked[rank]
            source.strikes.prune(now)
            dests = source.dests.values()
            closing = sum(own for d in dests if d.held for _, _, own in d.held)
            figures[source.address] = SourceStatistics(
                ports=source.size,
                in_use=sum(d.live for d in dests),
                footprint=sum(word.bit_count() for word in source.bound),
                cooling=sum(len(d.cooling) for d in dests if d.cooling),
                held=sum(len(d.held) for d in dests if d.held) - closing,
                blocked=len(source.blocked),
                destinations=len(source.dests),
                closing=closing,
                state=self.sources.state(source.address, self.health.state(source.address)),
            )
        return figures

    # -- picking -----------------------------------------------------------------------------

    def _pick_free(self, source: _Source, dest: _Dest, now: float) -> int | None:
        """Mark and return a free rank for `dest` from its lowest block with one, or None."""
        words = dest.words
        while True:
            full = dest.full
            block = (~full & (full + 1)).bit_length() - 1  # lowest block with a free rank
            if block >= source.blocks:
                return None
            if block == len(words):
                words.append(source.initial_word(block))
            word = words[block]
            free = ~word & FULL
            candidates = free & source.bound[block] or free  # already bound: no new footprint
            # The first candidate at or above a random bit, else the lowest: not sequential.
            turn = self._random_bits(5)
            candidates = candidates >> turn << turn or candidates
            bit = (candidates & -candidates).bit_length() - 1
            word |= 1 << bit
            words[block] = word
            if word == FULL:
                dest.full = full | (1 << block)
            rank = block * BLOCK + bit
            if source.blocked:
                until = source.blocked.get(rank)
                if until is not None:
                    if until > now:  # unusable on this source: rest it here too, pick again
                        self._hold_rank(dest, rank, until)
                        continue
                    del source.blocked[rank]
            return rank

    def _oldest_cooling(
        self, sources: list[_Source], key: Destination, now: float
    ) -> tuple[_Source, _Dest, int] | None:
        """Nothing is free: the oldest cooling 4-tuple that is not blocked, on any source.

        It is taken out of cooling; its rank stays marked, for it goes straight to live.
        """
        best: tuple[float, int, _Source, _Dest] | None = None
        for source in sources:
            dest = source.dests.get(key)
            if dest is None or not dest.cooling:
                continue
            blocked = source.blocked
            for index, (expiry, rank) in enumerate(dest.cooling):
                if blocked and blocked.get(rank, -math.inf) > now:
                    continue
                if best is None or expiry < best[0]:
                    best = (expiry, index, source, dest)
                break  # the rest of this deque is younger
        if best is None:
            return None
        _, index, source, dest = best
        cooling = dest.cooling
        assert cooling is not None
        if index:
            rank = cooling[index][1]
            del cooling[index]
        else:
            rank = cooling.popleft()[1]
        return source, dest, rank

    # -- giving back ---------------------------------------------------------------------------

    def _give_back(self, claim: Claim) -> _Dest:
        """End a claim: the rank stays marked for its destination; the caller says how."""
        if not claim.live:
            raise RuntimeError(f"{claim!r} was already given back")
        claim.live = False
        dest: _Dest = claim.slot
        source, rank = dest.source, claim.rank
        dest.live -= 1
        source.live -= 1
        if self.sources.draining and self.sources.ended(source.address, source.live):
            self._forget(source)
        refs = source.refs[rank] - 1
        source.refs[rank] = refs
        if not refs:
            source.bound[rank // BLOCK] ^= 1 << (rank % BLOCK)
        return dest

    def _hold_rank(self, dest: _Dest, rank: int, until: float, own: bool = False) -> None:
        if dest.held is None:
            dest.held = []
        heapq.heappush(dest.held, (until, rank, own))
        self._schedule(dest, until)

    def _clear(self, dest: _Dest, rank: int) -> None:
        """The rank is free for `dest` again."""
        block = rank // BLOCK
        words = dest.words
        word = words[block]
        if word == FULL:
            dest.full ^= 1 << block
        word ^= 1 << (rank % BLOCK)
        words[block] = word
        if not word and block == len(words) - 1:
            # Trim empty words at the top, so memory follows use. (The range's last word
            # keeps its padding bits and is never empty: it goes with the destination.)
            while words and not words[-1]:
                words.pop()

    # -- time -----------------------------------------------------------------------------------

    def _expire(self, dest: _Dest, now: float) -> None:
        self._expire_entries(dest, now)
        self._drop_if_idle(dest, now)

    def _expire_entries(self, dest: _Dest, now: float) -> None:
        cooling, held = dest.cooling, dest.held
        while cooling and cooling[0][0] <= now:
            self._clear(dest, cooling.popleft()[1])
        while held and held[0][0] <= now:
            self._clear(dest, heapq.heappop(held)[1])

    def _drop_if_idle(self, dest: _Dest, now: float) -> None:
        if not dest.live and not dest.cooling and not dest.held:
            if dest.strikes:  # a record of refusals lives until it is forgotten
                dest.strikes.prune(now)
                if dest.strikes:
                    return
            dests = dest.source.dests
            if dests.get(dest.key) is dest:  # a wake-up may outlive its destination
                del dests[dest.key]

    def _schedule(self, dest: _Dest, when: float) -> None:
        """Make sure `dest` is swept at or after `when`, even if nobody asks for it."""
        wake = float(math.ceil(when))
        if (
            wake > dest.wake and not dest.source.forgotten
        ):  # the later wake-up already covers anything due before it
            dest.wake = wake
            heapq.heappush(self._wakeups, (wake, next(self._order), dest))

    def _sweep(self, now: float) -> None:
        wakeups = self._wakeups
        while wakeups and wakeups[0][0] <= now:
            self._expire(heapq.heappop(wakeups)[2], now)
