"""The Pool's surface on real loopback connections: streams, protocols, TLS, names,
IPv6, several sources, and the socket handed to plain asyncio."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import cast

import pytest

import bindpool
from tests.conftest import SOURCE, PoolMaker, Servers, echo


async def roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(b"hello")
    assert await reader.readexactly(5) == b"hello"
    writer.close()
    await writer.wait_closed()


async def test_open_connection_binds_the_source(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    pool = make_pool(4)
    reader, writer = await pool.open_connection(*echo_server)
    source, port = writer.get_extra_info("sockname")
    assert source == SOURCE
    assert port in make_pool.ports
    assert writer.get_extra_info("peername") == echo_server
    await roundtrip(reader, writer)


async def test_open_connection_limit_reaches_the_reader(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    pool = make_pool(4)
    reader, writer = await pool.open_connection(*echo_server, limit=8)
    writer.write(b"0123456789\n")
    with pytest.raises(ValueError, match="limit"):
        await reader.readline()
    writer.close()
    await writer.wait_closed()


async def test_create_connection_with_a_protocol(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    loop = asyncio.get_running_loop()
    got = loop.create_future()

    class Client(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            cast("asyncio.Transport", transport).write(b"ping")

        def data_received(self, data: bytes) -> None:
            got.set_result(data)

    pool = make_pool(4)
    transport, protocol = await pool.create_connection(Client, *echo_server)
    assert isinstance(protocol, Client)
    async with asyncio.timeout(5):
        assert await got == b"ping"
    transport.close()


async def test_socket_hands_over_to_plain_asyncio(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    pool = make_pool(4)
    sock = await pool.connect(*echo_server)
    assert isinstance(sock, bindpool.PooledSocket)
    assert isinstance(sock, socket.socket)
    assert sock.gettimeout() == 0.0
    assert sock.getpeername() == echo_server
    reader, writer = await asyncio.open_connection(sock=sock)
    await roundtrip(reader, writer)


async def test_tls_verifies_host_by_default(
    make_pool: PoolMaker,
    tls_echo_server: tuple[str, int],
    client_tls: ssl.SSLContext,
) -> None:
    pool = make_pool(4)
    # No server_hostname: the name checked is the host, here the IP in the certificate.
    reader, writer = await pool.open_connection(*tls_echo_server, ssl=client_tls)
    assert writer.get_extra_info("ssl_object") is not None
    await roundtrip(reader, writer)
    reader, writer = await pool.open_connection(
        *tls_echo_server, ssl=client_tls, server_hostname="localhost", ssl_handshake_timeout=5
    )
    await roundtrip(reader, writer)


async def test_names_resolve_through_the_loop(
    make_pool: PoolMaker, echo_server: tuple[str, int]
) -> None:
    pool = make_pool(4)
    reader, writer = await pool.open_connection("localhost", echo_server[1])
    assert writer.get_extra_info("peername") == echo_server
    await roundtrip(reader, writer)


async def test_ipv6_and_ipv4_sources_serve_their_own_family(
    make_pool: PoolMaker, servers: Servers, echo_server: tuple[str, int]
) -> None:
    v6_server = await servers.start(echo, host="::1")
    pool = make_pool(4, sources=[SOURCE, "::1"])
    reader, writer = await pool.open_connection(*v6_server)
    assert writer.get_extra_info("sockname")[0] == "::1"
    await roundtrip(reader, writer)
    reader, writer = await pool.open_connection(*echo_server)
    assert writer.get_extra_info("sockname")[0] == SOURCE
    await roundtrip(reader, writer)


async def test_several_sources_share_the_load_and_add_up(
    make_pool: PoolMaker,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
) -> None:
    (destination,) = await sinks(1)
    sources = [SOURCE, "127.0.0.3"]
    pool = make_pool(5, sources=sources)
    socks = [await pool.connect(*destination) for _ in range(10)]
    by_source = pool.statistics().sources
    assert [by_source[s].in_use for s in sources] == [5, 5]
    assert sorted({s.getsockname()[0] for s in socks}) == sources
    with pytest.raises(bindpool.PortsExhausted, match=r"127\.0\.0\.2, 127\.0\.0\.3"):
        await pool.connect(*destination)
    for sock in socks:
        sock.close()


async def test_statistics_and_repr_show_live_counts(
    make_pool: PoolMaker,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
) -> None:
    destinations = await sinks(3)
    pool = make_pool(10, cooldown=30)
    socks = [await pool.connect(*d) for d in destinations for _ in range(4)]
    stats = pool.statistics()
    # The table shares ports first-fit: 4 at most. The kernel spreads them over the block.
    footprint = 4 if make_pool.strategy == "table" else stats.footprint
    assert 4 <= footprint <= 10
    assert (stats.in_use, stats.footprint, stats.connects) == (12, footprint, 12)
    source = stats.sources[SOURCE]
    assert (source.ports, source.in_use, source.footprint, source.destinations) == (
        10,
        12,
        footprint,
        3,
    )
    assert f"in_use=12 footprint={footprint}" in repr(pool)
    socks.pop().close()
    stats = pool.statistics()
    assert (stats.in_use, stats.cooling) == (11, 1 if make_pool.strategy == "table" else 0)
    with pytest.raises(AttributeError):
        stats.in_use = 0  # type: ignore[misc]  # frozen
    for sock in socks:
        sock.close()
