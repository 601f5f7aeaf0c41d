"""Back-pressure instead of errors: `wait=` under a load generator with more workers than ports.

WORKERS concurrent workers each make REQUESTS requests (connect through the pool, hold the
connection HOLD seconds, close) to one destination, a uvloop server in its own process,
through a block of PORTS source ports: twice as many workers as ports. Without waiting
(`wait=0`), a connect that finds every 4-tuple taken fails at once with PortsExhausted (the
excess fails); with `wait=30`, it waits in line for a release. The two modes run in the
same process, interleaved over ROUNDS rounds. Reported: completed and failed requests, and
completed requests per second. Target: with `wait`, every request completes, at a rate
within 10% of the run without waiting.

    python -m benchmarks.waiting [--quick]
"""

from __future__ import annotations

import asyncio
import resource
import time
from typing import Any

import uvloop

import bindpool
from benchmarks._common import Target, arguments, deadline, median, peer, save

SOURCE = "127.0.0.70"
SIZES = {  # workers, ports, requests per worker, rounds
    "full": (4000, 2000, 5, 5),
    "quick": (2000, 1000, 3, 3),
    "tiny": (200, 100, 2, 1),
}
HOLD = 0.02  # seconds each request keeps its connection


async def load(pool: bindpool.Pool, port: int, workers: int, requests: int) -> dict[str, Any]:
    completed = failed = 0

    async def worker() -> None:
        nonlocal completed, failed
        for _ in range(requests):
            try:
                _, writer = await pool.open_connection("127.0.0.1", port)
            except bindpool.PortsExhausted:
                failed += 1
                await asyncio.sleep(HOLD)  # a client that failed backs off as long
                continue
            await asyncio.sleep(HOLD)
            writer.close()
            await writer.wait_closed()
            completed += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(workers)))
    seconds = time.perf_counter() - started
    return {"completed": completed, "failed": failed, "seconds": seconds}


async def main_async(size: str, port: int) -> dict[str, Any]:
    workers, ports, requests, rounds = SIZES[size]
    block = range(20000, 20000 + ports)
    runs: dict[str, list[dict[str, Any]]] = {"wait": [], "no wait": []}
    for number in range(rounds):
        order = ["wait", "no wait"] if number % 2 == 0 else ["no wait", "wait"]
        for mode in order:
            pool = bindpool.Pool([SOURCE], ports=block, wait=30.0 if mode == "wait" else 0.0)
            runs[mode].append(await load(pool, port, workers, requests))
            await asyncio.sleep(0.5)  # let the last closes finish before the next run
    return {
        mode: {
            "completed": sum(r["completed"] for r in results),
            "failed": sum(r["failed"] for r in results),
            "rate": median([r["completed"] / r["seconds"] for r in results]),
            "rates": [r["completed"] / r["seconds"] for r in results],
        }
        for mode, results in runs.items()
    } | {"workers": workers, "ports": ports, "requests": requests, "rounds": rounds}


def run(size: str) -> tuple[dict[str, Any], list[Target]]:
    """The load at one of the sizes, both modes interleaved: figures and targets."""
    workers = SIZES[size][0]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < workers * 2 + 100:  # the server has its own process and limit
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, workers * 2 + 100), hard))
    with peer() as port:
        data = uvloop.run(main_async(size, port))
    waited, failed_fast = data["wait"], data["no wait"]
    ratio = waited["rate"] / failed_fast["rate"]
    data["rate_ratio"] = ratio
    print(
        f"waiting: {data['workers']} workers, {data['ports']} ports, "
        f"{data['requests']} requests each, {data['rounds']} rounds"
    )
    for line in summary(data):
        print(f"  {line}")
    return data, [
        Target("requests failed with wait", waited["failed"], 0, at_most=True),
        Target("completed/s with wait / without", ratio, 0.9, at_most=False),
    ]


def summary(data: dict[str, Any]) -> list[str]:
    """One line per mode, then the ratio: for the console and the runner."""
    lines = [
        f"{mode}: {data[mode]['completed']:,} completed, {data[mode]['failed']:,} failed, "
        f"{data[mode]['rate']:,.0f} completed/s (median of rounds: "
        f"{', '.join(f'{r:,.0f}' for r in data[mode]['rates'])})"
        for mode in ("wait", "no wait")
    ]
    return [*lines, f"completed/s with wait / without: {data['rate_ratio']:.3f}"]


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    deadline(600)
    save("waiting", *run(args.size), args.results)


if __name__ == "__main__":
    main()
