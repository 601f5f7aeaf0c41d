"""Connections per second through `pool.open_connection` against plain
`asyncio.open_connection` (no source binding), in one run, on asyncio's loop and uvloop.

Each connection is opened and closed by one of `concurrency` workers; the server runs in its
own process. Rounds alternate between the methods so drift hits them alike; the figure is
each method's median over the rounds. The targets are for bindpool's default strategy,
"table"; strategy "kernel" (ports: the ephemeral range) runs in the same rounds, for
reference (no target).

`local_addr=(source, 0)`, the way bindpool replaces, is measured for reference too, but in
a phase of its own, against plain again, in a fresh network namespace: each of its
bind((ip, 0)) sockets hides its port from every automatic pick in the namespace, on all
addresses, through its TIME_WAIT (60 s, FIELD-NOTES.md), so tens of thousands of them would
slow plain's connect() and then make it fail. Without root there is no namespace to throw
away, and that phase is skipped rather than done to the host.

When root may make one, then, each loop's phases run in private network namespaces (loopback
only, no setting changed), a fresh one per phase, and other work on the host stays out of
the figures.

    python -m benchmarks.throughput [--quick] [--mode auto|namespace|host]
"""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

import bindpool
from benchmarks import _netns
from benchmarks._common import Target, arguments, deadline, median, peer, save

