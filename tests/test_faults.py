"""The fault suite: random sequences of connections and faults, checked after every step.

Hypothesis draws a sequence of steps; each runs on real loopback connections through one
pool: opens that are kept, closes, sockets dropped and collected, and faults injected at
every point a connection can fail: cancellation while connecting and during the TLS
handshake, a timeout against a full accept queue, a refused port, a peer reset, a server
closing first, a failed TLS handshake, `aclose()` with connects in flight, and happy
eyeballs: a race won past a dead address, and a race cancelled with one or two attempts
under way (a made-up name, answered by `tests.fakes.Names`). After every step:

- no two live connections share a 4-tuple;
- every lease that ended was released exactly once (`on_release` calls == leases ended),
  and no live one was;
- `statistics()` agrees with the live connections (in use, footprint, connects).

Every combination of event loop (asyncio, uvloop) and strategy (table, kernel) runs; each
example runs in its own event loop, so hypothesis can shrink a failure to a short sequence.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import ssl
import struct
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
import trustme
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import bindpool
from tests.conftest import DEST, PoolMaker, Servers, echo, sink
from tests.fakes import Names, until

STEP_LIMIT = 5.0  # seconds any one step may take: a hang guard, not a speed claim
SETTLE = 1.0  # seconds for releases the loop makes after a step (they take milliseconds)

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@dataclass
class Live:
    """A connection the test keeps: a raw socket or a stream writer."""

    port: int
    four_tuple: tuple[Any, Any]
    sock: socket.socket | None = None
    writer: asyncio.StreamWriter | None = None

    @classmethod
    def of(cls, sock: socket.socket) -> Live:
        local = sock.getsockname()
        return cls(local[1], (local, sock.getpeername()), sock)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        if self.writer is not None:
            self.writer.close()


@dataclass
class World:
    """The pool under test, its peers, and what the test expects of it."""

    pool: bindpool.Pool
    servers: Servers
    sink: tuple[str, int]
    echo: tuple[str, int]
    tls: tuple[str, int]
    resetter: tuple[str, int]
    hanger_up: tuple[str, int]
    blackhole: tuple[str, int]
    blackhole2: tuple[str, int]
    refused: int
    client_tls: ssl.SSLContext
    released: list[bindpool.Lease] = field(default_factory=list)
    live: list[Live] = field(default_factory=list)
    ended: int = 0  # leases that ended, so far
    connects: int = 0  # connections opened, so far
    closed: bool = False

    async def check(self) -> None:
        """The invariants, once the loop has finished what the step set going."""
        with contextlib.suppress(TimeoutError):  # what is still wrong then fails below
            await until(lambda: self.pool.statistics().in_use == len(self.live), SETTLE)
            await until(lambda: len(self.released) >= self.ended, SETTLE)
        assert len(self.released) == self.ended, "a lease was released twice, or too soon"
        tuples = [live.four_tuple for live in self.live]
        assert len(set(tuples)) == len(tuples), f"duplicate live 4-tuple in {tuples}"
        stats = self.pool.statistics()
        assert stats.in_use == len(self.live)
        assert stats.footprint == len({live.port for live in self.live})
        assert stats.connects == self.connects


# -- the steps ---------------------------------------------------------------------------------


async def open_socket(world: World, _: int) -> None:
    if world.closed:
        with pytest.raises(bindpool.PoolClosed):
            await world.pool.connect(*world.sink)
        return
    world.live.append(Live.of(await world.pool.connect(*world.sink)))
    world.connects += 1


async def open_stream(world: World, _: int) -> None:
    if world.closed:
        with pytest.raises(bindpool.PoolClosed):
            await world.pool.open_connection(*world.echo)
        return
    reader, writer = await world.pool.open_connection(*world.echo)
    world.connects += 1
    writer.write(b"ping")
    assert await reader.readexactly(4) == b"ping"
    local, peer = writer.get_extra_info("sockname"), writer.get_extra_info("peername")
    world.live.append(Live(local[1], (local, peer), writer=writer))


async def close_one(world: World, pick: int) -> None:
    if world.live:
        world.live.pop(pick % len(world.live)).close()
        world.ended += 1


async def drop_one(world: World, pick: int) -> None:
    """A raw socket dropped without close(): garbage collection gives the lease back."""
    socks = [live for live in world.live if live.sock is not None]
    if not socks:
        return
    with warnings.catch_warnings():  # the socket warns that it was not closed: expected
        warnings.simplefilter("ignore", ResourceWarning)
        world.live.remove(socks[pick % len(socks)])
        del socks  # the last reference, usually: finalized here, else by the collection
        gc.collect()
    world.ended += 1


async def _failing(
    world: World,
    attempt: Callable[[], Any],
    error: type[BaseException],
    connected: frozenset[int] = frozenset({0}),
) -> None:
    """A connect expected to fail: it held a lease, which must be back.

    `connected`: how many TCP connections it may have made on the way (a TLS failure
    comes after one; a cancellation may come before or after).
    """
    if world.closed:
        with pytest.raises(bindpool.PoolClosed):
            await attempt()
        return
    before = world.pool.statistics().connects
    with pytest.raises(error):
        await attempt()
    made = world.pool.statistics().connects - before
    assert made in connected
    world.connects += made
    world.ended += 1


async def refused(world: World, _: int) -> None:
    await _failing(world, lambda: world.pool.connect(DEST, world.refused), ConnectionRefusedError)


async def timeout(world: World, _: int) -> None:
    await _failing(world, lambda: world.pool.connect(*world.blackhole, timeout=0.05), TimeoutError)


async def cancel_connect(world: World, _: int) -> None:
    async def cancelled() -> None:
        task = asyncio.ensure_future(world.pool.connect(*world.blackhole))
        await asyncio.sleep(0.01)
        task.cancel()
        await task

    await _failing(world, cancelled, asyncio.CancelledError)


async def cancel_tls(world: World, _: int) -> None:
    async def cancelled() -> None:
        task = asyncio.ensure_future(
            world.pool.open_connection(*world.sink, ssl=world.client_tls, server_hostname="x")
        )
        await asyncio.sleep(0.03)  # connected, the ClientHello unanswered
        task.cancel()
        await task

    await _failing(world, cancelled, asyncio.CancelledError, frozenset({0, 1}))


async def tls_failure(world: World, _: int) -> None:
    await _failing(
        world,
        lambda: world.pool.open_connection(
            *world.tls, ssl=world.client_tls, server_hostname="wrong.example"
        ),
        ssl.SSLCertVerificationError,
        frozenset({1}),
    )


async def peer_reset(world: World, _: int) -> None:
    if world.closed:
        return
    reader, writer = await world.pool.open_connection(*world.resetter)
    world.connects += 1
    with pytest.raises(ConnectionResetError):
        await reader.read()
    writer.close()
    world.ended += 1


async def server_first(world: World, _: int) -> None:
    if world.closed:
        return
    reader, writer = await world.pool.open_connection(*world.hanger_up)
    world.connects += 1
    assert await reader.read() == b""
    writer.close()
    world.ended += 1


async def aclose_in_flight(world: World, _: int) -> None:
    """aclose() while connects are under way: they finish as they would have; new ones
    are refused."""
    if world.closed:
        return
    finishing = asyncio.ensure_future(world.pool.connect(*world.sink))
    hanging = asyncio.ensure_future(world.pool.connect(*world.blackhole, timeout=0.05))
    await asyncio.sleep(0)  # both under way
    await world.pool.aclose()
    world.closed = True
    # Nothing here may keep the socket: the TimeoutError below keeps this frame alive
    # through its traceback, and the socket, named or held as a task's result, would
    # outlive a later drop_one().
    world.live.append(Live.of(await finishing))
    del finishing
    world.connects += 1
    with pytest.raises(TimeoutError):
        await hanging
    world.ended += 1


# Made-up names (see `run`): the first address of each drops SYNs.
RACE = "dead-then-sink.test"
DEAD = "dead-then-dead.test"


async def race_past_dead(world: World, _: int) -> None:
    """The dead address's attempt starts first and loses: its lease ends with the call."""
    if world.closed:
        with pytest.raises(bindpool.PoolClosed):
            await world.pool.connect(RACE, 80, happy_eyeballs_delay=0.01)
        return
    sock = await world.pool.connect(RACE, 80, happy_eyeballs_delay=0.01)
    assert sock.getpeername() == world.sink
    world.live.append(Live.of(sock))
    world.connects += 1
    world.ended += 1  # the loser


