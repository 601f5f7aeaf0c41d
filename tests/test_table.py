"""The port table's rules, one test each, on a fake clock (no sockets, no asyncio)."""

from __future__ import annotations

import random
import socket

import pytest

from bindpool._claim import Claim
from bindpool._health import CLOSING_REST, HOLD_MAX, PORT_REST, STRANGER_REST, Health
from bindpool._table import PortTable
from tests.fakes import FakeClock

V4 = socket.AF_INET
SRC = "127.0.0.2"
A, B, C = ("127.0.0.1", 8001), ("127.0.0.1", 8002), ("127.0.0.1", 8003)


def table(
    ports: range = range(40000, 40010),
    *,
    cooldown: float = 0.0,
    clock: FakeClock | None = None,
    seed: int = 7,
    sources: tuple[str, ...] = (SRC,),
) -> PortTable:
    clock = clock or FakeClock()
    return PortTable(
        dict.fromkeys(sources, ports),
        cooldown=cooldown,
        clock=clock,
        rng=random.Random(seed),
        health=Health(clock),
    )


def fill(t: PortTable, dest: tuple[str, int], family: int = V4) -> list[Claim]:
    """Acquire until the table says no; the table must say so within its range."""
    claims: list[Claim] = []
    while (claim := t.acquire(dest, family)) is not None:
        claims.append(claim)
        assert len(claims) <= 65536, "acquire never said no"
    return claims


def test_each_port_once_per_destination_then_none() -> None:
    t = table()
    claims = fill(t, A)
    assert sorted(c.port for c in claims) == list(range(40000, 40010))
    assert t.acquire(A, V4) is None


def test_one_port_serves_every_destination_at_once() -> None:
    t = table()
    by_dest = {dest: fill(t, dest) for dest in (A, B, C)}
    tuples = {(c.source, c.port, c.destination) for cs in by_dest.values() for c in cs}
    assert len(tuples) == 30
    stats = t.statistics()[SRC]
    assert (stats.in_use, stats.footprint) == (30, 10)


def test_footprint_follows_the_busiest_destination() -> None:
    t = table(range(40000, 41000))
    for _ in range(40):  # interleaved, as real traffic is
        t.acquire(A, V4)
        t.acquire(B, V4)
    for _ in range(60):
        t.acquire(A, V4)
    for _ in range(10):
        t.acquire(C, V4)
    stats = t.statistics()[SRC]
    assert stats.in_use == 150
    assert stats.footprint == 100  # A's 100: B and C reuse ports A already keeps bound


def test_choices_are_random_not_sequential() -> None:
    first = [c.port for c in fill(table(range(40000, 40300), seed=1), A)[:20]]
    second = [c.port for c in fill(table(range(40000, 40300), seed=2), A)[:20]]
    assert first != sorted(first)
    assert first != second


def test_released_port_rests_while_others_are_free() -> None:
    clock = FakeClock()
    t = table(cooldown=5.0, clock=clock)
    claim = t.acquire(A, V4)
    assert claim is not None
    t.release(claim)
    others = fill(t, A)
    assert claim.port not in {c.port for c in others[:-1]}
    assert others[-1].port == claim.port  # nothing else was free: the cooling one, last
    assert t.statistics()[SRC].cooling == 0


def test_other_destinations_may_use_a_cooling_port() -> None:
    t = table(range(40000, 40001), cooldown=5.0)
    claim = t.acquire(A, V4)
    assert claim is not None
    t.release(claim)
    other = t.acquire(B, V4)
    assert other is not None
    assert other.port == claim.port


def test_cooled_port_is_free_again_after_cooldown() -> None:
    clock = FakeClock()
    t = table(range(40000, 40002), cooldown=5.0, clock=clock)
    first = t.acquire(A, V4)
    assert first is not None
    t.release(first)
    clock.advance(5.0)
    stats = t.statistics()[SRC]
    assert (stats.cooling, stats.destinations) == (0, 0)
    assert {c.port for c in fill(t, A)} == {40000, 40001}


def test_full_range_hands_out_cooling_tuples_oldest_first() -> None:
    clock = FakeClock()
    t = table(cooldown=60.0, clock=clock)
    claims = fill(t, A)
    order = [claims[3], claims[7], claims[1]]
    for claim in order:
        t.release(claim)
        clock.advance(1.0)
    again = [t.acquire(A, V4) for _ in order]
    assert [c.port for c in again if c] == [c.port for c in order]
    assert t.acquire(A, V4) is None


def test_churn_to_one_destination_is_never_capped_by_cooldown() -> None:
    t = table(cooldown=60.0)
    for _ in range(100):  # ten times the range, clock never moves
        claim = t.acquire(A, V4)
        assert claim is not None
        t.release(claim)


