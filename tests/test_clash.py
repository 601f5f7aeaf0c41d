"""4-tuples and ports held by sockets the table knows nothing about.

The test's own sockets play "another program on the host": some hold 4-tuples to the
destination (with SO_REUSEADDR: the pool's bind succeeds and connect() says EADDRNOTAVAIL),
some hold ports (without SO_REUSEADDR, or listening: bind() says EADDRINUSE). The pool must
fill what is left, count each clash once in `retries`, and say `PortsExhausted` when nothing
is left.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterator

import pytest

import bindpool
from tests.conftest import SOURCE

R = 16


@pytest.fixture
def outsiders() -> Iterator[list[socket.socket]]:
    """Sockets standing for other programs; closed after the test."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


def hold_tuple(held: list[socket.socket], port: int, destination: tuple[str, int]) -> None:
    sock = socket.socket()
    held.append(sock)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((SOURCE, port))
    sock.connect(destination)


def hold_port(held: list[socket.socket], port: int, *, listen: bool = False) -> None:
    sock = socket.socket()  # no SO_REUSEADDR: nobody else may bind this port on SOURCE
    held.append(sock)
    sock.bind((SOURCE, port))
    if listen:
        sock.listen(8)


async def fill(pool: bindpool.Pool, destination: tuple[str, int]) -> list[socket.socket]:
    """Connect until PortsExhausted; it must come, and promptly."""
    socks: list[socket.socket] = []
    exhausted: bindpool.PortsExhausted | None = None
    async with asyncio.timeout(10):  # a hang guard, not a speed claim
        while len(socks) <= R:
            try:
                socks.append(await pool.connect(*destination))
            except bindpool.PortsExhausted as exc:
                exhausted = exc
                break
    assert len(socks) <= R, "more connections than ports"
    assert exhausted is not None
    assert exhausted.errno == 99
    return socks


async def test_tuples_held_elsewhere_are_skipped_and_counted(
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    outsiders: list[socket.socket],
) -> None:
    ports = port_block(R)
    (destination,) = await sinks(1)
    taken = ports[::2]
    for port in taken:
        hold_tuple(outsiders, port, destination)
    pool = bindpool.Pool([SOURCE], ports=ports)
    socks = await fill(pool, destination)
    assert sorted(s.getsockname()[1] for s in socks) == list(ports[1::2])
    stats = pool.statistics()
    assert stats.retries == len(taken)  # each outside 4-tuple met once, then held
    assert stats.sources[SOURCE].held == len(taken)
    assert stats.exhausted == 1
    # The held 4-tuples belong to that destination only: another one gets every port.
    (other,) = await sinks(1)
    socks += [await pool.connect(*other) for _ in ports]
    assert pool.statistics().retries == len(taken)
    for sock in socks:
        sock.close()


@pytest.mark.parametrize("listen", [False, True], ids=["bound", "listening"])
async def test_ports_in_use_are_blocked_for_every_destination(
    listen: bool,
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    outsiders: list[socket.socket],
) -> None:
    ports = port_block(R)
    destinations = await sinks(3)
    unusable = ports[: R // 4]
    for port in unusable:
        hold_port(outsiders, port, listen=listen)
    pool = bindpool.Pool([SOURCE], ports=ports)
    socks = []
    for destination in destinations:
        got = await fill(pool, destination)
        assert not {s.getsockname()[1] for s in got} & set(unusable)
        assert len(got) == R - len(unusable)
        socks += got
    stats = pool.statistics()
    assert stats.retries == len(unusable)  # found once, then skipped by every destination
    assert stats.sources[SOURCE].blocked == len(unusable)
    for sock in socks:
        sock.close()


async def test_a_port_in_use_is_not_handed_out_twice_in_a_row(
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    outsiders: list[socket.socket],
) -> None:
    ports = port_block(2)
    hold_port(outsiders, ports[0], listen=True)
    pool = bindpool.Pool([SOURCE], ports=ports, cooldown=0)
    destinations = await sinks(4)
    for destination in destinations:
        sock = await pool.connect(*destination)
        assert sock.getsockname()[1] == ports[1]
        sock.close()
    assert pool.statistics().retries <= 1


async def test_max_attempts_clashes_in_a_row_give_up(
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    outsiders: list[socket.socket],
) -> None:
    ports = port_block(R)
    (destination,) = await sinks(1)
    for port in ports:
        hold_tuple(outsiders, port, destination)
    pool = bindpool.Pool([SOURCE], ports=ports, max_attempts=5)
    with pytest.raises(bindpool.PortsExhausted) as info:
        await pool.connect(*destination)
    assert info.value.attempts == 5
    assert "5 attempts in a row were refused, the last at connect() (EADDRNOTAVAIL)" in str(
        info.value
    )
    assert isinstance(info.value.__cause__, OSError)
    assert info.value.__cause__.errno == 99
    assert pool.statistics().retries == 5
    assert pool.statistics().in_use == 0
    # Later calls try the 4-tuples not yet met; once all are held, the table says so at once.
    for _ in range(R):
        with pytest.raises(bindpool.PortsExhausted) as info:
            await pool.connect(*destination)
        if info.value.attempts == 0:
            break
    assert info.value.attempts == 0
    assert "every port is live, resting or unusable" in str(info.value)
    assert pool.statistics().retries == R


async def test_each_clash_and_the_exhaustion_are_logged(
    port_block: Callable[[int], range],
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    outsiders: list[socket.socket],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Logger "bindpool", DEBUG: one record per clash, naming the 4-tuple and its rest, and
    one for the PortsExhausted; the counters say the same."""
    ports = port_block(2)
    (destination,) = await sinks(1)
    for port in ports:
        hold_tuple(outsiders, port, destination)
    pool = bindpool.Pool([SOURCE], ports=ports)
    with caplog.at_level(logging.DEBUG, logger="bindpool"), pytest.raises(bindpool.PortsExhausted):
        await pool.connect(*destination)
    messages = [r.getMessage() for r in caplog.records if r.name == "bindpool"]
    clashes = [m for m in messages if m.startswith("clash:")]
    assert len(clashes) == 2 == pool.statistics().retries
    for port in ports:
        assert any(
            f"{SOURCE}:{port} -> {destination[0]}:{destination[1]} refused at connect()" in m
            and "(EADDRNOTAVAIL: another socket holds this 4-tuple); held 0.25 s" in m
            for m in clashes
        ), clashes
    assert any("no free source port" in m for m in messages)
    assert all(r.levelno == logging.DEBUG for r in caplog.records if r.name == "bindpool")
