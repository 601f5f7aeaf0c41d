"""A hypothesis state machine drives the port table against a plain reference model.

The reference keeps every (source, port, destination) state in dicts and answers "is it
free?" by brute force; the table must agree with it after every step: same live 4-tuples,
never a duplicate, cool-down honoured while another port is free, the oldest cooling tuple
when none is, held and blocked ports skipped, exhaustion reported exactly when the reference
has nothing, and statistics equal to the reference's counts.

The kernel's answers follow the reference's own rules: a refusal rests `first * 2**(n-1)`
(capped at 60 s) for the n-th in a row, `first` by whether the 4-tuple was the pool's own
(handed out from cooling) or not, forgotten after as long again as the rest; a connection
that gets through clears it. The destination's own port on its own IP is never handed out
(self-connect). Sources go down and come up; a down source is offered only once due.
Sources are added and removed: a removed source is never offered, drains while it has live
claims, and is forgotten (gone from the statistics, its resting state with it) at the last
release; added back while draining, it keeps its state.
"""

from __future__ import annotations

import random
import socket

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bindpool._claim import Claim
from bindpool._health import CLOSING_REST, HOLD_MAX, PORT_REST, STRANGER_REST, Health
from bindpool._table import PortTable
from tests.fakes import FakeClock

SOURCES = ("127.0.0.2", "127.0.0.3", "127.0.0.4")  # the pool starts with the first one or two
# The last one is a source's own IP, with a port inside the range: never handed out.
DESTS = (("127.0.0.1", 7001), ("127.0.0.1", 7002), ("127.0.0.9", 7001), ("127.0.0.2", 50001))
Key = tuple[str, int, tuple[str, int]]


