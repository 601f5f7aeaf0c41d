"""bindpool.httpx against real servers on loopback, on both loops.

HTTP/1.1 comes from a small asyncio server (`http11`), HTTP/2 over TLS from hypercorn with a
trustme certificate. Every test closes its client, waits (bounded) for the transports to close
their sockets, and checks that `on_release` heard of exactly the leases the pool handed out:
one per connection opened, one per attempt given up on.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import socket
import ssl
import struct
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import httpcore
import httpx
import pytest
import pytest_asyncio
import trustme
from hypercorn.asyncio import serve
from hypercorn.config import Config

import bindpool
import bindpool.httpx
from tests.conftest import DEST, SOURCE, PoolMaker, Servers, sink
from tests.fakes import Names, until

# -- helpers -----------------------------------------------------------------------------------


async def all_released(pool: bindpool.Pool, released: list[bindpool.Lease], count: int) -> None:
    """Every lease is back, each exactly once, and there were `count` of them.

    The transports close their sockets a loop iteration or so after the client closed."""
    await until(lambda: pool.statistics().in_use == 0)
    await asyncio.sleep(0.02)  # room for a second, wrong release to show up
    assert len(released) == count, released
    assert pool.statistics().in_use == 0


def causes(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and its `__cause__` chain."""
    cause: BaseException | None = exc
    while cause is not None:
        yield cause
        cause = cause.__cause__


async def read_head(reader: asyncio.StreamReader) -> bytes | None:
    """One request head, or None at EOF."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None


async def respond(writer: asyncio.StreamWriter, body: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    await writer.drain()


async def http11(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """HTTP/1.1 with keep-alive; the body names the client's port (the connection used)."""
    while await read_head(reader) is not None:
        await respond(writer, str(writer.get_extra_info("peername")[1]).encode())


class Gate:
    """An HTTP/1.1 handler that holds each request until `width` are in flight at once."""

    def __init__(self, width: int) -> None:
        self.width = width
        self.in_flight = 0
        self.peak = 0
        self.full = asyncio.Event()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_head(reader) is not None:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            if self.in_flight >= self.width:
                self.full.set()
            async with asyncio.timeout(5):
                await self.full.wait()
            self.in_flight -= 1
            await respond(writer, b"ok")


async def asgi(scope: Any, receive: Any, send: Any) -> None:
    """Answers every request with the HTTP version the server saw and the client's port."""
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = f"{scope['http_version']} {scope['client'][1]}".encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


# -- fixtures ----------------------------------------------------------------------------------


@pytest.fixture
def pool(make_pool: PoolMaker, released: list[bindpool.Lease]) -> bindpool.Pool:
    """A pool of each strategy in turn: the adapter only sees `pool.connect`."""
    return make_pool(8, on_release=released.append)


@pytest_asyncio.fixture
async def http_server(servers: Servers) -> tuple[str, int]:
    return await servers.start(http11)


