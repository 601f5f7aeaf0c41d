"""Happy eyeballs through the pool: a host whose first address is dead, raced on real sockets.

"Dead" is the blackhole: a listener whose accept queue is full, so SYNs to it are dropped
and a connect hangs (for minutes, the kernel's SYN retries). A made-up name resolves to
[dead, live] (`tests.fakes.Names` answers for the loop's getaddrinfo). Raced, the call
connects through the live address long before its `timeout=5`; tried one after the other,
it cannot. Every attempt holds a lease: the losers' go back exactly once, before the call
returns, also when the caller is cancelled mid-race.

`race()` and `order()` themselves are also tested with plain coroutines: two winners in
one loop turn, errors in order, cancellation while the losers are stopping.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio import base_events
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import bindpool
from bindpool import _race
from tests.conftest import DEST, SOURCE, PoolMaker
from tests.fakes import Names, until

DELAY = 0.05  # between attempts; far below TIMEOUT, so only a race can make it in time
TIMEOUT = 5.0  # a hang guard: the dead address alone would hang for minutes
NAME = "dead-first.test"


@pytest.fixture
def blackholes() -> Iterator[Callable[[], tuple[str, int]]]:
    """More addresses whose connects hang (as conftest's `blackhole`)."""
    opened: list[socket.socket] = []

    def make() -> tuple[str, int]:
        listener = socket.socket()
        listener.bind((DEST, 0))
        listener.listen(0)
        opened.append(listener)
        opened.append(socket.create_connection(listener.getsockname()))  # the one place
        return listener.getsockname()  # type: ignore[no-any-return]

    yield make
    for sock in reversed(opened):
        sock.close()


# -- the three calls, each reduced to "connect, then tell me the peer" ------------------------


class _Peer(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport


async def _via_connect(pool: bindpool.Pool, host: str, port: int, **kwargs: Any) -> Any:
    sock = await pool.connect(host, port, **kwargs)
    peer = sock.getpeername()
    sock.close()
    return peer


async def _via_open_connection(pool: bindpool.Pool, host: str, port: int, **kwargs: Any) -> Any:
    reader, writer = await pool.open_connection(host, port, **kwargs)
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"  # the echo server answers: it is live
    peer = writer.get_extra_info("peername")
    writer.close()
    await writer.wait_closed()
    return peer


async def _via_create_connection(pool: bindpool.Pool, host: str, port: int, **kwargs: Any) -> Any:
    transport, protocol = await pool.create_connection(_Peer, host, port, **kwargs)
    assert protocol.transport is transport
    peer = transport.get_extra_info("peername")
    transport.close()
    return peer


CALLS: dict[str, Callable[..., Coroutine[Any, Any, Any]]] = {
    "connect": _via_connect,
    "open_connection": _via_open_connection,
    "create_connection": _via_create_connection,
}


@pytest.fixture(params=list(CALLS))
def call(request: pytest.FixtureRequest) -> Callable[..., Coroutine[Any, Any, Any]]:
    return CALLS[request.param]


# -- a dead first address --------------------------------------------------------------------


async def test_race_connects_through_the_live_address(
    call: Callable[..., Coroutine[Any, Any, Any]],
    make_pool: PoolMaker,
    blackhole: tuple[str, int],
    echo_server: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    pool = make_pool(on_release=released.append)
    with Names(asyncio.get_running_loop(), {NAME: [blackhole, echo_server]}):
        peer = await call(pool, NAME, echo_server[1], timeout=TIMEOUT, happy_eyeballs_delay=DELAY)
    assert peer[:2] == echo_server  # connected via the live address
    await until(lambda: pool.statistics().in_use == 0)
    # The dead address's attempt was cancelled and its lease given back once; the live
    # connection's went back when it closed.
    assert sorted(lease.destination for lease in released) == sorted([blackhole, echo_server])
    assert pool.statistics().connects == 1


async def test_without_a_delay_the_dead_address_holds_everything_up(
    make_pool: PoolMaker,
    blackhole: tuple[str, int],
    echo_server: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    """The default stays asyncio's: one address after another, so the timeout comes first."""
    pool = make_pool(on_release=released.append)
    names = Names(asyncio.get_running_loop(), {NAME: [blackhole, echo_server]})
    with names, pytest.raises(TimeoutError):
        await pool.connect(NAME, echo_server[1], timeout=0.2)
    assert [lease.destination for lease in released] == [blackhole]
    assert pool.statistics().in_use == 0


async def test_a_refused_address_starts_the_next_at_once(
    make_pool: PoolMaker,
    closed_port: int,
    echo_server: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    """A failure does not wait for the delay: an hour's delay still connects."""
    pool = make_pool(on_release=released.append)
    with Names(asyncio.get_running_loop(), {NAME: [(DEST, closed_port), echo_server]}):
        sock = await pool.connect(NAME, echo_server[1], timeout=TIMEOUT, happy_eyeballs_delay=3600)
    assert sock.getpeername() == echo_server
    assert [lease.destination for lease in released] == [(DEST, closed_port)]
    sock.close()


@pytest.mark.parametrize("how", ["cancelled", "timeout"])
async def test_ending_a_race_midway_releases_every_lease(
    how: str,
    call: Callable[..., Coroutine[Any, Any, Any]],
    make_pool: PoolMaker,
    blackholes: Callable[[], tuple[str, int]],
    released: list[bindpool.Lease],
) -> None:
    dead = [blackholes() for _ in range(3)]
    pool = make_pool(on_release=released.append)
    with Names(asyncio.get_running_loop(), {NAME: dead}):
        if how == "cancelled":
            task = asyncio.create_task(call(pool, NAME, 80, happy_eyeballs_delay=0.01))
            await until(lambda: pool.statistics().in_use == 3)  # every attempt under way
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(TimeoutError):
                await call(pool, NAME, 80, timeout=0.2, happy_eyeballs_delay=0.01)
    # Back before the call ended, not later: no waiting here.
    assert pool.statistics().in_use == 0
    assert sorted(lease.destination for lease in released) == sorted(dead)


async def test_every_address_failing_is_one_error_as_asyncio_words_it(
    make_pool: PoolMaker, released: list[bindpool.Lease]
) -> None:
    refused4, refused6 = _closed_port(socket.AF_INET, DEST), _closed_port(socket.AF_INET6, "::1")
    names = {NAME: [(DEST, refused4), ("::1", refused6, 0, 0)]}
    pool = make_pool(sources=(SOURCE, "::1"), on_release=released.append)
    loop = asyncio.get_running_loop()
    with Names(loop, names), pytest.raises(OSError) as raised:
        await pool.connect(NAME, 80, happy_eyeballs_delay=DELAY)
    # The shared errno is kept, as aiohappyeyeballs keeps it (asyncio drops it).
    assert str(raised.value) == (
        f"[Errno 111] Multiple exceptions: [Errno 111] Connect call failed ('{DEST}', "
        f"{refused4}), [Errno 111] Connect call failed ('::1', {refused6}, 0, 0)"
    )
    assert raised.value.errno == 111
    assert len(released) == 2
    if type(loop).__module__.startswith("asyncio"):  # uvloop words its own differently
        with Names(loop, names), pytest.raises(OSError) as stock:
            await loop.create_connection(asyncio.Protocol, NAME, 80, happy_eyeballs_delay=DELAY)
        assert str(raised.value) == f"[Errno 111] {stock.value}"


async def test_an_ipv6_literal_is_worded_as_asyncio_words_it(
    make_pool: PoolMaker, released: list[bindpool.Lease]
) -> None:
    port = _closed_port(socket.AF_INET6, "::1")
    pool = make_pool(sources=("::1",), on_release=released.append)
    with pytest.raises(ConnectionRefusedError) as raised:
        await pool.connect("::1", port)
    assert str(raised.value) == f"[Errno 111] Connect call failed ('::1', {port}, 0, 0)"
    loop = asyncio.get_running_loop()
    if type(loop).__module__.startswith("asyncio"):
        with pytest.raises(ConnectionRefusedError) as stock:
            await asyncio.open_connection("::1", port)
        assert str(stock.value) == str(raised.value)


def _closed_port(family: int, ip: str) -> int:
    with socket.socket(family) as probe:
        probe.bind((ip, 0))
        return int(probe.getsockname()[1])


async def test_aclose_mid_race_lets_the_call_finish(
    make_pool: PoolMaker,
    blackhole: tuple[str, int],
    echo_server: tuple[str, int],
    released: list[bindpool.Lease],
) -> None:
    """As for any connect in flight: `aclose()` refuses new calls, not attempts under way."""
    pool = make_pool(on_release=released.append)
    with Names(asyncio.get_running_loop(), {NAME: [blackhole, echo_server]}):
        task = asyncio.create_task(pool.connect(NAME, 80, happy_eyeballs_delay=0.1))
        await until(lambda: pool.statistics().in_use == 1)  # the dead address, alone
        await pool.aclose()
        sock = await task
    assert sock.getpeername() == echo_server
    assert [lease.destination for lease in released] == [blackhole]
    sock.close()
    with pytest.raises(bindpool.PoolClosed):
        await pool.connect(NAME, 80, happy_eyeballs_delay=0.1)


# -- bad arguments -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"happy_eyeballs_delay": -1}, "happy_eyeballs_delay must be >= 0"),
        ({"happy_eyeballs_delay": float("nan")}, "happy_eyeballs_delay must be >= 0"),
        ({"happy_eyeballs_delay": "0.25"}, "happy_eyeballs_delay must be a number"),
        ({"happy_eyeballs_delay": True}, "happy_eyeballs_delay must be a number"),
        ({"interleave": -1}, "interleave must be an int >= 0"),
        ({"interleave": 1.0}, "interleave must be an int >= 0"),
        ({"interleave": True}, "interleave must be an int >= 0"),
        ({"interleave": "1"}, "interleave must be an int >= 0"),
    ],
)
async def test_bad_race_arguments(
    arguments: dict[str, Any],
    message: str,
    call: Callable[..., Coroutine[Any, Any, Any]],
    make_pool: PoolMaker,
    released: list[bindpool.Lease],
) -> None:
    pool = make_pool(on_release=released.append)
    with pytest.raises(bindpool.ConfigurationError, match=message):
        await call(pool, DEST, 80, **arguments)
    assert released == []
    assert pool.statistics().in_use == 0


# -- order(): asyncio's interleaving -----------------------------------------------------------


@given(
    families=st.lists(st.sampled_from([socket.AF_INET, socket.AF_INET6]), min_size=1, max_size=8),
    interleave=st.integers(0, 4),
)
def test_order_interleaves_as_asyncio(families: list[int], interleave: int) -> None:
    infos = [
        (family, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (str(index), 80))
        for index, family in enumerate(families)
    ]
    ours = _race.order(infos, lambda info: info[0], _race.Eyeballs(None, interleave))
    stock = base_events._interleave_addrinfos(infos, interleave) if interleave else infos  # type: ignore[attr-defined]
    assert ours == stock


def test_order_with_a_delay_defaults_to_interleave_1() -> None:
    items = [(socket.AF_INET6, "a"), (socket.AF_INET6, "b"), (socket.AF_INET, "c")]
    order = _race.order(items, lambda item: item[0], _race.Eyeballs(0.25, None))
    assert [name for _, name in order] == ["a", "c", "b"]
    kept = _race.order(items, lambda item: item[0], _race.Eyeballs(None, None))
    assert kept == items


# -- race(): plain coroutines ------------------------------------------------------------------


class Attempts:
    """Coroutine functions for `race()` that record what happened to each."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.cancelled: list[int] = []
        self.discarded: list[str] = []

    def make(self, index: int, body: Callable[[], Awaitable[str]]) -> Callable[[], Awaitable[str]]:
        async def attempt() -> str:
            self.started.append(index)
            try:
                return await body()
            except asyncio.CancelledError:
                self.cancelled.append(index)
                raise

        return attempt


def _after(event: asyncio.Event, result: str | BaseException) -> Callable[[], Awaitable[str]]:
    async def body() -> str:
        await event.wait()
        if isinstance(result, BaseException):
            raise result
        return result

    return body


async def test_two_winners_in_one_turn_the_second_is_discarded() -> None:
    """3.11's staggered_race asserts here and loses the second result."""
    go, record = asyncio.Event(), Attempts()
    attempts = [record.make(index, _after(go, name)) for index, name in enumerate("ab")]
    task = asyncio.create_task(_race.race(attempts, 0, record.discarded.append))
    await until(lambda: len(record.started) == 2)
    go.set()
    assert await task == "a"  # the earlier address wins a tie
    assert record.discarded == ["b"]


async def test_errors_come_in_the_order_of_the_addresses() -> None:
    first_fails = asyncio.Event()
    record = Attempts()

    async def second() -> str:
        first_fails.set()
        raise ConnectionRefusedError(111, "second")

    attempts = [
        record.make(0, _after(first_fails, ConnectionResetError(104, "first"))),
        record.make(1, second),
    ]
    with pytest.raises(OSError) as raised:
        await _race.race(attempts, 0, record.discarded.append)
    assert str(raised.value) == "Multiple exceptions: [Errno 104] first, [Errno 111] second"


async def test_a_non_oserror_ends_the_race_and_cancels_the_rest() -> None:
    never, record = asyncio.Event(), Attempts()

    async def misuse() -> str:
        raise bindpool.PoolClosed("closed")

    attempts = [record.make(0, _after(never, "x")), record.make(1, misuse)]
    with pytest.raises(bindpool.PoolClosed):
        await _race.race(attempts, 0, record.discarded.append)
    assert record.cancelled == [0]


async def test_the_delay_staggers_the_starts() -> None:
    """With a long delay and no failure, only the first attempt has started; the caller's
    cancellation reaches it, and the others never start."""
    never, record = asyncio.Event(), Attempts()
    attempts = [record.make(index, _after(never, "x")) for index in range(3)]
    task = asyncio.create_task(_race.race(attempts, 3600, record.discarded.append))
    await until(lambda: record.started == [0])
    await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert (record.started, record.cancelled) == ([0], [0])


async def test_cancelled_while_the_losers_stop_closes_the_winner_too() -> None:
    """A loser that takes a while to stop (and then connects anyway) and a caller cancelled
    meanwhile: the race still waits for it, discards both, then raises the cancellation."""
    go, record = asyncio.Event(), Attempts()
    stopping = asyncio.Event()

    async def stubborn() -> str:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            stopping.set()
            await asyncio.sleep(0.05)  # the cancellation arrives in here
        return "late"

    attempts = [record.make(0, _after(go, "winner")), record.make(1, stubborn)]
    task = asyncio.create_task(_race.race(attempts, 0, record.discarded.append))
    await until(lambda: len(record.started) == 2)
    go.set()
    await stopping.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sorted(record.discarded) == ["late", "winner"]


def test_eyeballs_default_is_none() -> None:
    assert _race.check(None, None) is None
    assert _race.check(0.25, None) == _race.Eyeballs(0.25, None)
    assert _race.check(None, 2) == _race.Eyeballs(None, 2)