# Source IPs per loop: strategy "table", strategy "kernel", local_addr=(ip, 0), explicit
# port; each method has its own, so none meets another's 4-tuples or TIME_WAIT sockets.
SOURCES = {
    "asyncio": ("127.0.0.52", "127.0.0.53", "127.0.0.54", "127.0.0.58"),
    "uvloop": ("127.0.0.55", "127.0.0.56", "127.0.0.57", "127.0.0.59"),
}
PORTS = range(20000, 30000)  # below the ephemeral range: the kernel's picks never land here
EXPLICIT_PORTS = range(10000, 20000)  # as many, for the explicit-port reference
SIZES = {"full": (5000, 5, 100), "quick": (2000, 5, 100), "tiny": (100, 1, 10)}
POOLS = ("plain", "bindpool", "bindpool_kernel")  # the targets' phase
# On uvloop the same phase also times what bindpool's native path asks of libuv, without the
# pool: create_connection(local_addr=(ip, port)) over a cycle of explicit ports (libuv sets
# SO_REUSEADDR; asyncio's local_addr does not, so it could not reuse a port in TIME_WAIT).
# The gap between it and bindpool is bindpool's own work per connection.
EXPLICIT = "explicit_port"
LOCAL_ADDR = ("plain", "local_addr")  # its own phase, in a fresh namespace only
LOOPS = (("asyncio", asyncio.new_event_loop, 0.95), ("uvloop", uvloop.new_event_loop, 0.85))
Opener = Callable[[], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


async def rate(open_one: Opener, count: int, concurrency: int) -> float:
    async def worker(n: int) -> None:
        for _ in range(n):
            _, writer = await open_one()
            writer.close()
            await writer.wait_closed()

    start = time.perf_counter()
    await asyncio.gather(*(worker(count // concurrency) for _ in range(concurrency)))
    return (count // concurrency * concurrency) / (time.perf_counter() - start)


async def measure(
    port: int,
    count: int,
    concurrency: int,
    rounds: int,
    sources: tuple[str, ...],
    names: tuple[str, ...],
) -> dict[str, float]:
    """The median rate of each method in `names`, over `rounds` alternating rounds."""
    table_source, kernel_source, local_addr_source, explicit_source = sources
    pools = {
        "bindpool": bindpool.Pool([table_source], ports=PORTS),
        "bindpool_kernel": bindpool.Pool([kernel_source], strategy="kernel"),
    }
    explicit_ports = itertools.cycle(EXPLICIT_PORTS)

    async def explicit_port() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        transport, _ = await loop.create_connection(
            lambda: protocol, "127.0.0.1", port, local_addr=(explicit_source, next(explicit_ports))
        )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    openers: dict[str, Opener] = {
        "plain": lambda: asyncio.open_connection("127.0.0.1", port),
        "bindpool": lambda: pools["bindpool"].open_connection("127.0.0.1", port),
        "bindpool_kernel": lambda: pools["bindpool_kernel"].open_connection("127.0.0.1", port),
        "local_addr": lambda: asyncio.open_connection(
            "127.0.0.1", port, local_addr=(local_addr_source, 0)
        ),
        EXPLICIT: explicit_port,
    }
    rates: dict[str, list[float]] = {name: [] for name in names}
    await rate(openers["plain"], concurrency, concurrency)  # warm up the server and the loop
    for _ in range(rounds):
        for name in names:
            rates[name].append(await rate(openers[name], count, concurrency))
    await asyncio.sleep(0.1)  # transports finish closing
    for name, pool in pools.items():
        stats = pool.statistics()
        assert stats.in_use == 0, f"leases left: {stats}"
        expected = rounds * (count // concurrency * concurrency) if name in names else 0
        assert stats.connects == expected, stats
    return {name: median(values) for name, values in rates.items()}


def phase(
    factory: Callable[[], asyncio.AbstractEventLoop],
    sizes: tuple[int, int, int],
    sources: tuple[str, ...],
    names: tuple[str, ...],
) -> dict[str, float]:
    """One phase on one loop: a fresh namespace if this runs in one, a server, the rounds."""
    if _netns.inside():
        _netns.renew()
    count, rounds, concurrency = sizes
    with peer() as port, asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(measure(port, count, concurrency, rounds, sources, names))


def run(size: str) -> tuple[dict[str, Any], list[Target]]:
    count, rounds, concurrency = SIZES[size]
    namespaced = _netns.inside()
    where = (
        "private network namespaces (unshare -n), a fresh one per phase, loopback"
        if namespaced
        else "host network namespace, loopback (local_addr not measured: no namespace)"
    )
    data: dict[str, Any] = {
        "connections": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "network": where,
    }
    print(f"throughput: {count} connections x {rounds} rounds, concurrency {concurrency}; {where}")
    targets = []
    for loop_name, factory, bound in LOOPS:
        names = (*POOLS, EXPLICIT) if loop_name == "uvloop" else POOLS
        rates = phase(factory, SIZES[size], SOURCES[loop_name], names)
        row: dict[str, float] = rates | {
            "ratio": rates["bindpool"] / rates["plain"],
            "kernel_ratio": rates["bindpool_kernel"] / rates["plain"],
        }
        line = (
            f"{loop_name}: plain {rates['plain']:.0f}/s, bindpool {rates['bindpool']:.0f}/s "
            f"({row['ratio']:.3f}), bindpool kernel {rates['bindpool_kernel']:.0f}/s "
            f"({row['kernel_ratio']:.3f})"
        )
        if EXPLICIT in rates:
            row["explicit_port_ratio"] = rates[EXPLICIT] / rates["plain"]
            line += (
                f", libuv explicit port without the pool {rates[EXPLICIT]:.0f}/s "
                f"({row['explicit_port_ratio']:.3f})"
            )
        if namespaced:
            apart = phase(factory, SIZES[size], SOURCES[loop_name], LOCAL_ADDR)
            row |= {
                "local_addr": apart["local_addr"],
                "local_addr_plain": apart["plain"],
                "local_addr_ratio": apart["local_addr"] / apart["plain"],
            }
            line += (
                f"; local_addr {apart['local_addr']:.0f}/s against plain "
                f"{apart['plain']:.0f}/s ({row['local_addr_ratio']:.3f})"
            )
        print(line)
        data[loop_name] = row
        targets.append(
            Target(f"throughput bindpool/plain on {loop_name}", row["ratio"], bound, False)
        )
    return data, targets


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(__doc__, argv, modes=("namespace", "host"))
    mode = _netns.choose(_netns.OPTION if args.mode == "host" else args.mode)
    if mode == _netns.NAMESPACE and not _netns.inside():
        return _netns.reexec("benchmarks.throughput", argv)
    deadline(600)
    data, targets = run(args.size)
    save("throughput", data, targets, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
