"""Another process holds part of the pool's range: the pool fills what is left, counts each
clash once, never offers a port in use twice in a row, and says PortsExhausted promptly.

The other process (`tests/outsider.py`) holds half the 4-tuples to a destination (with
SO_REUSEADDR: the pool's connect() clashes, EADDRNOTAVAIL), or binds ports without
SO_REUSEADDR, or listens on them (the pool's bind() clashes, EADDRINUSE). Both strategies:
the table meets each outside holder once and remembers it; the kernel skips every port
bound explicitly by anyone, for every destination (FIELD-NOTES.md), so it never clashes
before the block is full.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import bindpool
from benchmarks._common import stop
from tests.conftest import SOURCE, PoolMaker

R = 16
Sinks = Callable[[int], Awaitable[list[tuple[str, int]]]]


@contextlib.contextmanager
def outsider(mode: str, ports: range, destination: tuple[str, int] | None = None) -> Iterator[None]:
    """Run tests/outsider.py holding `ports` until the block ends."""
    command = [sys.executable, "-m", "tests.outsider", mode, "--source", SOURCE]
    if destination is not None:
        command += ["--destination", f"{destination[0]}:{destination[1]}"]
    process = subprocess.Popen(
        [*command, *map(str, ports)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    try:
        assert process.stdout.readline().strip() == "ready", "the outsider failed to start"
        yield
    finally:
        stop(process)


async def fill(pool: bindpool.Pool, destination: tuple[str, int]) -> list[bindpool.PooledSocket]:
    """Connect until PortsExhausted (errno 99), which must come, and promptly."""
    socks: list[bindpool.PooledSocket] = []
    async with asyncio.timeout(10):  # a hang guard, not a speed claim
        with pytest.raises(bindpool.PortsExhausted) as info:  # noqa: PT012  # fills first
            while len(socks) <= R:
                socks.append(await pool.connect(*destination))
    assert info.value.errno == 99
    assert len(socks) <= R
    return socks


async def test_half_the_tuples_held_by_another_process(make_pool: PoolMaker, sinks: Sinks) -> None:
    first, second = await sinks(2)
    pool = make_pool(R)
    ports = make_pool.ports
    taken = ports[::2]
    with outsider("tuples", taken, first):
        socks = await fill(pool, first)
        assert len(socks) == R - len(taken)
        assert not {s.getsockname()[1] for s in socks} & set(taken)
        retries = pool.statistics().retries
        if make_pool.strategy == "table":
            # Each outside 4-tuple met once, then held: never tried again.
            assert retries == len(taken)
            # They are 4-tuples to `first` only: `second` may use every port.
            socks += [await pool.connect(*second) for _ in ports]
            assert pool.statistics().retries == len(taken)
        else:
            # The kernel skips the explicitly bound ports itself; the one clash is its
            # "no port left" once the block is full.
            assert retries == 1
            socks += await fill(pool, second)
            assert len(socks) == 2 * (R - len(taken))
        for sock in socks:
            sock.close()


@pytest.mark.parametrize("mode", ["bound", "listen"])
async def test_ports_in_use_by_another_process(
    make_pool: PoolMaker, sinks: Sinks, mode: str
) -> None:
    destinations = await sinks(3)
    pool = make_pool(R)
    unusable = make_pool.ports[: R // 4]
    with outsider(mode, unusable, destinations[0] if mode == "bound" else None):
        socks = []
        for destination in destinations:
            got = await fill(pool, destination)
            assert len(got) == R - len(unusable)
            assert not {s.getsockname()[1] for s in got} & set(unusable)
            socks += got
        stats = pool.statistics()
        if make_pool.strategy == "table":
            # Found unusable once (EADDRINUSE at bind), then skipped by every destination:
            # never handed out twice in a row, nor to another destination.
            assert stats.retries == len(unusable)
            assert stats.sources[SOURCE].blocked == len(unusable)
        else:
            assert stats.retries == len(destinations)  # one "block full" per destination
        for sock in socks:
            sock.close()
