"""Sources as a living set (PRODUCT.md, "Sources are a living set"): selection policies,
waiting for a released 4-tuple, adding and removing sources under live traffic."""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence

import pytest

import bindpool
from tests.conftest import PoolMaker
from tests.fakes import until

S1, S2, S3 = "127.0.0.21", "127.0.0.22", "127.0.0.23"
Listeners = Callable[[int], list[tuple[str, int]]]
# Servers that close after the client: a released 4-tuple is reusable once they have (before
# that the kernel refuses it: FIN_WAIT2). Never-accepting listeners never close.
Sinks = Callable[[int], Awaitable[list[tuple[str, int]]]]


async def source_of(pool: bindpool.Pool, destination: tuple[str, int]) -> str:
    """Open and close one connection; the source it used."""
    sock = await pool.connect(*destination)
    source: str = sock.getsockname()[0]
    sock.close()
    return source


# -- select= ---------------------------------------------------------------------------------


async def test_round_robin_alternates(make_pool: PoolMaker, listeners: Listeners) -> None:
    pool = make_pool(16, sources=(S1, S2, S3), select="round_robin")
    (destination,) = listeners(1)
    used = [await source_of(pool, destination) for _ in range(9)]
    assert all(a != b for a, b in itertools.pairwise(used)), used
    assert Counter(used) == {S1: 3, S2: 3, S3: 3}


