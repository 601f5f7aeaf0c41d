"""Fixtures for every test: both event loops, leak checks, loopback peers.

- Every async test runs twice, on asyncio's default loop and on uvloop (pytest-asyncio's
  `pytest_asyncio_loop_factories` hook).
- Autouse checks fail a test that leaves a lease out (any Pool it made still has `in_use`
  after a garbage collection) or a task running on its loop.
- Peers are on loopback: listeners that never accept (they hold connections in their accept
  queue, costing the test no file descriptors), a blackhole whose queue is full (connects
  hang until a timeout or cancellation), echo servers, and TLS servers with a trustme CA.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import random
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Literal

import pytest
import pytest_asyncio
import trustme
import uvloop

import bindpool
from bindpool import _host
from bindpool._pool import Pool

SOURCE = "127.0.0.2"
DEST = "127.0.0.1"


def pytest_asyncio_loop_factories(
    config: pytest.Config, item: pytest.Item
) -> Mapping[str, Callable[[], asyncio.AbstractEventLoop]]:
    return {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


# -- leak checks -----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def pools(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[Pool]]:
    """Every Pool the test makes; after it, each must have no live lease."""
    made: list[Pool] = []
    original = Pool.__init__

    @functools.wraps(original)
    def recording_init(self: Pool, *args: Any, **kwargs: Any) -> None:
        original(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(Pool, "__init__", recording_init)
    yield made
    gc.collect()  # sockets the test dropped are finalized now, and give their leases back
    leaked = {repr(pool): pool.statistics().in_use for pool in made}
    assert not any(leaked.values()), f"leases still out after the test: {leaked}"


@pytest_asyncio.fixture(autouse=True)
async def no_stray_tasks() -> AsyncIterator[None]:
    """Fail a test that leaves tasks running on its loop."""
    before = asyncio.all_tasks()
    yield
    for _ in range(3):  # let tasks finishing on their own (closing transports) finish
        await asyncio.sleep(0)
    stray = asyncio.all_tasks() - before - {asyncio.current_task()}
    for task in stray:
        task.cancel()
    assert not stray, f"tasks left running: {stray}"


# -- ports and peers ---------------------------------------------------------------------------


_handed_out: set[int] = set()  # blocks never repeat within one test run


def _free(port: int, address: str) -> bool:
    """Nothing holds `port` on `address`, not even TIME_WAIT: an exclusive bind works.

    A socket that was only bound, never connected, leaves nothing behind when closed."""
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def _block(size: int, within: range, address: str) -> range:
    for _ in range(1000):
        start = random.randrange(within.start, within.stop - size)
        candidate = range(start, start + size)
        if not _handed_out.intersection(candidate) and all(
            _free(port, address) for port in candidate
        ):
            _handed_out.update(candidate)
            return candidate
    raise RuntimeError(f"no free block of {size} ports in {within}")


@pytest.fixture
def port_block() -> Callable[[int], range]:
    """A block of source ports below the ephemeral range, free now and new to this run.

    Below 32768 the kernel's own automatic picks never land, so the test controls the block.
    """
    return lambda size: _block(size, range(10000, 32000), SOURCE)


class PoolMaker:
    """Makes Pools of one strategy, each on a fresh block of ports that suits it."""

    def __init__(self, strategy: Literal["table", "kernel"]) -> None:
        self.strategy = strategy

    def block(self, size: int) -> range:
        if self.strategy == "table":
            return _block(size, range(10000, 32000), SOURCE)
        # The kernel picks only inside the ephemeral range, and skips every port bound
        # explicitly on any address: the block must be free on all of them.
        return _block(size, _host.ephemeral_range(), "0.0.0.0")

    def __call__(self, size: int = 8, sources: Sequence[str] = (SOURCE,), **kwargs: Any) -> Pool:
        self.ports = self.block(size)
        return bindpool.Pool(list(sources), ports=self.ports, strategy=self.strategy, **kwargs)


@pytest.fixture(params=["table", "kernel"])
def make_pool(request: pytest.FixtureRequest) -> PoolMaker:
    """Pools of each strategy in turn: the same test runs on both."""
    return PoolMaker(request.param)


@pytest.fixture
def listeners() -> Iterator[Callable[[int], list[tuple[str, int]]]]:
    """Listeners on 127.0.0.1 that never accept: connections wait in their queue."""
    opened: list[socket.socket] = []

    def make(count: int, backlog: int = 4096) -> list[tuple[str, int]]:
        addresses = []
        for _ in range(count):
            listener = socket.socket()
            listener.bind((DEST, 0))
            listener.listen(backlog)
            opened.append(listener)
            addresses.append(listener.getsockname())
        return addresses

    yield make
    for listener in opened:
        listener.close()


@pytest.fixture
def blackhole() -> Iterator[tuple[str, int]]:
    """An address whose connects hang: its accept queue (backlog 0 = one slot) is full."""
    listener = socket.socket()
    listener.bind((DEST, 0))
    listener.listen(0)
    filler = socket.create_connection(listener.getsockname())
    yield listener.getsockname()
    filler.close()
    listener.close()


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 with nobody listening: connects are refused."""
    with socket.socket() as probe:
        probe.bind((DEST, 0))
        return int(probe.getsockname()[1])


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Send back what arrives until EOF."""
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read until EOF. The server closes after the client: the client ends in TIME_WAIT,
    which an explicitly bound socket may reuse at once (TCP timestamps, FIELD-NOTES.md)."""
    while await reader.read(65536):
        pass


class Servers:
    """asyncio servers on 127.0.0.1 whose handler tasks are tracked, so teardown can close
    every server-side connection and wait for it (3.11's wait_closed() does not)."""

    def __init__(self) -> None:
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(
        self, handler: Handler, tls: ssl.SSLContext | None = None, host: str = DEST
    ) -> tuple[str, int]:
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.current_task()
            assert task is not None
            self._tasks.add(task)
            self._writers.add(writer)
            try:
                await handler(reader, writer)
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                writer.close()
                self._writers.discard(writer)
                self._tasks.discard(task)

        server = await asyncio.start_server(serve, host, 0, ssl=tls, backlog=4096)
        self._servers.append(server)
        ip, port = server.sockets[0].getsockname()[:2]
        return ip, port

    async def close(self) -> None:
        for server in self._servers:
            server.close()
        for _ in range(3):  # handlers of connections accepted just now start, and register
            await asyncio.sleep(0)
        for writer in list(self._writers):
            writer.close()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for server in self._servers:
            await server.wait_closed()


@pytest_asyncio.fixture
async def servers() -> AsyncIterator[Servers]:
    peers = Servers()
    yield peers
    await peers.close()


@pytest_asyncio.fixture
async def sinks(servers: Servers) -> Callable[[int], Awaitable[list[tuple[str, int]]]]:
    async def make(count: int) -> list[tuple[str, int]]:
        return [await servers.start(sink) for _ in range(count)]

    return make


@pytest_asyncio.fixture
async def echo_server(servers: Servers) -> tuple[str, int]:
    return await servers.start(echo)


@pytest.fixture(scope="session")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def client_tls(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


@pytest_asyncio.fixture
async def tls_echo_server(ca: trustme.CA, servers: Servers) -> tuple[str, int]:
    """An echo server with a certificate for "localhost" and 127.0.0.1."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", DEST).configure_cert(context)
    return await servers.start(echo, tls=context)


@pytest.fixture
def released() -> list[bindpool.Lease]:
    """Collects the leases an `on_release` hook hears of."""
    return []
