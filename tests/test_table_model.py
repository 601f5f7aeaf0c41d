"""A hypothesis state machine drives the port table against a plain reference model.

The reference keeps every (source, port, destination) state in dicts and answers "is it
free?" by brute force; the table must agree with it after every step: same live 4-tuples,
never a duplicate, cool-down honoured while another port is free, the oldest cooling tuple
when none is, held and blocked ports skipped, exhaustion reported exactly when the reference
has nothing, and statistics equal to the reference's counts.
"""

from __future__ import annotations

import random
import socket

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from bindpool._claim import Claim
from bindpool._table import PortTable
from tests.fakes import FakeClock

HOLD = 7.0
SOURCES = ("127.0.0.2", "127.0.0.3")
DESTS = (("127.0.0.1", 7001), ("127.0.0.1", 7002), ("127.0.0.9", 7001))
Key = tuple[str, int, tuple[str, int]]


class TableMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.live: dict[Key, Claim] = {}
        self.cooling: dict[Key, float] = {}  # -> expiry
        self.held: dict[Key, float] = {}  # -> until (this destination's own clashes)
        self.blocked: dict[tuple[str, int], float] = {}  # (source, port) -> until

    @initialize(
        nsources=st.integers(1, 2),
        nports=st.one_of(st.integers(1, 6), st.integers(7, 70)),
        cooldown=st.sampled_from([0.0, 5.0]),
        seed=st.integers(0, 2**32 - 1),
    )
    def setup(self, nsources: int, nports: int, cooldown: float, seed: int) -> None:
        self.sources = SOURCES[:nsources]
        self.ports = range(50000, 50000 + nports)
        self.cooldown = cooldown
        self.table = PortTable(
            dict.fromkeys(self.sources, self.ports),
            cooldown=cooldown,
            hold=HOLD,
            clock=self.clock,
            rng=random.Random(seed),
        )

    # -- the reference's answers ----------------------------------------------------------

    def _active(self, table: dict[Key, float], key: Key) -> bool:
        return table.get(key, -1.0) > self.clock.now

    def _blocked(self, source: str, port: int) -> bool:
        return self.blocked.get((source, port), -1.0) > self.clock.now

    def free(self, dest: tuple[str, int]) -> set[tuple[str, int]]:
        return {
            (s, p)
            for s in self.sources
            for p in self.ports
            if (s, p, dest) not in self.live
            and not self._active(self.held, (s, p, dest))
            and not self._active(self.cooling, (s, p, dest))
            and not self._blocked(s, p)
        }

    def cooling_usable(self, dest: tuple[str, int]) -> dict[tuple[str, int], float]:
        return {
            (s, p): expiry
            for (s, p, d), expiry in self.cooling.items()
            if d == dest and expiry > self.clock.now and not self._blocked(s, p)
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
        if self.cooldown:
            self.cooling[key] = self.clock.now + self.cooldown

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def clash(self, data: st.DataObject) -> None:
        key, claim = self._pick(data)
        self.table.clashed(claim)
        self.held[key] = self.clock.now + HOLD

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def port_in_use(self, data: st.DataObject) -> None:
        key, claim = self._pick(data)
        self.table.port_in_use(claim)
        self.held[key] = self.clock.now + HOLD
        self.blocked[key[0], key[1]] = self.clock.now + HOLD

    @rule(seconds=st.sampled_from([0.5, 1.0, 3.0, 5.0, 7.0, 30.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    # -- invariants ---------------------------------------------------------------------------

    @invariant()
    def statistics_match(self) -> None:
        if not hasattr(self, "table"):
            return
        now = self.clock.now
        stats = self.table.statistics()
        for source in self.sources:
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
            assert figures.held >= sum(
                1 for k, u in self.held.items() if k[0] == source and u > now
            )
        assert all(claim.live for claim in self.live.values())


TableMachine.TestCase.settings = settings(max_examples=1000, stateful_step_count=60, deadline=None)
test_table_matches_reference = TableMachine.TestCase