def reference_rest(
    strikes: dict[object, tuple[int, float]], key: object, first: float, now: float
) -> float:
    count, forget = strikes.get(key, (0, 0.0))
    count = count + 1 if forget > now else 1
    seconds = min(first * float(2 ** (count - 1)), HOLD_MAX)
    strikes[key] = (count, now + 2 * seconds)
    return seconds


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.live: dict[Key, Claim] = {}
        self.cooling: dict[Key, float] = {}  # -> expiry
        self.held: dict[Key, float] = {}  # -> until (this destination's own clashes)
        self.blocked: dict[tuple[str, int], float] = {}  # (source, port) -> until
        self.strikes: dict[object, tuple[int, float]] = {}  # Key or (source, port)
        self.down: dict[str, float] = {}  # source -> when it may be tried again

    @initialize(
        nsources=st.integers(1, 2),
        nports=st.one_of(st.integers(1, 6), st.integers(7, 70)),
        cooldown=st.sampled_from([0.0, 5.0]),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(self, nsources: int, nports: int, cooldown: float, seed: int) -> None:
        self.sources = list(SOURCES[:nsources])  # active, in the order added
        self.draining: set[str] = set()
        self.ports = range(50000, 50000 + nports)
        self.cooldown = cooldown
        self.health = Health(self.clock)
        self.table = PortTable(
            dict.fromkeys(self.sources, self.ports),
            cooldown=cooldown,
            clock=self.clock,
            rng=random.Random(seed),
            health=self.health,
        )

    # -- the reference's answers ----------------------------------------------------------

    def _active(self, table: dict[Key, float], key: Key) -> bool:
        return table.get(key, -1.0) > self.clock.now

    def _blocked(self, source: str, port: int) -> bool:
        return self.blocked.get((source, port), -1.0) > self.clock.now

    def up(self) -> list[str]:
        return [s for s in self.sources if self.down.get(s, -1.0) <= self.clock.now]

    def free(self, dest: tuple[str, int]) -> set[tuple[str, int]]:
        return {
            (s, p)
            for s in self.up()
            for p in self.ports
            if (s, p, dest) not in self.live
            and (s, p) != dest
            and not self._active(self.held, (s, p, dest))
            and not self._active(self.cooling, (s, p, dest))
            and not self._blocked(s, p)
        }

    def cooling_usable(self, dest: tuple[str, int]) -> dict[tuple[str, int], float]:
        up = self.up()
        return {
            (s, p): expiry
            for (s, p, d), expiry in self.cooling.items()
            if d == dest and s in up and expiry > self.clock.now and not self._blocked(s, p)
        }

    # -- rules ------------------------------------------------------------------------------

    @rule(dest=st.sampled_from(DESTS))
    def acquire(self, dest: tuple[str, int]) -> None:
        free, cooling = self.free(dest), self.cooling_usable(dest)
        claim = self.table.acquire(dest, socket.AF_INET)
        if claim is None:
            assert not free, f"table said exhausted, reference has {sorted(free)[:5]}"
            assert not cooling, "table said exhausted, reference has cooling tuples"
            return
        got = (claim.source, claim.port)
        key = (claim.source, claim.port, dest)
        assert claim.destination == dest
        assert key not in self.live, f"duplicate live 4-tuple {key}"
        if got not in free:
            assert not free, f"cooling {got} handed out while {sorted(free)[:5]} free"
            assert got in cooling, f"{got} is neither free nor usable cooling"
            assert cooling[got] == min(cooling.values()), "not the oldest cooling tuple"
        assert claim.reused == (got not in free)
        self.live[key] = claim
        self.cooling.pop(key, None)

    @rule(dest=st.sampled_from(DESTS))
    def fill(self, dest: tuple[str, int]) -> None:
        """Acquire until the table says no, so exhaustion and fallback come up often."""
        before = len(self.live)
        for _ in range(len(self.sources) * len(self.ports) + 1):
            self.acquire(dest)
            if len(self.live) == before:
                break
            before = len(self.live)

    def _pick(self, data: st.DataObject) -> tuple[Key, Claim]:
        key = data.draw(st.sampled_from(sorted(self.live)))
        return key, self.live.pop(key)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key, claim = self._pick(data)
        self.table.release(claim)
        self.strikes.pop(key, None)  # the kernel took it: the record ends
        self.strikes.pop((key[0], key[1]), None)
        if self.cooldown:
            self.cooling[key] = self.clock.now + self.cooldown
        self.ended(key)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def clash(self, data: st.DataObject) -> None:
        key, claim = self._pick(data)
        first = CLOSING_REST if claim.reused else STRANGER_REST
        expected = reference_rest(self.strikes, key, first, self.clock.now)
        assert self.table.clashed(claim) == expected
        self.held[key] = self.clock.now + expected
        self.ended(key)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def port_in_use(self, data: st.DataObject) -> None:
        key, claim = self._pick(data)
        expected = reference_rest(self.strikes, (key[0], key[1]), PORT_REST, self.clock.now)
        assert self.table.port_in_use(claim) == expected
        self.held[key] = self.clock.now + expected
        self.blocked[key[0], key[1]] = self.clock.now + expected
        self.ended(key)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def source_gone(self, data: st.DataObject) -> None:
        """bind() said EADDRNOTAVAIL: the claim ends, nothing rests, the source goes down."""
        key, claim = self._pick(data)
        self.health.went_down(key[0])  # first, as the pool does
        self.down[key[0]] = self.clock.now + self.health.retry_in(key[0])
        self.table.source_gone(claim)
        self.ended(key)

    @precondition(lambda self: self.sources)
    @rule(data=st.data())
    def source_back(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.sources))
        self.health.came_up(source)
        self.down.pop(source, None)

    @rule(source=st.sampled_from(SOURCES))
    def add_source(self, source: str) -> None:
        if source in self.sources:
            return
        self.table.add_source(source, self.ports)
        self.draining.discard(source)
        self.sources.append(source)

    @precondition(lambda self: self.sources)
    @rule(data=st.data())
    def remove_source(self, data: st.DataObject) -> None:
        source = data.draw(st.sampled_from(self.sources))
        live = self.table.remove_source(source)
        assert live == sum(1 for k in self.live if k[0] == source)
        self.sources.remove(source)
        if live:
            self.draining.add(source)
        else:
            self.forget(source)

    def forget(self, source: str) -> None:
        """The table forgot a drained source: its resting state goes with it."""
        for table in (self.cooling, self.held):
            for key in [k for k in table if k[0] == source]:
                del table[key]
        for port in [p for s, p in self.blocked if s == source]:
            del self.blocked[source, port]
        for gone in [k for k in self.strikes if isinstance(k, tuple) and k[0] == source]:
            del self.strikes[gone]
        self.down.pop(source, None)

    def ended(self, key: Key) -> None:
        """A claim ended: a draining source with none left is forgotten."""
        source = key[0]
        if source in self.draining and not any(k[0] == source for k in self.live):
            self.draining.discard(source)
            self.forget(source)

    @rule(seconds=st.sampled_from([0.05, 0.25, 0.5, 1.0, 3.0, 5.0, 7.0, 30.0, 60.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def statistics_match(self) -> None:
        if not hasattr(self, "table"):
            return
        now = self.clock.now
        stats = self.table.statistics()
        assert set(stats) == set(self.sources) | self.draining
        for source in stats:
            live = [k for k in self.live if k[0] == source]
            figures = stats[source]
            assert figures.in_use == len(live)
            assert figures.footprint == len({k[1] for k in live})
            assert figures.cooling == sum(
                1 for k, e in self.cooling.items() if k[0] == source and e > now
            )
            assert figures.blocked == sum(
                1 for (s, _), u in self.blocked.items() if s == source and u > now
            )
            assert figures.held + figures.closing >= sum(
                1 for k, u in self.held.items() if k[0] == source and u > now
            )
            if source in self.draining:
                assert figures.state == "draining"
            else:
                assert figures.state == ("down" if source in self.health.down else "up")
        assert all(claim.live for claim in self.live.values())


TableMachine.TestCase.settings = settings(max_examples=400, stateful_step_count=60, deadline=None)
test_table_matches_reference = TableMachine.TestCase
