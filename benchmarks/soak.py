"""The soak: 100,000 connects through one pool, faults mixed in; memory must stay flat.

Workers open and close connections to a server in another process, through one pool on a
2,000-port range, so the table cycles through its range dozens of times. One attempt in 20
is a fault: a refused port, a timeout against a full accept queue, or a cancellation
mid-connect. The cool-down is 1 s, so that released tuples come and go all through the run:
memory (tracemalloc, and the process's resident size) is sampled in that steady state after
a tenth of the run and at its end, and must be flat; a second later the table must hold
nothing at all (no lease, nothing cooling, no destination), and every lease must have been
released exactly once.

    python -m benchmarks.soak [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
import time
import tracemalloc
from typing import Any

import uvloop

import bindpool
from benchmarks._common import Target, arguments, peer, save

SOURCE = "127.0.0.70"
PORTS = range(24000, 26000)
COOLDOWN = 1.0
WORKERS = 50
FAULT_EVERY = 20


def resident_kib() -> int:
    with open(f"/proc/{os.getpid()}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") // 1024


async def soak(port: int, connects: int) -> dict[str, Any]:
    released = 0

    def count(_: bindpool.Lease) -> None:
        nonlocal released
        released += 1

    pool = bindpool.Pool([SOURCE], ports=PORTS, cooldown=COOLDOWN, on_release=count)
    with socket.socket() as full, socket.socket() as nobody:
        full.bind(("127.0.0.1", 0))
        full.listen(0)
        filler = socket.create_connection(full.getsockname())  # the queue's one place
        nobody.bind(("127.0.0.1", 0))
        blackhole, refused = full.getsockname(), nobody.getsockname()[1]
        counter = {"done": 0, "faults": 0}
        samples: dict[str, tuple[int, int]] = {}

        async def one(n: int) -> None:
            kind = (n // FAULT_EVERY) % 3 if n % FAULT_EVERY == 0 else -1
            if kind == 0:
                try:
                    await pool.connect("127.0.0.1", refused)
                except ConnectionRefusedError:
                    counter["faults"] += 1
                return
            if kind == 1:
                try:
                    await pool.connect(*blackhole, timeout=0.001)
                except TimeoutError:
                    counter["faults"] += 1
                return
            if kind == 2:
                task = asyncio.ensure_future(pool.connect(*blackhole))
                await asyncio.sleep(0)
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    counter["faults"] += 1
                return
            _, writer = await pool.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()

        async def worker(start: int) -> None:
            for n in range(start, connects, WORKERS):
                await one(n)
                counter["done"] += 1
                if counter["done"] == connects // 10:
                    gc.collect()
                    samples["warm"] = (tracemalloc.get_traced_memory()[0], resident_kib())

        tracemalloc.start()
        began = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(WORKERS)))
        elapsed = time.perf_counter() - began
        await asyncio.sleep(0.2)  # the last transports finish closing
        gc.collect()
        samples["end"] = (tracemalloc.get_traced_memory()[0], resident_kib())
        filler.close()
        await asyncio.sleep(COOLDOWN + 1.1)  # everything released has cooled, and is swept
        stats = pool.statistics()
        gc.collect()
        samples["empty"] = (tracemalloc.get_traced_memory()[0], resident_kib())
        tracemalloc.stop()
    assert stats.in_use == 0, stats
    assert (stats.cooling, stats.sources[SOURCE].destinations) == (0, 0), stats
    assert released == stats.connects + counter["faults"], (released, stats, counter)
    return {
        "connects": counter["done"],
        "faults": counter["faults"],
        "seconds": elapsed,
        "statistics": {
            "in_use": stats.in_use,
            "cooling": stats.cooling,
            "connects": stats.connects,
            "retries": stats.retries,
            "exhausted": stats.exhausted,
        },
        "released": released,
        "traced_bytes": {name: sample[0] for name, sample in samples.items()},
        "resident_kib": {name: sample[1] for name, sample in samples.items()},
    }


CONNECTS = {"full": 100_000, "quick": 20_000, "tiny": 2_000}


def run(size: str) -> tuple[dict[str, Any], list[Target]]:
    """The soak at one of the sizes: its figures and its target."""
    with peer() as port:
        result = uvloop.run(soak(port, CONNECTS[size]))
    traced, resident = result["traced_bytes"], result["resident_kib"]
    growth = traced["end"] / max(1, traced["warm"])
    print(
        f"soak: {result['connects']} connects ({result['faults']} faults) in "
        f"{result['seconds']:.1f} s; traced memory {traced['warm'] / 1024:.0f} -> "
        f"{traced['end'] / 1024:.0f} KiB ({traced['empty'] / 1024:.0f} KiB once the table "
        f"emptied), resident {resident['warm']} -> {resident['end']} KiB"
    )
    return result, [Target("traced memory, end / after warm-up", growth, 1.10, True)]


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    save("soak", *run(args.size), args.results)


if __name__ == "__main__":
    main()
