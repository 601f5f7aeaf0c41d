"""Occupancy: what one new connection costs while a destination's range is 0/50/90/99% full.

For each method, on a fresh listener that never accepts: hold connections from 127.0.0.50
to it until X% of an R-port range is taken (opened by the same method, as a program using it
would have them), then time new connections to the same destination, each
socket + options + bind + connect + close (SO_LINGER 0: an RST, so its 4-tuple is free at
once). Levels go up within one pass; passes ("rounds") alternate between the methods, and
each (method, level) figure is the median and p99 over all its samples, in microseconds.
The garbage collector is off while timing.

- `bind((ip, 0))` and IP_BIND_ADDRESS_NO_PORT: blocking sockets, as in FIELD-NOTES.md;
- bindpool: `await pool.connect()` + close on asyncio's default loop, `ports` = the same
  block, default cool-down (60 s: past the free ports, the table reuses its oldest cooling
  4-tuple). Strategy "table" (the target) and "kernel" (beside it).

The R-port wall is a private network namespace's `ip_local_port_range` when root may make one,
else IP_LOCAL_PORT_RANGE on each socket (`benchmarks/_wall.py`). In the namespace a fifth,
reference row sets IP_LOCAL_PORT_RANGE to the namespace's whole range on NO_PORT sockets:
the kernel's search then steps by 1 from where it last stopped instead of by 2 from a hashed
offset, which keeps it short.

Then the target's own sweep: `pool.connect` (strategy "table") at 0% and 99% of a
16,000-port block (FIELD-NOTES.md: bind((ip, 0)) is 106x slower there at 99%, NO_PORT 13x),
a block below both the host's and the namespace's ephemeral ranges, so that no automatic
pick is starved by it. Target: median at 99% / at 0% <= 1.1 (issue 10).

    python -m benchmarks.occupancy [--quick] [--mode auto|namespace|option]
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bindpool
from benchmarks import _netns
from benchmarks._common import Target, median, percentile
from benchmarks._wall import RAW, RST, TABLE, Wall, listeners, reset, setup

if TYPE_CHECKING:
    from collections.abc import Iterator

SOURCE = "127.0.0.51"
LEVELS = (0.0, 0.5, 0.9, 0.99)
WARMUP = 20  # untimed connections at each level first
BIG = "pool.connect (table), big block"
TARGET = 1.1  # pool.connect (table): median at 99% / median at 0% of the big block
BIG_LEVELS = (0.0, 0.99)
BIG_BLOCK_START = 10000  # below 32768 (Linux's default range) and the namespace's 40000
_perf = time.perf_counter
_SOL_SOCKET, _SO_LINGER = socket.SOL_SOCKET, socket.SO_LINGER


@dataclass(frozen=True)
class Sizes:
    range: int  # R
    rounds: int  # passes over all methods
    samples: int  # timed connections per level and pass
    big: int  # the target's block (16,000 ports)


SIZES = {
    "full": Sizes(2000, 5, 400, 16_000),
    "quick": Sizes(2000, 3, 200, 16_000),
    "tiny": Sizes(100, 1, 10, 200),
}
Timings = dict[float, list[float]]  # level -> seconds per connection


@contextlib.contextmanager
def gc_off() -> Iterator[None]:
    """No collection pauses inside a timed loop: collect first, then hold off."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _backlog(sizes: Sizes) -> int:
    """Held connections, plus every timed one: reset connections stay in the queue."""
    held = max(sizes.range, sizes.big) * LEVELS[-1]
    return int(held) + len(LEVELS) * (sizes.samples + WARMUP) + 64


def sweep_raw(wall: Wall, method: str, dest: tuple[str, int], samples: int) -> Timings:
    """One pass of a raw method over the levels, on one destination."""
    make = wall.raw_socket

    def once() -> float:
        start = _perf()
        sock = make(method)
        sock.bind((SOURCE, 0))
        sock.connect(dest)
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, RST)
        sock.close()
        return _perf() - start

    held: list[socket.socket] = []
    timings: Timings = {}
    try:
        for level in LEVELS:
            while len(held) < int(len(wall.block) * level):
                held.append(wall.connect(method, SOURCE, dest))
            for _ in range(WARMUP):
                once()
            with gc_off():
                timings[level] = [once() for _ in range(samples)]
        wall.check(held, SOURCE)  # on the block, one 4-tuple each
    finally:
        for sock in held:
            reset(sock)
    return timings