@pytest_asyncio.fixture
async def h2_server(ca: trustme.CA, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    """hypercorn with TLS (ALPN h2, http/1.1), a certificate for localhost and 127.0.0.1."""
    pem = tmp_path / "server.pem"
    ca.issue_cert("localhost", DEST).private_key_and_cert_chain_pem.write_to_path(str(pem))
    listener = socket.socket()
    listener.bind((DEST, 0))
    listener.listen(64)  # before hypercorn starts: early connects wait in the queue
    address: tuple[str, int] = listener.getsockname()
    config = Config()
    config.bind = [f"fd://{listener.detach()}"]  # hypercorn owns the socket from here
    config.certfile = config.keyfile = str(pem)
    config.graceful_timeout = 1.0
    stop = asyncio.Event()
    server = asyncio.create_task(serve(asgi, config, shutdown_trigger=stop.wait))
    yield address
    stop.set()
    async with asyncio.timeout(10):
        await server


def client(pool: bindpool.Pool, **kwargs: Any) -> httpx.AsyncClient:
    timeout = kwargs.pop("timeout", httpx.Timeout(10.0))
    return httpx.AsyncClient(
        transport=bindpool.httpx.AsyncHTTPTransport(pool, **kwargs), timeout=timeout
    )


# -- HTTP/1.1 and HTTP/2 -----------------------------------------------------------------------


async def test_keep_alive_one_lease_serves_several_requests(
    pool: bindpool.Pool, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    async with client(pool) as http:
        responses = [await http.get(f"http://{DEST}:{http_server[1]}/{n}") for n in range(5)]
        assert pool.statistics().in_use == 1
        stream = responses[-1].extensions["network_stream"]
        source, port = stream.get_extra_info("client_addr")
        assert source == SOURCE
        assert stream.get_extra_info("server_addr") == http_server
        assert stream.get_extra_info("ssl_object") is None
        assert stream.get_extra_info("is_readable") is False  # idle, reusable
        assert stream.get_extra_info("socket").fileno() >= 0
        assert stream.get_extra_info("no such key") is None
    assert {r.text for r in responses} == {str(port)}
    assert {r.http_version for r in responses} == {"HTTP/1.1"}
    assert pool.statistics().connects == 1
    await all_released(pool, released, 1)
    assert released[0] == bindpool.Lease(SOURCE, port, http_server)


async def test_connection_closed_by_the_server_is_replaced(
    pool: bindpool.Pool, servers: Servers, released: list[bindpool.Lease]
) -> None:
    async def once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        await respond(writer, b"once")  # then the tracked handler closes the connection

    _, port = await servers.start(once)
    async with client(pool) as http:
        first = await http.get(f"http://{DEST}:{port}/")
        await until(lambda: len(released) == 1)  # the client saw EOF and closed its socket
        second = await http.get(f"http://{DEST}:{port}/")  # idle one is readable: not reused
    assert (first.text, second.text) == ("once", "once")
    assert pool.statistics().connects == 2
    await all_released(pool, released, 2)


async def test_limits_cap_the_connections(
    pool: bindpool.Pool, servers: Servers, released: list[bindpool.Lease]
) -> None:
    gate = Gate(width=2)
    _, port = await servers.start(gate)
    limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
    async with client(pool, limits=limits) as http:
        responses = await asyncio.gather(*(http.get(f"http://{DEST}:{port}/{n}") for n in range(6)))
    assert [r.status_code for r in responses] == [200] * 6
    assert gate.peak == 2
    assert pool.statistics().connects == 2  # the other four requests reused them
    await all_released(pool, released, 2)


async def test_http2_over_tls(
    pool: bindpool.Pool,
    h2_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    url = f"https://{DEST}:{h2_server[1]}/"
    async with client(pool, http2=True, verify=client_tls) as http:
        first = await http.get(url)
        more = await asyncio.gather(*(http.get(url) for _ in range(4)))
        stream = first.extensions["network_stream"]
        assert stream.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        _, port = stream.get_extra_info("client_addr")
    assert first.http_version == "HTTP/2"
    assert {r.text for r in [first, *more]} == {f"2 {port}"}
    assert pool.statistics().connects == 1  # concurrent requests are streams of one connection
    await all_released(pool, released, 1)


async def test_http1_over_tls_when_http2_is_off(
    pool: bindpool.Pool,
    h2_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    async with client(pool, verify=client_tls) as http:
        response = await http.get(f"https://localhost:{h2_server[1]}/")
    assert response.http_version == "HTTP/1.1"
    assert response.text.startswith("1.1 ")
    await all_released(pool, released, 1)


async def test_socket_options_are_applied(
    pool: bindpool.Pool, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    timeval = struct.pack("ll", 5, 0)  # 5 s; no effect on a non-blocking socket
    options: list[bindpool.httpx.SocketOption] = [
        (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
        (socket.SOL_SOCKET, socket.SO_RCVTIMEO, timeval),
    ]
    async with client(pool, socket_options=options) as http:
        response = await http.get(f"http://{DEST}:{http_server[1]}/")
        sock = response.extensions["network_stream"].get_extra_info("socket")
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, len(timeval)) == timeval
    await all_released(pool, released, 1)


async def test_socket_option_failure_closes_the_socket(
    pool: bindpool.Pool, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    options = [(socket.SOL_SOCKET, 0x7FFF, 1)]  # no such option: ENOPROTOOPT
    async with client(pool, socket_options=options) as http:
        with pytest.raises(httpx.ConnectError, match="Protocol not available"):
            await http.get(f"http://{DEST}:{http_server[1]}/")
    await all_released(pool, released, 1)


async def test_httpcore_pool_with_the_backend_directly(
    pool: bindpool.Pool, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    backend = bindpool.httpx.PoolBackend(pool)
    async with httpcore.AsyncConnectionPool(network_backend=backend) as core:
        response = await core.request("GET", f"http://{DEST}:{http_server[1]}/")
    assert response.status == 200
    await all_released(pool, released, 1)


# -- proxies -------------------------------------------------------------------------------------


async def test_http_proxy_is_reached_through_the_pool(
    pool: bindpool.Pool, servers: Servers, released: list[bindpool.Lease]
) -> None:
    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (head := await read_head(reader)) is not None:
            await respond(writer, head.split(b"\r\n")[0])  # the request line it got

    address = await servers.start(proxy)
    async with client(pool, proxy=f"http://{DEST}:{address[1]}") as http:
        response = await http.get("http://example.invalid/path")
    assert response.text == "GET http://example.invalid/path HTTP/1.1"
    await all_released(pool, released, 1)
    assert released[0].destination == address


async def test_https_through_a_connect_tunnel(
    pool: bindpool.Pool,
    servers: Servers,
    h2_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def tunnel(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await read_head(reader)
        assert head is not None
        method, target, _ = head.split(b"\r\n")[0].split(b" ")
        assert method == b"CONNECT"
        host, port = target.rsplit(b":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host.decode(), int(port))
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    proxy = await servers.start(tunnel)
    async with client(
        pool, proxy=f"http://{DEST}:{proxy[1]}", http2=True, verify=client_tls
    ) as http:
        response = await http.get(f"https://{DEST}:{h2_server[1]}/")
    assert response.http_version == "HTTP/2"
    await all_released(pool, released, 1)
    assert released[0].destination == proxy


# -- failures: each gives its lease back once ----------------------------------------------------


async def test_refused_is_a_connect_error(
    pool: bindpool.Pool, closed_port: int, released: list[bindpool.Lease]
) -> None:
    async with client(pool) as http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(f"http://{DEST}:{closed_port}/")
    assert any(isinstance(c, ConnectionRefusedError) for c in causes(caught.value))
    assert pool.statistics().connects == 0
    await all_released(pool, released, 1)


async def test_retries_try_again_through_the_pool(
    pool: bindpool.Pool, closed_port: int, released: list[bindpool.Lease]
) -> None:
    async with client(pool, retries=1) as http:  # httpcore sleeps 0 s before the first retry
        with pytest.raises(httpx.ConnectError):
            await http.get(f"http://{DEST}:{closed_port}/")
    await all_released(pool, released, 2)


async def test_connect_timeout(
    pool: bindpool.Pool, blackhole: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    async with client(pool, timeout=httpx.Timeout(10.0, connect=0.2)) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"http://{DEST}:{blackhole[1]}/")
    await all_released(pool, released, 1)


async def test_tls_handshake_timeout(
    pool: bindpool.Pool,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    [(_, port)] = await sinks(1)  # accepts TCP, never answers the handshake
    timeout = httpx.Timeout(10.0, connect=0.2)
    async with client(pool, verify=client_tls, timeout=timeout) as http:
        with pytest.raises(httpx.ConnectTimeout):
            await http.get(f"https://{DEST}:{port}/")
    await all_released(pool, released, 1)


async def test_read_timeout(
    pool: bindpool.Pool,
    sinks: Callable[[int], Awaitable[list[tuple[str, int]]]],
    released: list[bindpool.Lease],
) -> None:
    [(_, port)] = await sinks(1)  # reads the request, never answers
    async with client(pool, timeout=httpx.Timeout(10.0, read=0.2)) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.get(f"http://{DEST}:{port}/")
    await all_released(pool, released, 1)


async def test_reset_by_the_server_is_a_read_error(
    pool: bindpool.Pool, servers: Servers, released: list[bindpool.Lease]
) -> None:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_head(reader)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()  # close with linger 0: the kernel sends RST

    _, port = await servers.start(reset)
    async with client(pool) as http:
        with pytest.raises(httpx.ReadError):
            await http.get(f"http://{DEST}:{port}/")
    await all_released(pool, released, 1)


@pytest.mark.parametrize("why", ["untrusted", "wrong name"])
async def test_tls_failure_is_a_connect_error(
    why: str,
    pool: bindpool.Pool,
    tls_echo_server: tuple[str, int],
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    url = f"https://{DEST}:{tls_echo_server[1]}/"
    if why == "untrusted":  # httpx's default trust store has never heard of the test CA
        http, extensions = client(pool), {}
    else:  # trusted CA, but the certificate is for localhost and 127.0.0.1 only
        http, extensions = client(pool, verify=client_tls), {"sni_hostname": "wrong.example"}
    async with http:
        with pytest.raises(httpx.ConnectError) as caught:
            await http.get(url, extensions=extensions)
    assert any(isinstance(c, ssl.SSLCertVerificationError) for c in causes(caught.value))
    await all_released(pool, released, 1)


async def test_cancelled_while_connecting(
    pool: bindpool.Pool, blackhole: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    async with client(pool) as http:
        request = asyncio.create_task(http.get(f"http://{DEST}:{blackhole[1]}/"))
        await until(lambda: pool.statistics().in_use == 1)  # the claim, mid-connect
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await all_released(pool, released, 1)


async def test_cancelled_during_the_tls_handshake(
    pool: bindpool.Pool,
    servers: Servers,
    client_tls: ssl.SSLContext,
    released: list[bindpool.Lease],
) -> None:
    hello = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)  # the ClientHello arrived: the client waits in start_tls
        hello.set()
        await sink(reader, writer)

    _, port = await servers.start(silent)
    async with client(pool, verify=client_tls) as http:
        request = asyncio.create_task(http.get(f"https://{DEST}:{port}/"))
        async with asyncio.timeout(5):
            await hello.wait()
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
    await all_released(pool, released, 1)


async def test_exhausted_pool_is_a_connect_error_caused_by_ports_exhausted(
    make_pool: PoolMaker, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    pool = make_pool(1, on_release=released.append)
    held = await pool.connect(*http_server)  # the only port, for this destination
    try:
        async with client(pool) as http:
            with pytest.raises(httpx.ConnectError) as caught:
                await http.get(f"http://{DEST}:{http_server[1]}/")
    finally:
        held.close()
    exhausted = [c for c in causes(caught.value) if isinstance(c, bindpool.PortsExhausted)]
    assert len(exhausted) == 1
    assert exhausted[0].destination == http_server
    assert "no free source port" in str(caught.value)
    assert pool.statistics().exhausted == 1
    await all_released(pool, released, 1)  # the held socket; exhaustion took no lease


async def test_closed_pool_raises_pool_closed(
    pool: bindpool.Pool, http_server: tuple[str, int], released: list[bindpool.Lease]
) -> None:
    await pool.aclose()
    async with client(pool) as http:
        with pytest.raises(bindpool.PoolClosed):
            await http.get(f"http://{DEST}:{http_server[1]}/")
    await all_released(pool, released, 0)


# -- what is refused -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argument", "value"), [("local_address", "127.0.0.3"), ("uds", "/tmp/http.sock")]
)
def test_local_address_and_uds_are_refused(pool: bindpool.Pool, argument: str, value: str) -> None:
    kwargs: dict[str, Any] = {argument: value}
    with pytest.raises(bindpool.ConfigurationError, match="the pool's sources replace it"):
        bindpool.httpx.AsyncHTTPTransport(pool, **kwargs)


async def test_backend_refuses_local_address_and_unix_sockets(pool: bindpool.Pool) -> None:
    backend = bindpool.httpx.PoolBackend(pool)
    with pytest.raises(bindpool.ConfigurationError, match="the pool's sources replace it"):
        await backend.connect_tcp(DEST, 80, local_address="127.0.0.3")
    with pytest.raises(bindpool.ConfigurationError, match=r"uds=.*the pool's sources replace it"):
        await backend.connect_unix_socket("/tmp/http.sock")
    await backend.sleep(0)
    assert pool.statistics().connects == 0


def test_pool_must_be_a_pool() -> None:
    with pytest.raises(bindpool.ConfigurationError, match=r"bindpool\.Pool"):
        bindpool.httpx.AsyncHTTPTransport(object())  # type: ignore[arg-type]


def test_other_async_libraries_are_refused(pool: bindpool.Pool) -> None:
    """Driven by hand, as another library's loop would: no asyncio loop is running."""
    backend = bindpool.httpx.PoolBackend(pool)
    connecting = backend.connect_tcp(DEST, 80)
    with pytest.raises(bindpool.ConfigurationError, match="needs asyncio"):
        connecting.send(None)
    assert pool.statistics().connects == 0


def test_socks_without_socksio_names_the_package(pool: bindpool.Pool) -> None:
    if importlib.util.find_spec("socksio") is not None:
        pytest.skip("socksio is installed: the message only shows without it")
    with pytest.raises(ImportError, match="socksio"):
        bindpool.httpx.AsyncHTTPTransport(pool, proxy="socks5://127.0.0.1:1080")


def test_transport_is_an_httpx_transport(pool: bindpool.Pool) -> None:
    transport = bindpool.httpx.AsyncHTTPTransport(pool)
    assert isinstance(transport, httpx.AsyncHTTPTransport)
    assert transport.pool is pool
    assert "bindpool.Pool" in repr(transport)


async def test_a_dead_first_address_is_raced_past(
    pool: bindpool.Pool,
    blackhole: tuple[str, int],
    http_server: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    """A name whose first address drops SYNs: answered through the second well inside
    httpx's connect timeout, as httpx's own backend (anyio) races it. Tried one after the
    other, the request would end in ConnectTimeout."""
    names = {"dead-first.test": [blackhole, http_server]}
    with Names(asyncio.get_running_loop(), names):
        async with client(pool, timeout=httpx.Timeout(5.0)) as http:
            response = await http.get(f"http://dead-first.test:{http_server[1]}/")
            stream = response.extensions["network_stream"]
            assert stream.get_extra_info("server_addr") == http_server
            # The loser's lease is back before the request went out, exactly once.
            assert [lease.destination for lease in released] == [blackhole]
            assert pool.statistics().in_use == 1
    assert response.status_code == 200
    await all_released(pool, released, 2)


def test_race_delay_is_anyio_default() -> None:
    default = inspect.signature(anyio.connect_tcp).parameters["happy_eyeballs_delay"].default
    assert default == bindpool.httpx.HAPPY_EYEBALLS_DELAY


def test_default_limits_are_httpx_defaults() -> None:
    default = inspect.signature(httpx.AsyncHTTPTransport).parameters["limits"].default
    assert default == bindpool.httpx.DEFAULT_LIMITS


# -- imports -------------------------------------------------------------------------------------


def run_python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
        check=True,
    )
    return result.stdout


def test_import_without_httpx_names_the_extra() -> None:
    out = run_python(
        "import sys\n"
        "sys.modules['httpx'] = None\n"
        "try:\n"
        "    import bindpool.httpx\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
        "    print(isinstance(exc.__cause__, ImportError))\n"
    )
    assert out.splitlines() == [
        "bindpool.httpx needs httpx: pip install 'bindpool[httpx]'",
        "True",
    ]


def test_bindpool_does_not_import_httpx() -> None:
    out = run_python(
        "import sys, bindpool\nprint(sorted({'httpx', 'httpcore'} & set(sys.modules)))"
    )
    assert out.strip() == "[]"