def test_clashed_tuple_is_held_for_that_destination_only() -> None:
    clock = FakeClock()
    t = table(range(40000, 40002), clock=clock)
    claim = t.acquire(A, V4)
    assert claim is not None
    t.clashed(claim)
    rest = fill(t, A)
    assert [c.port for c in rest] == [({40000, 40001} - {claim.port}).pop()]
    assert claim.port in {c.port for c in fill(t, B)}
    assert t.statistics()[SRC].held == 1
    for c in rest:
        t.release(c)
    clock.advance(STRANGER_REST)
    assert claim.port in {c.port for c in fill(t, A)}


def test_port_in_use_is_blocked_for_every_destination() -> None:
    clock = FakeClock()
    t = table(range(40000, 40003), clock=clock)
    claim = t.acquire(A, V4)
    assert claim is not None
    t.port_in_use(claim)
    for dest in (A, B, C):
        assert claim.port not in {c.port for c in fill(t, dest)}
    assert t.statistics()[SRC].blocked == 1
    clock.advance(PORT_REST)
    assert t.statistics()[SRC].blocked == 0
    assert [c.port for c in fill(t, A)] == [claim.port]


def test_blocked_port_is_not_handed_out_from_cooling_either() -> None:
    clock = FakeClock()
    t = table(range(40000, 40002), cooldown=60.0, clock=clock)
    a1, _a2 = fill(t, A)
    t.release(a1)
    b = t.acquire(B, V4)
    assert b is not None
    if b.port != a1.port:
        t.release(b)
        b = t.acquire(B, V4)
        assert b is not None
    t.port_in_use(b)  # a1's port turns out unusable on the source
    assert t.acquire(A, V4) is None


def test_exhaustion_is_reported_without_scanning() -> None:
    t = table(range(1, 65536))
    t.acquire(A, V4)
    claims = fill(t, A)
    assert len(claims) == 65534
    assert t.acquire(A, V4) is None


def test_idle_destination_costs_nothing() -> None:
    clock = FakeClock()
    t = table(range(40000, 41000), cooldown=5.0, clock=clock)
    claims = [t.acquire(A, V4) for _ in range(500)]
    for claim in claims:
        assert claim is not None
        t.release(claim)
    clock.advance(5.0)
    t.acquire(B, V4)  # any activity sweeps A's expired state
    assert t.statistics()[SRC].destinations == 1


def test_giving_back_twice_is_an_error() -> None:
    t = table()
    claim = t.acquire(A, V4)
    assert claim is not None
    t.release(claim)
    with pytest.raises(RuntimeError, match="already given back"):
        t.release(claim)
    with pytest.raises(RuntimeError):
        t.clashed(claim)


def test_wrong_family_has_no_source() -> None:
    t = table()
    assert t.acquire(("::1", 80), socket.AF_INET6) is None


def test_most_room_wins_and_ties_rotate() -> None:
    t = table(sources=("127.0.0.2", "127.0.0.3"))
    picks = [t.acquire(A, V4) for _ in range(6)]
    sources = [c.source for c in picks if c]
    assert sorted(sources) == ["127.0.0.2"] * 3 + ["127.0.0.3"] * 3  # equal room: in turn
    for claim in picks:
        if claim is not None and claim.source == "127.0.0.2":
            t.release(claim)
    # 127.0.0.2 now has 3 more free ports than 127.0.0.3: it gets the next three
    assert [c.source for c in (t.acquire(A, V4) for _ in range(3)) if c] == ["127.0.0.2"] * 3
    tied = [c.source for c in (t.acquire(A, V4) for _ in range(2)) if c]
    assert sorted(tied) == ["127.0.0.2", "127.0.0.3"]


def test_a_full_source_is_skipped() -> None:
    t = table(range(40000, 40002), sources=("127.0.0.2", "127.0.0.3"))
    claims = fill(t, A)
    assert len(claims) == 4
    assert {c.source for c in claims} == {"127.0.0.2", "127.0.0.3"}


def test_cooling_is_used_only_when_no_source_has_a_free_port() -> None:
    clock = FakeClock()
    t = table(range(40000, 40002), cooldown=60.0, clock=clock, sources=("127.0.0.2", "127.0.0.3"))
    claims = fill(t, A)
    t.release(claims[0])
    clock.advance(1)
    t.release(claims[1])
    again = t.acquire(A, V4)
    assert again is not None
    assert (again.source, again.port) == (claims[0].source, claims[0].port)


# -- reading the kernel's answers --------------------------------------------------------------


def test_refusals_in_a_row_rest_longer_each_time_up_to_time_wait() -> None:
    clock = FakeClock()
    t = table(range(40000, 40001), clock=clock)
    rests = []
    for _ in range(12):
        claim = t.acquire(A, V4)
        assert claim is not None
        rests.append(t.clashed(claim))
        assert t.acquire(A, V4) is None  # resting: not offered again
        clock.advance(rests[-1])
    assert rests[:3] == [STRANGER_REST, 2 * STRANGER_REST, 4 * STRANGER_REST]
    assert rests[-1] == HOLD_MAX
    assert rests == sorted(rests)


