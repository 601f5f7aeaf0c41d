"""bindpool.aiohttp.TCPConnector against real aiohttp.web servers on loopback, both loops.

Each test asks aiohttp for something its own TCPConnector does (keep-alive, force_close,
TLS, timeouts, proxies, limits) and checks two things: aiohttp behaves and reports errors as
it always does, and the pool's ledger agrees with what happened: one lease per TCP connection
aiohttp opened or tried to open, given back exactly once, whatever ended it.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
import trustme
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult

import bindpool
import bindpool.aiohttp
from tests.conftest import DEST, SOURCE, Servers
from tests.fakes import RefusingHandOverLoop, until

Opened = Callable[..., bindpool.Pool]


# -- the web servers -------------------------------------------------------------------------


class Web:
    """aiohttp.web servers on 127.0.0.1, all on one app, cleaned up after the test.

    Routes:
        /port   the client's source port, as seen by the server.
        /close  a response with `Connection: close`: the server ends the connection.
        /hold   counts the request in `arrived`, then waits for `release` (bounded).
    """

    def __init__(self) -> None:
        self._runners: list[web.AppRunner] = []
        self.arrived = 0
        self.release = asyncio.Event()
        self.app = web.Application()
        self.app.router.add_get("/port", self._port)
        self.app.router.add_get("/close", self._close)
        self.app.router.add_get("/hold", self._hold)

    async def _port(self, request: web.Request) -> web.Response:
        return web.Response(text=str(_peer_port(request)))

    async def _close(self, request: web.Request) -> web.Response:
        return web.Response(text=str(_peer_port(request)), headers={"Connection": "close"})

    async def _hold(self, request: web.Request) -> web.Response:
        self.arrived += 1
        async with asyncio.timeout(10):  # a hang guard: the test sets the event
            await self.release.wait()
        return web.Response(text=str(_peer_port(request)))

    async def start(
        self, tls: ssl.SSLContext | None = None, keepalive_timeout: float = 75.0
    ) -> str:
        """A new server for the app; returns its base URL."""
        runner = web.AppRunner(
            self.app, access_log=None, shutdown_timeout=1.0, keepalive_timeout=keepalive_timeout
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, DEST, 0, ssl_context=tls)
        await site.start()
        port = runner.addresses[-1][1]
        return f"{'https' if tls else 'http'}://{DEST}:{port}"

    async def close(self) -> None:
        self.release.set()
        for runner in self._runners:
            await runner.cleanup()


def _peer_port(request: web.Request) -> int:
    assert request.transport is not None
    return int(request.transport.get_extra_info("peername")[1])


@pytest_asyncio.fixture
async def webs() -> AsyncIterator[Web]:
    servers = Web()
    yield servers
    await servers.close()


@pytest_asyncio.fixture
async def http(webs: Web) -> str:
    return await webs.start()


@pytest.fixture
def server_cert(ca: trustme.CA) -> trustme.LeafCert:
    return ca.issue_cert("localhost", DEST)


@pytest.fixture
def server_tls(server_cert: trustme.LeafCert) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(context)
    return context


@pytest_asyncio.fixture
async def https(webs: Web, server_tls: ssl.SSLContext) -> str:
    return await webs.start(tls=server_tls)


@pytest.fixture
def opened(
    port_block: Callable[[int], range], released: list[bindpool.Lease]
) -> Callable[..., bindpool.Pool]:
    """A pool on SOURCE with a fresh port block whose `on_release` fills `released`."""

    def make(size: int = 8, **kwargs: Any) -> bindpool.Pool:
        return bindpool.Pool([SOURCE], ports=port_block(size), on_release=released.append, **kwargs)

    return make


async def text(session: aiohttp.ClientSession, url: str, **kwargs: Any) -> str:
    async with session.get(url, **kwargs) as response:
        response.raise_for_status()
        return await response.text()


def creations() -> tuple[aiohttp.TraceConfig, list[None]]:
    """A trace config counting the connections aiohttp itself reports it created."""
    created: list[None] = []

    async def on_create(session: Any, context: SimpleNamespace, params: Any) -> None:
        created.append(None)

    trace = aiohttp.TraceConfig()
    trace.on_connection_create_end.append(on_create)
    return trace, created


# -- connections that work -------------------------------------------------------------------


async def test_keep_alive_reuses_one_lease(
    opened: Opened, http: str, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    connector = bindpool.aiohttp.TCPConnector(pool)
    assert connector.pool is pool
    async with aiohttp.ClientSession(connector=connector) as session:
        ports = {int(await text(session, f"{http}/port")) for _ in range(4)}
        (port,) = ports  # one connection, reused
        stats = pool.statistics()
        assert (stats.in_use, stats.connects) == (1, 1)  # held while idle in aiohttp's pool
        assert released == []
    await until(lambda: bool(released))
    assert [(lease.source, lease.port) for lease in released] == [(SOURCE, port)]
    assert pool.statistics().in_use == 0


async def test_force_close_takes_one_lease_per_request(
    opened: Opened, http: str, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, force_close=True)
    ) as session:
        ports = [int(await text(session, f"{http}/port")) for _ in range(3)]
        await until(lambda: len(released) == 3)
        assert pool.statistics().in_use == 0
    assert sorted(lease.port for lease in released) == sorted(ports)
    assert pool.statistics().connects == 3


async def test_server_connection_close_gives_the_lease_back(
    opened: Opened, http: str, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        ports = [int(await text(session, f"{http}/close")) for _ in range(2)]
        await until(lambda: len(released) == 2)  # the session is still open
    assert sorted(lease.port for lease in released) == sorted(ports)
    assert pool.statistics().connects == 2


async def test_server_closing_an_idle_connection_gives_the_lease_back(
    opened: Opened, webs: Web, released: list[bindpool.Lease]
) -> None:
    base = await webs.start(keepalive_timeout=0.05)
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        port = int(await text(session, f"{base}/port"))
        await until(lambda: bool(released))  # the server hung up; the client did nothing
        assert pool.statistics().in_use == 0
        # aiohttp notices the dead connection and opens a new one from the pool.
        assert int(await text(session, f"{base}/port")) > 0
    await until(lambda: len(released) == 2)
    assert released[0].port == port


async def test_tls_with_keep_alive(
    opened: Opened, https: str, client_tls: ssl.SSLContext, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, ssl=client_tls)
    ) as session:
        ports = {int(await text(session, f"{https}/port")) for _ in range(3)}
        assert len(ports) == 1
        assert pool.statistics().in_use == 1
    await until(lambda: bool(released))
    assert len(released) == 1


async def test_connector_arguments_pass_through(
    opened: Opened, http: str, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    connector = bindpool.aiohttp.TCPConnector(
        pool,
        ssl=False,
        use_dns_cache=False,
        ttl_dns_cache=None,
        limit=3,
        limit_per_host=2,
        keepalive_timeout=30,
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        assert (connector.limit, connector.limit_per_host) == (3, 2)
        assert not connector.use_dns_cache
        bodies = await asyncio.gather(*(text(session, f"{http}/port") for _ in range(6)))
        # limit_per_host=2: never more than two connections, hence two leases at most.
        assert 1 <= len(set(bodies)) <= 2
        assert pool.statistics().connects <= 2
    await until(lambda: pool.statistics().in_use == 0)


async def test_on_release_count_equals_connections_opened(
    opened: Opened, webs: Web, released: list[bindpool.Lease]
) -> None:
    bases = [await webs.start() for _ in range(2)]
    pool = opened(16)
    trace, created = creations()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, limit_per_host=3), trace_configs=[trace]
    ) as session:
        urls = [f"{base}/{path}" for base in bases for path in ("port", "close") * 5]
        await asyncio.gather(*(text(session, url) for url in urls))
    await until(lambda: len(released) == len(created))
    await asyncio.sleep(0.02)  # room for a wrong, second release to show up
    assert len(released) == len(created) == pool.statistics().connects
    assert len(created) >= 2 * 5  # every /close needed a connection of its own
    assert len(set(released)) == len(released)


async def test_addresses_tried_in_order_skipping_other_families(
    opened: Opened, http: str, released: list[bindpool.Lease]
) -> None:
    """A name with an IPv6 address (no source for it), a refusing one, then the server."""
    port = int(http.rsplit(":", 1)[1])
    resolver = FakeResolver({"multi.test": ["::1", "127.0.0.3", DEST]})
    pool = opened()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, resolver=resolver)
    ) as session:
        assert int(await text(session, f"http://multi.test:{port}/port")) > 0
    await until(lambda: len(released) == 2)
    assert [lease.destination for lease in released] == [("127.0.0.3", port), (DEST, port)]


class FakeResolver(AbstractResolver):
    """Names to fixed addresses, in the given order: an IP (at the port asked for), or an
    (ip, port) pair saying where that address really listens."""

    def __init__(self, names: dict[str, list[str | tuple[str, int]]]) -> None:
        self._names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addresses = [(a, port) if isinstance(a, str) else a for a in self._names[host]]
        return [
            ResolveResult(
                hostname=host,
                host=ip,
                port=at,
                family=socket.AF_INET6 if ":" in ip else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for ip, at in addresses
        ]

    async def close(self) -> None:
        pass


async def test_happy_eyeballs_race_past_a_dead_address(
    opened: Opened,
    http: str,
    blackhole: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    """aiohttp's default happy_eyeballs_delay (0.25 s), through the pool: a name whose first
    address drops SYNs answers through the second, well inside `total=5`. Tried one after
    the other (as before), it waited for `sock_connect` or failed."""
    port = int(http.rsplit(":", 1)[1])
    resolver = FakeResolver({"dead-first.test": [blackhole, (DEST, port)]})
    pool = opened()
    connector = bindpool.aiohttp.TCPConnector(pool, resolver=resolver)
    async with aiohttp.ClientSession(connector=connector) as session:
        timeout = aiohttp.ClientTimeout(total=5)
        assert int(await text(session, f"http://dead-first.test:{port}/port", timeout=timeout))
        # The dead address's attempt was cancelled before the request went out.
        assert [lease.destination for lease in released] == [blackhole]
        assert pool.statistics().in_use == 1  # the live connection, kept alive
    await until(lambda: pool.statistics().in_use == 0)
    assert [lease.destination for lease in released] == [blackhole, (DEST, port)]


async def test_happy_eyeballs_delay_none_tries_one_after_another(
    opened: Opened, http: str, blackhole: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    """As aiohttp's own connector with `happy_eyeballs_delay=None`: the dead address holds
    the call until `sock_connect`, then aiohttp drops it and calls again with the next."""
    port = int(http.rsplit(":", 1)[1])
    resolver = FakeResolver({"dead-first.test": [blackhole, (DEST, port)]})
    pool = opened()
    connector = bindpool.aiohttp.TCPConnector(pool, resolver=resolver, happy_eyeballs_delay=None)
    async with aiohttp.ClientSession(connector=connector) as session:
        timeout = aiohttp.ClientTimeout(sock_connect=0.2)
        assert int(await text(session, f"http://dead-first.test:{port}/port", timeout=timeout))
    await until(lambda: pool.statistics().in_use == 0)
    assert [lease.destination for lease in released] == [blackhole, (DEST, port)]


@pytest.mark.parametrize("delay", [0.25, None], ids=["raced", "sequential"])
async def test_tls_failure_connects_each_address_once(
    delay: float | None,
    opened: Opened,
    servers: Servers,
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    """Servers that reset the connection mid-handshake (an OSError, not an SSLError): as in
    aiohttp, the TLS failure ends the call and aiohttp's caller moves on to the next
    address, so each address gets one TCP connection and one handshake. (The adapter used
    to go on to the next address inside the call, and aiohttp's retry then connected that
    address a second time.)"""
    accepted: dict[int, int] = {}

    async def drop_mid_handshake(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        port = writer.get_extra_info("sockname")[1]
        accepted[port] = accepted.get(port, 0) + 1
        await reader.read(1)  # the ClientHello arrived
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # a reset

    first, second = [await servers.start(drop_mid_handshake) for _ in range(2)]
    resolver = FakeResolver({"drop.test": [first, second]})
    pool = opened()
    connector = bindpool.aiohttp.TCPConnector(
        pool, resolver=resolver, ssl=client_tls, happy_eyeballs_delay=delay
    )
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as raised:
            await text(session, f"https://drop.test:{first[1]}/")
    assert isinstance(raised.value.os_error, ConnectionResetError)
    assert accepted == {first[1]: 1, second[1]: 1}
    await until(lambda: pool.statistics().in_use == 0)
    assert sorted(lease.destination for lease in released) == sorted([first, second])


def test_happy_eyeballs_default_is_aiohttps() -> None:
    parameters = inspect.signature(aiohttp.TCPConnector).parameters
    assert parameters["happy_eyeballs_delay"].default == bindpool.aiohttp.HAPPY_EYEBALLS_DELAY


@pytest.mark.parametrize(
    "arguments", [{"happy_eyeballs_delay": -1}, {"interleave": "1"}], ids=["delay", "interleave"]
)
async def test_bad_happy_eyeballs_arguments(opened: Opened, arguments: dict[str, Any]) -> None:
    with pytest.raises(bindpool.ConfigurationError, match=next(iter(arguments))):
        bindpool.aiohttp.TCPConnector(opened(), **arguments)


# -- connections that fail: aiohttp's errors, leases back ------------------------------------


@pytest.mark.parametrize(
    ("timeout", "error"),
    [
        # sock_connect: aiohttp's own ceil_timeout, which the connector keeps.
        (aiohttp.ClientTimeout(sock_connect=0.2), aiohttp.ConnectionTimeoutError),
        # total: the request's timer cancels the connect; aiohttp raises a bare TimeoutError.
        (aiohttp.ClientTimeout(total=0.2), TimeoutError),
    ],
    ids=["sock_connect", "total"],
)
async def test_connect_timeout(
    timeout: aiohttp.ClientTimeout,
    error: type[Exception],
    opened: Opened,
    blackhole: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        with pytest.raises(error):
            await text(session, f"http://{DEST}:{blackhole[1]}/", timeout=timeout)
    assert len(released) == 1
    assert (pool.statistics().in_use, pool.statistics().connects) == (0, 0)


async def test_cancelled_mid_connect(
    opened: Opened, blackhole: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        task = asyncio.create_task(text(session, f"http://{DEST}:{blackhole[1]}/"))
        await until(lambda: pool.statistics().in_use == 1)  # connecting now
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert len(released) == 1
    assert pool.statistics().in_use == 0


async def test_refused(opened: Opened, closed_port: int, released: list[bindpool.Lease]) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await text(session, f"http://{DEST}:{closed_port}/")
    assert isinstance(info.value.os_error, ConnectionRefusedError)
    assert info.value.__cause__ is info.value.os_error
    assert (info.value.host, info.value.port) == (DEST, closed_port)
    assert len(released) == 1


@pytest.mark.parametrize("case", ["wrong_name", "untrusted"])
async def test_tls_certificate_failure(
    case: str,
    opened: Opened,
    https: str,
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    pool = opened()
    if case == "wrong_name":
        connector = bindpool.aiohttp.TCPConnector(pool, ssl=client_tls)
        extra: dict[str, Any] = {"server_hostname": "wrong.example"}
    else:  # the system's CAs, which do not know the test CA
        connector = bindpool.aiohttp.TCPConnector(pool)
        extra = {}
    async with aiohttp.ClientSession(connector=connector) as session:
        with pytest.raises(aiohttp.ClientConnectorCertificateError) as info:
            await text(session, f"{https}/port", **extra)
    assert isinstance(info.value.certificate_error, ssl.SSLCertVerificationError)
    await until(lambda: bool(released))
    await asyncio.sleep(0.02)
    assert len(released) == 1


@pytest.mark.parametrize("matches", [True, False], ids=["fingerprint", "wrong_fingerprint"])
async def test_fingerprint(
    matches: bool,
    opened: Opened,
    https: str,
    server_cert: trustme.LeafCert,
    released: list[bindpool.Lease],
) -> None:
    """aiohttp checks a pinned certificate after `_wrap_create_connection` returns."""
    der = ssl.PEM_cert_to_DER_cert(server_cert.cert_chain_pems[0].bytes().decode())
    digest = hashlib.sha256(der).digest() if matches else bytes(32)
    pool = opened()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, ssl=aiohttp.Fingerprint(digest))
    ) as session:
        if matches:
            assert int(await text(session, f"{https}/port")) > 0
        else:
            with pytest.raises(aiohttp.ServerFingerprintMismatch):
                await text(session, f"{https}/port")
    await until(lambda: bool(released))
    assert len(released) == 1


async def test_tls_to_a_plain_server(
    opened: Opened, http: str, client_tls: ssl.SSLContext, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    url = http.replace("http://", "https://")
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, ssl=client_tls)
    ) as session:
        with pytest.raises(aiohttp.ClientConnectorError):  # the SSL error, or a reset
            await text(session, f"{url}/port")
    await until(lambda: bool(released))
    assert len(released) == 1


async def test_exhausted_pool_is_a_client_connector_error(
    opened: Opened, webs: Web, http: str, released: list[bindpool.Lease]
) -> None:
    pool = opened(2)
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, limit=10)
    ) as session:
        holders = [asyncio.create_task(text(session, f"{http}/hold")) for _ in range(2)]
        await until(lambda: webs.arrived == 2)
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await text(session, f"{http}/port")
        exhausted = info.value.__cause__
        assert isinstance(exhausted, bindpool.PortsExhausted)
        assert info.value.os_error is exhausted
        assert info.value.errno == exhausted.errno == 99
        assert exhausted.destination == (DEST, int(http.rsplit(":", 1)[1]))
        webs.release.set()
        await asyncio.gather(*holders)
    assert pool.statistics().exhausted == 1
    await until(lambda: len(released) == 2)


async def test_clash_is_retried_not_reported(
    opened: Opened, webs: Web, released: list[bindpool.Lease]
) -> None:
    """A 4-tuple held by someone else: the pool moves on; aiohttp never hears of it.

    The table prefers ports already bound for another destination (no new footprint), so
    after one connection to `first` on port p, a connection to `second` tries p first: the
    test holds (SOURCE, p, second) beforehand, the way another program could.
    """
    first, second = await webs.start(), await webs.start()
    pool = opened()
    outsider = socket.socket()
    try:
        async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
            port = int(await text(session, f"{first}/port"))  # stays open: keep-alive
            outsider.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            outsider.bind((SOURCE, port))
            outsider.connect((DEST, int(second.rsplit(":", 1)[1])))
            other = int(await text(session, f"{second}/port"))
            assert other != port
            stats = pool.statistics()
            assert (stats.retries, stats.connects, stats.in_use) == (1, 2, 2)
    finally:
        outsider.close()
    await until(lambda: len(released) == 2)


async def test_family_without_a_source(opened: Opened, released: list[bindpool.Lease]) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as info:
            await text(session, "http://[::1]:9/")
    assert isinstance(info.value.__cause__, bindpool.ConfigurationError)
    assert "IPv6" in str(info.value)
    assert SOURCE in str(info.value)
    assert released == []


async def test_closed_pool(opened: Opened, http: str) -> None:
    pool = opened()
    await pool.aclose()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        with pytest.raises(bindpool.PoolClosed):
            await text(session, f"{http}/port")


async def test_deprecated_ssl_shutdown_timeout_still_reaches_the_loop(
    opened: Opened, https: str, client_tls: ssl.SSLContext, released: list[bindpool.Lease]
) -> None:
    """aiohttp's own method adds it to the loop's create_connection; so does this one."""
    pool = opened()
    with pytest.warns(DeprecationWarning, match="ssl_shutdown_timeout"):
        connector = bindpool.aiohttp.TCPConnector(pool, ssl=client_tls, ssl_shutdown_timeout=0.5)
    async with aiohttp.ClientSession(connector=connector) as session:
        assert int(await text(session, f"{https}/port")) > 0
    await until(lambda: bool(released))
    assert len(released) == 1


def test_socket_the_loop_did_not_take_is_closed_and_released(
    port_block: Callable[[int], range],
) -> None:
    """One owner per socket until the hand-off: the connector closes what the loop refused."""
    released: list[bindpool.Lease] = []
    ports = port_block(4)
    with socket.socket() as listener:
        listener.bind((DEST, 0))
        listener.listen(4)
        url = f"http://{DEST}:{listener.getsockname()[1]}/"

        async def main() -> None:
            pool = bindpool.Pool([SOURCE], ports=ports, on_release=released.append)
            connector = bindpool.aiohttp.TCPConnector(pool)
            async with aiohttp.ClientSession(connector=connector) as session:
                with pytest.raises(aiohttp.ClientConnectorError) as info:
                    await text(session, url)
                assert info.value.os_error.args == ("hand-over failed",)
                # Now, not at garbage collection: the traceback still refers to the socket.
                assert pool.statistics().in_use == 0

        with asyncio.Runner(loop_factory=RefusingHandOverLoop) as runner:
            runner.run(main())
    assert len(released) == 1


# -- proxies ---------------------------------------------------------------------------------


async def test_plain_http_through_a_proxy(
    opened: Opened, webs: Web, http: str, released: list[bindpool.Lease]
) -> None:
    """aiohttp sends `GET http://...` to the proxy; an aiohttp.web app answers it itself."""
    proxy = await webs.start()
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        port = int(await text(session, f"{http}/port", proxy=proxy))
        assert pool.statistics().in_use == 1
    await until(lambda: bool(released))
    assert released[0].port == port
    assert released[0].destination[1] == int(proxy.rsplit(":", 1)[1])


async def test_https_through_a_connect_proxy(
    opened: Opened,
    servers: Servers,
    https: str,
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    """CONNECT, then `loop.start_tls` on the pooled connection: the lease lives as long."""
    clients: list[int] = []
    proxy_ip, proxy_port = await servers.start(tunnel(clients))
    pool = opened()
    async with aiohttp.ClientSession(
        connector=bindpool.aiohttp.TCPConnector(pool, ssl=client_tls)
    ) as session:
        for _ in range(2):
            await text(session, f"{https}/port", proxy=f"http://{proxy_ip}:{proxy_port}")
        assert pool.statistics().in_use == 1  # one tunnel, kept alive and reused
    await until(lambda: bool(released))
    await asyncio.sleep(0.02)
    assert [lease.port for lease in released] == clients


async def test_refusing_proxy(
    opened: Opened, http: str, closed_port: int, released: list[bindpool.Lease]
) -> None:
    pool = opened()
    async with aiohttp.ClientSession(connector=bindpool.aiohttp.TCPConnector(pool)) as session:
        with pytest.raises(aiohttp.ClientProxyConnectionError) as info:
            await text(session, f"{http}/port", proxy=f"http://{DEST}:{closed_port}")
    assert isinstance(info.value.os_error, ConnectionRefusedError)
    assert [lease.destination for lease in released] == [(DEST, closed_port)]


def tunnel(clients: list[int]) -> Any:
    """A minimal HTTP CONNECT proxy handler; records each client's source port."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        clients.append(writer.get_extra_info("peername")[1])
        head = await reader.readuntil(b"\r\n\r\n")
        host, port = head.split(b" ")[1].decode().rsplit(":", 1)
        up_reader, up_writer = await asyncio.open_connection(host, int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            up_writer.close()

    return handle


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, then pass the EOF on by closing; a reset ends it the same way."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


# -- what the connector refuses --------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value", "words"),
    [
        ("local_addr", (SOURCE, 0), "sources"),
        ("socket_factory", lambda addr_info: socket.socket(), "makes, binds and connects"),
    ],
)
async def test_refused_arguments(
    argument: str, value: object, words: str, port_block: Callable[[int], range]
) -> None:
    pool = bindpool.Pool([SOURCE], ports=port_block(2))
    with pytest.raises(bindpool.ConfigurationError, match=words) as info:
        bindpool.aiohttp.TCPConnector(pool, **{argument: value})
    assert argument in str(info.value)
    assert isinstance(info.value, ValueError)


async def test_pool_must_be_a_pool() -> None:
    with pytest.raises(bindpool.ConfigurationError, match=r"bindpool\.Pool"):
        bindpool.aiohttp.TCPConnector(object())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (
            'sys.modules["aiohttp"] = None',
            "bindpool.aiohttp needs aiohttp >= 3.12: pip install 'bindpool[aiohttp]'",
        ),
        (
            'import aiohttp; aiohttp.__version__ = "3.11.18"',
            "bindpool.aiohttp needs aiohttp >= 3.12, found 3.11.18: "
            "pip install 'bindpool[aiohttp]'",
        ),
    ],
    ids=["missing", "too_old"],
)
def test_import_names_the_extra(setup: str, message: str) -> None:
    code = f"""
import sys
{setup}
try:
    import bindpool.aiohttp
except ImportError as exc:
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == message
