"""Real sockets on loopback: one source, a small range R, D listeners -> R x D connections.

Each test runs on both strategies (the `make_pool` fixture): the table picks the ports, or
the kernel does at connect time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

import bindpool
from bindpool import _host
from tests.conftest import DEST, SOURCE, PoolMaker

R, D = 50, 4


async def test_holds_range_times_destinations_then_exhausts_then_recovers(
    make_pool: PoolMaker,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
) -> None:
    destinations = await sinks(D)
    pool = make_pool(R)
    socks = [await pool.connect(DEST, port) for _, port in destinations for _ in range(R)]
    stats = pool.statistics()
    assert (stats.in_use, stats.footprint, stats.connects) == (R * D, R, R * D)
    four_tuples = {(s.getsockname(), s.getpeername()) for s in socks}
    assert len(four_tuples) == R * D
    assert {s.getsockname()[0] for s in socks} == {SOURCE}

    with pytest.raises(bindpool.PortsExhausted) as info:
        async with asyncio.timeout(10):  # a hang guard, not a speed claim
            await pool.connect(DEST, destinations[0][1])
    assert info.value.errno == 99
    assert info.value.destination == (DEST, destinations[0][1])
    assert SOURCE in str(info.value)
    assert pool.statistics().exhausted == 1

    for sock in socks:
        sock.close()
    assert pool.statistics().in_use == 0
    await asyncio.sleep(0.05)  # the servers see EOF and close: our side goes to TIME_WAIT
    if make_pool.strategy == "kernel":
        # The kernel reuses a TIME_WAIT 4-tuple for a port it picks only where tcp_tw_reuse
        # allows (2: loopback) and tcp_tw_reuse_delay (1 s) has passed since its last
        # segment. The table's explicit binds may reuse at once, with timestamps.
        await asyncio.sleep(int(_host.sysctl("net.ipv4.tcp_tw_reuse_delay") or 1000) / 1000 + 0.2)
    again = [await pool.connect(DEST, port) for _, port in destinations]
    assert pool.statistics().in_use == D
    for sock in again:
        sock.close()


async def test_streams_hold_range_times_destinations(
    make_pool: PoolMaker,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
) -> None:
    """The same through open_connection: on uvloop with the table, libuv binds and connects
    (its native path), and must share each port between destinations too."""
    destinations = await sinks(D)
    pool = make_pool(R)
    streams = [await pool.open_connection(*d) for d in destinations for _ in range(R)]
    stats = pool.statistics()
    assert (stats.in_use, stats.footprint, stats.retries) == (R * D, R, 0)
    with pytest.raises(bindpool.PortsExhausted):
        await pool.open_connection(*destinations[0])
    for _, writer in streams:
        writer.close()
    for _, writer in streams:
        await writer.wait_closed()
    async with asyncio.timeout(5):
        while pool.statistics().in_use:  # noqa: ASYNC110  # transports close a bit later
            await asyncio.sleep(0.01)


async def test_churn_past_the_range_to_one_destination(
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    released: list[bindpool.Lease],
) -> None:
    """Ten times more short connections than ports, cool-down at its default of 60 s.

    The table's promise: its fallback to cooling 4-tuples never caps churn. (strategy
    "kernel" leaves TIME_WAIT to the kernel, which caps churn at the range per reuse delay.)
    """
    ((_, port),) = await sinks(1)
    pool = bindpool.Pool([SOURCE], ports=port_block(20), on_release=released.append)
    for _ in range(200):
        sock = await pool.connect(DEST, port)
        sock.close()
    stats = pool.statistics()
    assert (stats.connects, stats.in_use, stats.exhausted) == (200, 0, 0)
    assert stats.cooling == 20
    assert len(released) == 200


async def test_cooldown_keeps_a_quiet_pool_off_recent_tuples(
    port_block: Callable[[int], range],
    listeners: Callable[[int], list[tuple[str, int]]],
) -> None:
    ((_, port),) = listeners(1)
    pool = bindpool.Pool([SOURCE], ports=port_block(10))
    used = []
    for _ in range(10):
        sock = await pool.connect(DEST, port)
        used.append(sock.getsockname()[1])
        sock.close()
    assert len(set(used)) == 10  # each released port rests while another is free
