"""Exactly once: every way a connection can end gives its lease back once, on both loops.

Each scenario opens one connection (or tries to) through a pool with an `on_release` hook and
ends it one way. The shared check: the hook heard of exactly one lease, for this 4-tuple,
and the table holds nothing live afterwards.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import socket
import ssl
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

import bindpool
from tests.conftest import DEST, SOURCE, PoolMaker, Servers, sink
from tests.fakes import RefusingHandOverLoop, until


@dataclass
class Peers:
    echo: tuple[str, int]
    tls_echo: tuple[str, int]
    sink: tuple[str, int]
    blackhole: tuple[str, int]
    closed_port: int
    servers: Servers
    client_tls: ssl.SSLContext


# -- the scenarios: each returns the socket port it used, or None if it cannot know ----------


async def normal_close(pool: bindpool.Pool, peers: Peers) -> int | None:
    reader, writer = await pool.open_connection(*peers.echo)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    port: int = writer.get_extra_info("sockname")[1]
    writer.close()
    await writer.wait_closed()
    # Released while the transport (and the socket it holds) still exists: through close()
    # on asyncio, detach() on uvloop, not through garbage collection.
    await until(lambda: pool.statistics().in_use == 0)
    return port


async def server_closes_first(pool: bindpool.Pool, peers: Peers) -> int | None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pass  # the tracked handler closes the connection on return

    address = await peers.servers.start(hang_up)
    reader, writer = await pool.open_connection(*address)
    assert await reader.read() == b""
    port: int = writer.get_extra_info("sockname")[1]
    writer.close()
    await writer.wait_closed()
    return port


async def peer_reset(pool: bindpool.Pool, peers: Peers) -> int | None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # close with linger 0: the kernel sends RST

    address = await peers.servers.start(reset)
    reader, writer = await pool.open_connection(*address)
    port: int = writer.get_extra_info("sockname")[1]
    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()
    return port


async def refused(pool: bindpool.Pool, peers: Peers) -> int | None:
    with pytest.raises(ConnectionRefusedError):
        await pool.connect(DEST, peers.closed_port)
    return None


async def timeout(pool: bindpool.Pool, peers: Peers) -> int | None:
    with pytest.raises(TimeoutError):
        await pool.connect(*peers.blackhole, timeout=0.2)
    return None


async def cancelled_while_connecting(pool: bindpool.Pool, peers: Peers) -> int | None:
    task = asyncio.create_task(pool.connect(*peers.blackhole))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return None


async def tls_wrong_name(pool: bindpool.Pool, peers: Peers) -> int | None:
    with pytest.raises(ssl.SSLCertVerificationError):
        await pool.open_connection(
            *peers.tls_echo, ssl=peers.client_tls, server_hostname="wrong.example"
        )
    return None


async def tls_to_plain_server(pool: bindpool.Pool, peers: Peers) -> int | None:
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await pool.open_connection(*peers.echo, ssl=peers.client_tls, server_hostname="localhost")
    return None


async def tls_handshake_timeout(pool: bindpool.Pool, peers: Peers) -> int | None:
    with pytest.raises((TimeoutError, ConnectionAbortedError)):
        await pool.open_connection(
            *peers.sink,
            ssl=peers.client_tls,
            server_hostname="localhost",
            ssl_handshake_timeout=0.2,
        )
    return None


async def cancelled_during_tls(pool: bindpool.Pool, peers: Peers) -> int | None:
    task = asyncio.create_task(
        pool.open_connection(*peers.sink, ssl=peers.client_tls, server_hostname="localhost")
    )
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    return None


async def protocol_transport_closed(pool: bindpool.Pool, peers: Peers) -> int | None:
    lost = asyncio.get_running_loop().create_future()

    class Probe(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(exc)

    transport, _ = await pool.create_connection(Probe, *peers.echo)
    port: int = transport.get_extra_info("sockname")[1]
    transport.close()
    await lost
    await until(lambda: pool.statistics().in_use == 0)  # transport still referenced here
    return port


async def dropped_and_collected(pool: bindpool.Pool, peers: Peers) -> int | None:
    sock = await pool.connect(*peers.echo)
    port: int = sock.getsockname()[1]
    with pytest.warns(ResourceWarning, match="unclosed"):
        del sock  # the last reference: finalized here, as gc.collect() would for a cycle
    return port


async def detached(pool: bindpool.Pool, peers: Peers) -> int | None:
    sock = await pool.connect(*peers.echo)
    port: int = sock.getsockname()[1]
    fd = sock.detach()
    assert pool.statistics().in_use == 0  # at detach, not when `sock` is collected
    os.close(fd)
    return port


async def closed(pool: bindpool.Pool, peers: Peers) -> int | None:
    sock = await pool.connect(*peers.echo)
    port: int = sock.getsockname()[1]
    sock.close()
    assert pool.statistics().in_use == 0  # at close, not when `sock` is collected
    return port


async def closed_twice_then_collected(pool: bindpool.Pool, peers: Peers) -> int | None:
    sock = await pool.connect(*peers.echo)
    port: int = sock.getsockname()[1]
    sock.close()
    sock.close()
    sock.detach()
    del sock
    gc.collect()
    return port


Scenario = Callable[[bindpool.Pool, Peers], Awaitable[int | None]]
SCENARIOS: list[Scenario] = [
    normal_close,
    server_closes_first,
    peer_reset,
    refused,
    timeout,
    cancelled_while_connecting,
    tls_wrong_name,
    tls_to_plain_server,
    tls_handshake_timeout,
    cancelled_during_tls,
    protocol_transport_closed,
    dropped_and_collected,
    closed,
    detached,
    closed_twice_then_collected,
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.__name__)
async def test_lease_released_exactly_once(
    scenario: Scenario,
    make_pool: PoolMaker,
    servers: Servers,
    echo_server: tuple[str, int],
    tls_echo_server: tuple[str, int],
    blackhole: tuple[str, int],
    closed_port: int,
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    peers = Peers(
        echo=echo_server,
        tls_echo=tls_echo_server,
        sink=await servers.start(sink),
        blackhole=blackhole,
        closed_port=closed_port,
        servers=servers,
        client_tls=client_tls,
    )
    pool = make_pool(8, on_release=released.append)
    port = await scenario(pool, peers)
    await until(lambda: bool(released))  # transports close their socket a bit later
    await asyncio.sleep(0.02)  # room for a second, wrong release to show up
    assert len(released) == 1, released
    (lease,) = released
    assert lease.source == SOURCE
    assert lease.port in make_pool.ports
    assert lease.destination[0] == DEST
    if port is not None:
        assert lease.port == port
    assert pool.statistics().in_use == 0
    assert pool.statistics().sources[SOURCE].footprint == 0


async def test_lease_names_the_four_tuple(
    make_pool: PoolMaker, echo_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    pool = make_pool(4, on_release=released.append)
    sock = await pool.connect(*echo_server)
    lease = sock.lease
    assert lease == bindpool.Lease(SOURCE, sock.getsockname()[1], echo_server)
    assert lease.port in make_pool.ports
    sock.close()
    assert released == [lease]
    assert sock.lease is None


async def test_failing_hook_is_logged_and_the_pool_stays_consistent(
    make_pool: PoolMaker,
    echo_server: tuple[str, int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken(lease: bindpool.Lease) -> None:
        raise ValueError("hook bug")

    pool = make_pool(4, on_release=broken)
    with caplog.at_level(logging.ERROR, logger="bindpool"):
        (await pool.connect(*echo_server)).close()
    assert "on_release hook failed" in caplog.text
    assert pool.statistics().in_use == 0
    (await pool.connect(*echo_server)).close()


async def test_connections_outlive_aclose_and_still_release(
    make_pool: PoolMaker, echo_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    async with make_pool(4, on_release=released.append) as pool:
        reader, writer = await pool.open_connection(*echo_server)
    assert pool.closed
    with pytest.raises(bindpool.PoolClosed):
        await pool.connect(*echo_server)
    writer.write(b"still here")
    assert await reader.readexactly(10) == b"still here"
    writer.close()
    await writer.wait_closed()
    await until(lambda: bool(released))
    assert len(released) == 1
    assert pool.statistics().in_use == 0


async def test_lease_outlives_a_protocol_swap(
    make_pool: PoolMaker, echo_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    """The lease follows the connection, not the protocol it started with."""
    lost = asyncio.get_running_loop().create_future()

    class Successor(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.set_result(exc)

    pool = make_pool(4, on_release=released.append)
    transport, _ = await pool.create_connection(asyncio.Protocol, *echo_server)
    transport.set_protocol(Successor())
    gc.collect()
    assert (pool.statistics().in_use, released) == (1, [])
    transport.close()
    await lost
    del transport
    gc.collect()
    await until(lambda: pool.statistics().in_use == 0)
    assert len(released) == 1


async def test_factory_error_takes_no_port(
    make_pool: PoolMaker, echo_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    def broken() -> asyncio.Protocol:
        raise RuntimeError("factory bug")

    pool = make_pool(4, on_release=released.append)
    with pytest.raises(RuntimeError, match="factory bug"):
        await pool.create_connection(broken, *echo_server)
    stats = pool.statistics()
    assert (stats.in_use, stats.connects, released) == (0, 0, [])


def test_socket_not_taken_by_the_loop_is_closed_and_released(
    port_block: Callable[[int], range],
) -> None:
    """One owner per socket until the hand-off: a failed hand-off closes it."""
    released: list[bindpool.Lease] = []
    ports = port_block(4)
    with socket.socket() as listener:
        listener.bind((DEST, 0))
        listener.listen(4)

        async def main() -> None:
            pool = bindpool.Pool([SOURCE], ports=ports, on_release=released.append)
            with pytest.raises(OSError, match="hand-over failed"):
                await pool.create_connection(asyncio.Protocol, *listener.getsockname())
            assert pool.statistics().in_use == 0

        with asyncio.Runner(loop_factory=RefusingHandOverLoop) as runner:
            runner.run(main())
    assert len(released) == 1


async def test_start_tls_on_a_stream_keeps_the_lease_until_close(
    make_pool: PoolMaker,
    tls_echo_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    """`writer.start_tls()` swaps the transport's protocol (on uvloop's native path too): the
    lease follows the connection and goes back at close, not when something is collected."""
    pool = make_pool(4, on_release=released.append)
    reader, writer = await pool.open_connection(*tls_echo_server)
    await writer.start_tls(client_tls, server_hostname="localhost")
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    assert (pool.statistics().in_use, released) == (1, [])
    gc.disable()  # the release must come from the close itself
    try:
        writer.close()
        await writer.wait_closed()
        await until(lambda: bool(released))
        assert pool.statistics().in_use == 0
    finally:
        gc.enable()
    assert len(released) == 1


async def test_create_connection_then_start_tls_releases_at_close(
    make_pool: PoolMaker,
    tls_echo_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    pool = make_pool(4, on_release=released.append)
    loop = asyncio.get_running_loop()
    transport, protocol = await pool.create_connection(asyncio.Protocol, *tls_echo_server)
    tls = await loop.start_tls(transport, protocol, client_tls, server_hostname="localhost")
    assert tls is not None
    gc.disable()
    try:
        tls.close()
        await until(lambda: bool(released))
        assert pool.statistics().in_use == 0
    finally:
        gc.enable()
    assert len(released) == 1
