"""Connections per second through `pool.open_connection` against plain
`asyncio.open_connection` (no source binding), in one run, on asyncio's loop and uvloop.

Each connection is opened and closed by one of `concurrency` workers; the server runs in its
own process. Rounds alternate between the methods so drift hits both alike; the figure is
each method's median over the rounds. `local_addr=(source, 0)`, the way bindpool replaces,
is measured too, for reference (no target).

    python -m benchmarks.throughput [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable

import uvloop

import bindpool
from benchmarks._common import Target, median, peer, save

SOURCE = "127.0.0.2"
PORTS = range(20000, 30000)  # below the ephemeral range: the kernel's picks never land here
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


async def measure(port: int, count: int, concurrency: int, rounds: int) -> dict[str, float]:
    pool = bindpool.Pool([SOURCE], ports=PORTS)
    methods: dict[str, Opener] = {
        "plain": lambda: asyncio.open_connection("127.0.0.1", port),
        "bindpool": lambda: pool.open_connection("127.0.0.1", port),
        "local_addr": lambda: asyncio.open_connection("127.0.0.1", port, local_addr=(SOURCE, 0)),
    }
    rates: dict[str, list[float]] = {name: [] for name in methods}
    await rate(methods["plain"], concurrency, concurrency)  # warm up the server and the loop
    for _ in range(rounds):
        for name, open_one in methods.items():
            rates[name].append(await rate(open_one, count, concurrency))
    await asyncio.sleep(0.1)  # transports finish closing
    stats = pool.statistics()
    assert stats.in_use == 0, f"leases left: {stats}"
    assert stats.connects == rounds * (count // concurrency * concurrency), stats
    return {name: median(values) for name, values in rates.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer connections and rounds")
    args = parser.parse_args()
    count, rounds = (2000, 3) if args.quick else (5000, 5)
    concurrency = 100
    data: dict[str, object] = {"connections": count, "concurrency": concurrency, "rounds": rounds}
    targets = []
    with peer() as port:
        for loop_name, factory, bound in (
            ("asyncio", asyncio.new_event_loop, 0.95),
            ("uvloop", uvloop.new_event_loop, 0.85),
        ):
            with asyncio.Runner(loop_factory=factory) as runner:
                rates = runner.run(measure(port, count, concurrency, rounds))
            ratio = rates["bindpool"] / rates["plain"]
            data[loop_name] = rates | {"ratio": ratio}
            print(
                f"{loop_name}: plain {rates['plain']:.0f}/s, bindpool {rates['bindpool']:.0f}/s, "
                f"local_addr {rates['local_addr']:.0f}/s"
            )
            targets.append(Target(f"throughput bindpool/plain on {loop_name}", ratio, bound, False))
    save("throughput", data, targets)


if __name__ == "__main__":
    main()