async def cancel_race(world: World, pick: int) -> None:
    """Cancelled with one attempt under way (a long delay) or both: every lease is back
    when the cancellation has gone through."""
    under_way = 1 + pick % 2
    delay = 3600.0 if under_way == 1 else 0.01
    if world.closed:
        with pytest.raises(bindpool.PoolClosed):
            await world.pool.connect(DEAD, 80, happy_eyeballs_delay=delay)
        return
    task = asyncio.ensure_future(world.pool.connect(DEAD, 80, happy_eyeballs_delay=delay))
    await until(lambda: world.pool.statistics().in_use == len(world.live) + under_way)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert world.pool.statistics().in_use == len(world.live)  # before the call ended
    world.ended += under_way


STEPS = [
    open_socket,
    open_stream,
    close_one,
    drop_one,
    refused,
    timeout,
    cancel_connect,
    cancel_tls,
    tls_failure,
    peer_reset,
    server_first,
    aclose_in_flight,
    race_past_dead,
    cancel_race,
]


# -- the peers -----------------------------------------------------------------------------------


async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    pass  # the tracked handler closes the connection on return


Steps = Sequence[tuple[Callable[[World, int], Any], int]]


async def run(steps: Steps, maker: PoolMaker, ca: trustme.CA) -> None:
    servers = Servers()
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", DEST).configure_cert(server_tls)
    client_tls = ssl.create_default_context()
    ca.configure_trust(client_tls)
    with socket.socket() as full, socket.socket() as full2, socket.socket() as nobody:
        for listener in (full, full2):
            listener.bind((DEST, 0))
            listener.listen(0)
        # Each queue's one place, taken.
        fillers = [socket.create_connection(each.getsockname()) for each in (full, full2)]
        nobody.bind((DEST, 0))
        released: list[bindpool.Lease] = []
        world = World(
            pool=maker(32, on_release=released.append),
            servers=servers,
            sink=await servers.start(sink),
            echo=await servers.start(echo),
            tls=await servers.start(echo, tls=server_tls),
            resetter=await servers.start(reset),
            hanger_up=await servers.start(hang_up),
            blackhole=full.getsockname(),
            blackhole2=full2.getsockname(),
            refused=nobody.getsockname()[1],
            client_tls=client_tls,
            released=released,
        )
        names = Names(
            asyncio.get_running_loop(),
            {RACE: [world.blackhole, world.sink], DEAD: [world.blackhole, world.blackhole2]},
        )
        try:
            with names:
                for step, pick in steps:
                    async with asyncio.timeout(STEP_LIMIT):
                        await step(world, pick)
                    await world.check()
            for live in world.live:  # the end of the run ends every lease
                live.close()
                world.ended += 1
            world.live.clear()
            await world.check()
        finally:
            for live in world.live:
                live.close()
            for filler in fillers:
                filler.close()
            await servers.close()


steps_strategy = st.lists(
    st.tuples(st.sampled_from(STEPS), st.integers(0, 1000)), min_size=1, max_size=14
)


@pytest.mark.parametrize("loop", LOOPS)
@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=steps_strategy)
def test_random_faults_keep_the_books_straight(
    loop: str,
    make_pool: PoolMaker,
    ca: trustme.CA,
    steps: Steps,
) -> None:
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(run(steps, make_pool, ca))


@pytest.mark.parametrize("loop", LOOPS)
def test_every_step_once(loop: str, make_pool: PoolMaker, ca: trustme.CA) -> None:
    """Each fault at least once in one run, whatever hypothesis draws."""
    steps = [(step, index) for index, step in enumerate(STEPS) if step is not aclose_in_flight]
    steps += [(open_socket, 0), (open_stream, 0), (aclose_in_flight, 0), (close_one, 0)]
    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(run(steps, make_pool, ca))