def test_a_connection_that_gets_through_clears_the_record() -> None:
    clock = FakeClock()
    t = table(range(40000, 40001), clock=clock)
    for _ in range(3):
        claim = t.acquire(A, V4)
        assert claim is not None
        clock.advance(t.clashed(claim))
    claim = t.acquire(A, V4)
    assert claim is not None
    t.release(claim)  # no clash: the kernel took the 4-tuple
    claim = t.acquire(A, V4)
    assert claim is not None
    assert t.clashed(claim) == STRANGER_REST


def test_own_tuple_still_closing_rests_briefly_and_is_named() -> None:
    """The churn case: every port cooling, the oldest handed out, still in FIN_WAIT2."""
    clock = FakeClock()
    t = table(range(40000, 40002), cooldown=60.0, clock=clock)
    first, second = fill(t, A)
    t.release(first)
    t.release(second)
    reused = t.acquire(A, V4)
    assert reused is not None
    assert (reused.port, reused.reused) == (first.port, True)
    assert t.clashed(reused) == CLOSING_REST
    figures = t.statistics()[SRC]
    assert (figures.closing, figures.held, figures.cooling) == (1, 0, 1)
    other = t.acquire(A, V4)  # the next oldest cooling one, meanwhile
    assert other is not None
    assert other.port == second.port
    t.release(other)
    clock.advance(CLOSING_REST)
    again = t.acquire(A, V4)  # back as soon as its short rest is over: free, not cooling
    assert again is not None
    assert (again.port, again.reused) == (first.port, False)
    t.release(again)


def test_port_refusals_in_a_row_rest_longer() -> None:
    clock = FakeClock()
    t = table(range(40000, 40001), clock=clock)
    claim = t.acquire(A, V4)
    assert claim is not None
    assert t.port_in_use(claim) == PORT_REST
    clock.advance(PORT_REST)
    claim = t.acquire(B, V4)
    assert claim is not None
    assert t.port_in_use(claim) == 2 * PORT_REST


def test_never_the_destinations_own_port_on_its_own_ip() -> None:
    """source IP == destination IP and the same port: a self-connect by simultaneous open."""
    own = (SRC, 40003)
    claims = fill(table(range(40000, 40010)), own)
    assert len(claims) == 9
    assert 40003 not in {c.port for c in claims}
    assert fill(table(range(40003, 40004)), own) == []  # the range holds only that port
    assert len(fill(table(range(40000, 40010)), ("127.0.0.1", 40003))) == 10  # other IP


def test_own_port_stays_excluded_after_churn() -> None:
    t = table(range(40000, 40031), seed=3)  # two blocks; the own port in the second
    own = (SRC, 40030)
    for _ in range(200):
        claim = t.acquire(own, V4)
        assert claim is not None
        assert claim.port != 40030
        t.release(claim)


def test_a_source_gone_ends_the_claim_without_resting_anything() -> None:
    clock = FakeClock()
    t = table(range(40000, 40001), clock=clock)
    claim = t.acquire(A, V4)
    assert claim is not None
    t.source_gone(claim)
    figures = t.statistics()[SRC]
    assert (figures.in_use, figures.held, figures.blocked, figures.cooling) == (0, 0, 0, 0)
    assert t.acquire(A, V4) is not None  # the 4-tuple was not the problem


def test_down_source_is_skipped_then_retried_and_comes_back() -> None:
    clock = FakeClock()
    other = "127.0.0.3"
    t = table(range(40000, 40010), clock=clock, sources=(SRC, other))
    health = t.health
    assert health.went_down(SRC)
    assert not health.went_down(SRC)  # already down: no second "went down"
    assert t.statistics()[SRC].state == "down"
    for _ in range(10):
        claim = t.acquire(A, V4)
        assert claim is not None
        assert claim.source == other
        t.release(claim)
    clock.advance(health.retry_in(SRC))
    tried = {c.source for c in (t.acquire(A, V4), t.acquire(A, V4)) if c is not None}
    assert SRC in tried  # due: offered again, and it looks roomiest
    assert SRC in health.probing
    assert health.came_up(SRC)
    assert t.statistics()[SRC].state == "up"


def test_all_sources_down_leaves_nothing_to_acquire() -> None:
    clock = FakeClock()
    t = table(clock=clock)
    t.health.went_down(SRC)
    assert t.acquire(A, V4) is None
    clock.advance(t.health.retry_in(SRC))
    assert t.acquire(A, V4) is not None


def test_down_sources_are_retried_with_backoff_capped_at_a_second() -> None:
    clock = FakeClock()
    health = Health(clock)
    waits = []
    for _ in range(8):
        health.went_down(SRC)
        waits.append(health.retry_in(SRC))
    assert waits[0] < waits[1] < waits[2]
    assert max(waits) == waits[-1] == 1.0
