"""Capacity: connections one source IP holds to D destinations with a range of R ports.

For each method in turn, on fresh listeners (D of them, on 127.0.0.1, never accepting),
open connections from 127.0.0.50 to each destination in turn until the method fails for
it, and keep them all open; the figure is how many were held at once. Methods:

- `bind((ip, 0))` then connect: the kernel picks the port at bind(), blind to the
  destination, so every destination shares the R ports (FIELD-NOTES.md: R, whatever D);
- IP_BIND_ADDRESS_NO_PORT + bind((ip, 0)): the kernel picks at connect() (R x D);
- bindpool, strategy "table" (the default) and "kernel", with `ports` = the same R ports.

The R-port wall is a private network namespace's `ip_local_port_range` when root may make
one (the benchmark re-executes itself under `unshare -n`), else IP_LOCAL_PORT_RANGE on each
socket (`benchmarks/_wall.py`). Between methods every socket is closed with an RST.
Correctness, outside the count: every socket on the source and the block, every 4-tuple
once, no destination above R, the pool's leases all back. Target: bindpool (table) holds
>= 99.9% of R x D.

    python -m benchmarks.capacity [--quick] [--mode auto|namespace|option]
"""

from __future__ import annotations

import asyncio
import errno
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import bindpool
from benchmarks import _netns
from benchmarks._common import Target
from benchmarks._wall import RAW, TABLE, Wall, listeners, reset, setup

if TYPE_CHECKING:
    import socket

SOURCE = "127.0.0.50"
TARGET = 0.999  # of R x D


@dataclass(frozen=True)
class Sizes:
    range: int  # R
    destinations: int  # D


SIZES = {"full": Sizes(2000, 4), "quick": Sizes(2000, 4), "tiny": Sizes(64, 2)}


def _why(error: OSError, where: str) -> str:
    name = errno.errorcode.get(error.errno or 0, str(error.errno))
    if isinstance(error, bindpool.PortsExhausted):
        return f"PortsExhausted ({name})"
    return f"{where}: {name}"


def hold_raw(
    wall: Wall, method: str, dests: list[tuple[str, int]]
) -> tuple[list[socket.socket], list[str]]:
    """Connections by a raw method to each destination until it fails; (sockets, why)."""
    socks: list[socket.socket] = []
    stopped: list[str] = []
    limit = len(wall.block)
    for dest in dests:
        count = 0
        while True:
            sock = wall.raw_socket(method)
            try:
                sock.bind((SOURCE, 0))
            except OSError as exc:
                sock.close()
                stopped.append(_why(exc, "bind"))
                break
            try:
                sock.connect(dest)
            except OSError as exc:
                sock.close()
                stopped.append(_why(exc, "connect"))
                break
            socks.append(sock)
            count += 1
            assert count <= limit, f"{method}: more than R connections to one destination"
    return socks, stopped


async def hold_pool(wall: Wall, method: str, dests: list[tuple[str, int]]) -> dict[str, Any]:
    """The same through `pool.connect()`; closes what it holds before returning."""
    pool = wall.pool(method, SOURCE)
    socks: list[socket.socket] = []
    stopped: list[str] = []
    per_destination = []
    async with asyncio.timeout(120):  # a hang guard, not a speed claim
        for ip, port in dests:
            before = len(socks)
            while True:
                try:
                    socks.append(await pool.connect(ip, port))
                except bindpool.PortsExhausted as exc:
                    stopped.append(_why(exc, "connect"))
                    break
                assert len(socks) - before <= len(wall.block), "more than R to one destination"
            per_destination.append(len(socks) - before)
    stats = pool.statistics()
    wall.check(socks, SOURCE)
    assert stats.in_use == stats.connects == len(socks), stats
    assert stats.footprint <= len(wall.block), stats
    for sock in socks:
        reset(sock)
    assert pool.statistics().in_use == 0, "leases left after every socket closed"
    return {
        "held": len(socks),
        "per_destination": per_destination,
        "stopped_by": stopped,
        "footprint": stats.footprint,
        "retries": stats.retries,
    }


def measure(wall: Wall, sizes: Sizes) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    backlog = sizes.range + 16
    with asyncio.Runner() as runner:
        for method in wall.methods():
            start = time.perf_counter()
            with listeners(sizes.destinations, backlog) as dests:
                if method in RAW:
                    socks, stopped = hold_raw(wall, method, dests)
                    try:
                        wall.check(socks, SOURCE)
                        peers = [sock.getpeername() for sock in socks]
                        result: dict[str, Any] = {
                            "held": len(socks),
                            "per_destination": [peers.count(dest) for dest in dests],
                            "stopped_by": stopped,
                        }
                    finally:
                        for sock in socks:
                            reset(sock)
                else:
                    result = runner.run(hold_pool(wall, method, dests))
            result["ratio"] = result["held"] / (sizes.range * sizes.destinations)
            result["seconds"] = time.perf_counter() - start
            results[method] = result
            print(
                f"  {method:<32} {result['held']:>6} held "
                f"({result['ratio']:.1%} of R x D), per destination "
                f"{result['per_destination']}; stopped by {sorted(set(result['stopped_by']))}"
            )
    return results


def run(size: str, mode: str) -> tuple[dict[str, Any], list[Target]]:
    sizes = SIZES[size]
    wall = setup(mode, sizes.range, sizes.range + 16)
    print(f"capacity: R = {sizes.range}, D = {sizes.destinations}; {wall.describe()}")
    methods = measure(wall, sizes)
    data: dict[str, Any] = {
        "mode": wall.mode,
        "wall": wall.describe(),
        "range": sizes.range,
        "destinations": sizes.destinations,
        "block": [wall.block[0], wall.block[-1]],
        "source": SOURCE,
        "methods": methods,
    }
    targets = [
        Target(
            f"capacity: bindpool (table) holds / (R x D = {sizes.range} x {sizes.destinations})",
            methods[TABLE]["ratio"],
            TARGET,
            False,
        )
    ]
    return data, targets


def main(argv: list[str] | None = None) -> int:
    return _netns.namespaced_main("benchmarks.capacity", __doc__, argv, run, 300)


if __name__ == "__main__":
    sys.exit(main())