async def test_room_prefers_the_source_with_most_room(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(4, sources=(S1, S2))
    (destination,) = listeners(1)
    held = [await pool.connect(*destination) for _ in range(3)]
    counts = Counter(sock.getsockname()[0] for sock in held)
    assert sorted(counts.values()) == [1, 2]  # 2 on one, 1 on the other: never 3 and 0
    for sock in held:
        sock.close()


async def test_sticky_keeps_each_destination_on_one_source_and_moves_only_the_removed(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(16, sources=(S1, S2, S3), select="sticky")
    destinations = listeners(12)
    home = {}
    for destination in destinations:
        used = {await source_of(pool, destination) for _ in range(6)}
        assert len(used) == 1, f"{destination} moved between {used}"
        home[destination] = used.pop()
    assert len(set(home.values())) > 1  # the hash spreads destinations over sources
    gone = Counter(home.values()).most_common(1)[0][0]
    await pool.remove_source(gone)
    for destination in destinations:
        now = await source_of(pool, destination)
        if home[destination] == gone:
            assert now != gone
        else:
            assert now == home[destination], "a destination of a kept source moved"
    pool.add_source(gone)  # back: its destinations come home, the others stay
    for destination in destinations:
        assert await source_of(pool, destination) == home[destination]


async def test_sticky_moves_on_when_its_source_has_no_room(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(2, sources=(S1, S2), select="sticky")
    (destination,) = listeners(1)
    held = [await pool.connect(*destination) for _ in range(4)]
    assert Counter(sock.getsockname()[0] for sock in held) == {S1: 2, S2: 2}
    for sock in held:
        sock.close()


async def test_a_callables_order_is_honoured(make_pool: PoolMaker, listeners: Listeners) -> None:
    seen: list[tuple[tuple[str, int], Sequence[str]]] = []

    def last_first(destination: tuple[str, int], sources: Sequence[str]) -> Sequence[str]:
        seen.append((destination, tuple(sources)))
        return list(reversed(sources))

    pool = make_pool(2, sources=(S1, S2, S3), select=last_first)
    (destination,) = listeners(1)
    held = [await pool.connect(*destination) for _ in range(6)]
    assert [sock.getsockname()[0] for sock in held] == [S3, S3, S2, S2, S1, S1]
    assert seen[0] == (destination, (S1, S2, S3))
    for sock in held:
        sock.close()


async def test_sources_a_callable_leaves_out_are_not_tried(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(2, sources=(S1, S2), select=lambda destination, sources: [S2])
    (destination,) = listeners(1)
    held = [await pool.connect(*destination) for _ in range(2)]
    assert {sock.getsockname()[0] for sock in held} == {S2}
    with pytest.raises(bindpool.PortsExhausted):
        await pool.connect(*destination)
    for sock in held:
        sock.close()


async def test_a_callable_returning_a_stranger_is_a_configuration_error(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(2, sources=(S1, S2), select=lambda destination, sources: ["192.0.2.1"])
    (destination,) = listeners(1)
    with pytest.raises(bindpool.ConfigurationError, match="select callable returned"):
        await pool.connect(*destination)
    assert pool.statistics().in_use == 0


# -- wait= ---------------------------------------------------------------------------------


async def test_waiters_are_served_in_order_as_leases_come_back(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    pool = make_pool(2, wait=30.0)
    (destination,) = await sinks(1)
    held = [await pool.connect(*destination) for _ in range(2)]
    served: list[int] = []

    async def waiter(number: int) -> None:
        sock = await pool.connect(*destination)
        served.append(number)
        held.append(sock)

    tasks = []
    for number in range(3):
        tasks.append(asyncio.create_task(waiter(number)))
        await asyncio.sleep(0.01)  # in this order
    assert served == []
    for expected in ([0], [0, 1], [0, 1, 2]):
        held.pop(0).close()  # one lease back: the first in line gets it
        await until(lambda expected=expected: served == expected)  # type: ignore[misc]
    await asyncio.gather(*tasks)
    assert pool.statistics().exhausted == 0
    for sock in held:
        sock.close()


async def test_a_newcomer_queues_behind_those_already_waiting(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    pool = make_pool(1, wait=30.0)
    (destination,) = await sinks(1)
    first = await pool.connect(*destination)
    early = asyncio.create_task(pool.connect(*destination))
    await asyncio.sleep(0.01)
    first.close()  # released: `early` is woken, and a newcomer must not take its port
    late = asyncio.create_task(pool.connect(*destination))
    second = await early
    assert not late.done()
    second.close()
    (await late).close()


async def test_wait_ends_in_ports_exhausted_without_a_release(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    pool = make_pool(1, wait=0.3)
    (destination,) = await sinks(1)
    held = await pool.connect(*destination)
    cpu = time.process_time()
    with pytest.raises(bindpool.PortsExhausted):
        await pool.connect(*destination)
    spent = time.process_time() - cpu
    # No polling: a 0.3 s wait costs the process next to nothing (not a speed figure:
    # a sleep loop would cost tens of milliseconds here).
    assert spent < 0.05, spent
    assert pool.statistics().exhausted == 1
    held.close()


async def test_timeout_and_cancellation_end_a_wait_cleanly(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    released: list[bindpool.Lease] = []
    pool = make_pool(1, wait=30.0, on_release=released.append)
    (destination,) = await sinks(1)
    held = await pool.connect(*destination)
    with pytest.raises(TimeoutError, match=r"timed out after 0\.1 s"):
        await pool.connect(*destination, timeout=0.1)  # the call's timeout bounds the wait
    cancelled = asyncio.create_task(pool.connect(*destination))
    behind = asyncio.create_task(pool.connect(*destination))
    await asyncio.sleep(0.01)
    cancelled.cancel()
    held.close()  # the cancelled waiter is gone: the one behind it gets the port
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    (await behind).close()
    await until(lambda: len(released) == 2)
    assert pool.statistics().in_use == 0


async def test_a_woken_waiter_that_leaves_passes_the_wake_on(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    pool = make_pool(1, wait=30.0)
    (destination,) = await sinks(1)
    held = await pool.connect(*destination)
    first = asyncio.create_task(pool.connect(*destination))
    second = asyncio.create_task(pool.connect(*destination))
    await asyncio.sleep(0.01)
    held.close()  # wakes `first` ...
    first.cancel()  # ... which leaves before taking the port
    with pytest.raises(asyncio.CancelledError):
        await first
    (await asyncio.wait_for(second, 5)).close()


# -- add_source / remove_source --------------------------------------------------------------


async def test_add_and_remove_under_live_traffic_keep_the_books_exact(
    make_pool: PoolMaker, sinks: Sinks
) -> None:
    released: list[bindpool.Lease] = []
    pool = make_pool(8, sources=(S1, S2), on_release=released.append, wait=10.0)
    destinations = await sinks(4)
    stop = asyncio.Event()
    rng = random.Random(7)

    async def traffic() -> None:
        while not stop.is_set():
            sock = await pool.connect(*rng.choice(destinations))
            await asyncio.sleep(rng.random() * 0.01)
            sock.close()

    workers = [asyncio.create_task(traffic()) for _ in range(8)]
    await asyncio.sleep(0.1)
    pool.add_source(S3)
    await asyncio.sleep(0.1)
    assert pool.statistics().sources[S3].in_use >= 0
    await pool.remove_source(S1, drain=True)  # returns when S1's last lease is back
    assert S1 not in pool.statistics().sources  # drained: forgotten, memory and all
    assert pool.sources == (S2, S3)
    await asyncio.sleep(0.1)
    assert S1 not in pool.statistics().sources  # and nothing new went to it
    stop.set()
    await asyncio.gather(*workers)
    stats = pool.statistics()
    assert stats.in_use == 0
    assert len(released) == stats.connects
    assert Counter(lease.source for lease in released)[S3] > 0


async def test_a_draining_source_keeps_its_connections_and_says_so(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    pool = make_pool(4, sources=(S1, S2), select=lambda destination, sources: [S1])
    reader, writer = await pool.open_connection(*echo_server)
    await pool.remove_source(S1, drain=False)
    assert pool.statistics().sources[S1].state == "draining"
    assert pool.statistics().sources[S1].in_use == 1
    writer.write(b"still here")
    assert await reader.readexactly(10) == b"still here"
    drained = asyncio.create_task(pool.remove_source(S1))  # waits for the drain
    await asyncio.sleep(0.01)
    assert not drained.done()
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(drained, 5)
    assert S1 not in pool.statistics().sources
    assert pool.statistics().in_use == 0


async def test_adding_back_a_draining_source_takes_the_removal_back(
    make_pool: PoolMaker, listeners: Listeners
) -> None:
    pool = make_pool(4, sources=(S1, S2))
    (destination,) = listeners(1)
    held = [await pool.connect(*destination) for _ in range(2)]
    removal = asyncio.create_task(pool.remove_source(held[0].getsockname()[0]))
    await asyncio.sleep(0.01)
    pool.add_source(held[0].getsockname()[0])
    await asyncio.wait_for(removal, 5)  # no longer waiting for a drain
    assert {s.state for s in pool.statistics().sources.values()} == {"up"}
    for sock in held:
        sock.close()


async def test_a_source_added_wakes_those_waiting(make_pool: PoolMaker, sinks: Sinks) -> None:
    pool = make_pool(1, sources=(S1,), wait=30.0)
    (destination,) = await sinks(1)
    held = await pool.connect(*destination)
    waiting = asyncio.create_task(pool.connect(*destination))
    await asyncio.sleep(0.01)
    pool.add_source(S2)
    sock = await asyncio.wait_for(waiting, 5)
    assert sock.getsockname()[0] == S2
    sock.close()
    held.close()


async def test_removal_errors(make_pool: PoolMaker) -> None:
    pool = make_pool(4, sources=(S1, S2))
    with pytest.raises(bindpool.ConfigurationError, match="not a source of this pool"):
        await pool.remove_source(S3)
    await pool.remove_source(S1)
    with pytest.raises(bindpool.ConfigurationError, match="last source"):
        await pool.remove_source(S2)
    with pytest.raises(bindpool.ConfigurationError, match="not an address of this host"):
        pool.add_source("192.0.2.1")
    with pytest.raises(bindpool.ConfigurationError, match="not a numeric IP"):
        pool.add_source("localhost")
    pool.add_source(S2)  # already a source: nothing changes
    assert pool.sources == (S2,)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"select": "fastest"}, "select must be"),
        ({"select": 3}, "select must be"),
        ({"wait": -1}, "wait must be"),
        ({"wait": None}, "wait must be"),
        ({"wait": "1"}, "wait must be"),
        ({"wait": 10**400}, "wait an int of about 400 digits is too large"),
    ],
)
def test_bad_select_and_wait(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(bindpool.ConfigurationError, match=message):
        bindpool.Pool([S1], ports=range(40000, 40010), **kwargs)  # type: ignore[arg-type]