async def sweep_pool(
    wall: Wall,
    method: str,
    dest: tuple[str, int],
    samples: int,
    big: range | None = None,
) -> Timings:
    """One pass through `pool.connect()` on a fresh pool, on one destination: over the
    wall's block and LEVELS, or over `big` (strategy "table") and BIG_LEVELS."""
    pool = wall.pool(method, SOURCE) if big is None else bindpool.Pool([SOURCE], ports=big)
    block = wall.block if big is None else big
    levels = LEVELS if big is None else BIG_LEVELS
    ip, port = dest
    connect = pool.connect

    async def once() -> float:
        start = _perf()
        sock = await connect(ip, port)
        sock.setsockopt(_SOL_SOCKET, _SO_LINGER, RST)
        sock.close()
        return _perf() - start

    held: list[socket.socket] = []
    timings: Timings = {}
    try:
        async with asyncio.timeout(120):  # a hang guard, not a speed claim
            for level in levels:
                while len(held) < int(len(block) * level):
                    held.append(await connect(ip, port))
                for _ in range(WARMUP):
                    await once()
                with gc_off():
                    timings[level] = [await once() for _ in range(samples)]
                assert pool.statistics().in_use == len(held)
        Wall(wall.mode, block).check(held, SOURCE)
    finally:
        for sock in held:
            reset(sock)
    stats = pool.statistics()
    assert stats.in_use == 0, f"leases left: {stats}"
    assert stats.exhausted == 0, stats
    assert stats.connects == len(held) + len(levels) * (WARMUP + samples), stats
    return timings


def measure(wall: Wall, sizes: Sizes) -> dict[str, Timings]:
    methods = wall.methods()
    pooled: dict[str, Timings] = {m: {level: [] for level in LEVELS} for m in methods}
    pooled[BIG] = {level: [] for level in BIG_LEVELS}
    big = range(BIG_BLOCK_START, BIG_BLOCK_START + sizes.big)
    backlog = _backlog(sizes)
    with asyncio.Runner() as runner:
        for _ in range(sizes.rounds):
            for method in methods:
                with listeners(1, backlog) as (dest,):
                    if method in RAW:
                        timings = sweep_raw(wall, method, dest, sizes.samples)
                    else:
                        timings = runner.run(sweep_pool(wall, method, dest, sizes.samples))
                for level, values in timings.items():
                    pooled[method][level].extend(values)
            with listeners(1, backlog) as (dest,):
                timings = runner.run(sweep_pool(wall, TABLE, dest, sizes.samples, big))
            for level, values in timings.items():
                pooled[BIG][level].extend(values)
    return pooled


def summarize(pooled: dict[str, Timings]) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for method, timings in pooled.items():
        medians = [median(values) * 1e6 for values in timings.values()]
        p99s = [percentile(values, 0.99) * 1e6 for values in timings.values()]
        figures[method] = {
            "median_us": medians,
            "p99_us": p99s,
            "median_ratio": medians[-1] / medians[0],
            "p99_ratio": p99s[-1] / p99s[0],
            "samples": len(next(iter(timings.values()))),
        }
    return figures


def run(size: str, mode: str) -> tuple[dict[str, Any], list[Target]]:
    sizes = SIZES[size]
    wall = setup(mode, sizes.range, _backlog(sizes))
    print(
        f"occupancy: R = {sizes.range}, {sizes.rounds} x {sizes.samples} samples per level; "
        f"{wall.describe()}"
    )
    pooled = measure(wall, sizes)
    big = summarize({BIG: pooled.pop(BIG)})[BIG]
    figures = summarize(pooled)
    header = " / ".join(f"{level:.0%}" for level in LEVELS)
    print(f"  median us at {header} full (99% / 0%); p99 us")
    for method, row in figures.items():
        medians = " / ".join(f"{v:.1f}" for v in row["median_us"])
        p99s = " / ".join(f"{v:.1f}" for v in row["p99_us"])
        print(f"  {method:<32} {medians} ({row['median_ratio']:.2f}x); p99 {p99s}")
    print(
        f"  pool.connect (table), {sizes.big}-port block, median us at 0% / 99%: "
        f"{big['median_us'][0]:.1f} / {big['median_us'][1]:.1f} ({big['median_ratio']:.2f}x); "
        f"p99 {big['p99_us'][0]:.1f} / {big['p99_us'][1]:.1f}"
    )
    data: dict[str, Any] = {
        "mode": wall.mode,
        "wall": wall.describe(),
        "range": sizes.range,
        "block": [wall.block[0], wall.block[-1]],
        "source": SOURCE,
        "levels": [round(level * 100) for level in LEVELS],
        "rounds": sizes.rounds,
        "samples_per_level": sizes.rounds * sizes.samples,
        "methods": figures,
        "big": big | {"range": sizes.big, "levels": [round(x * 100) for x in BIG_LEVELS]},
    }
    targets = [
        Target(
            f"occupancy: pool.connect (table) median cost at 99% / at 0% of {sizes.big} ports",
            big["median_ratio"],
            TARGET,
            True,
        )
    ]
    return data, targets


def main(argv: list[str] | None = None) -> int:
    return _netns.namespaced_main("benchmarks.occupancy", __doc__, argv, run, 600)


if __name__ == "__main__":
    sys.exit(main())
