"""The port table alone (no sockets): speed, memory and footprint.

1. acquire+release at 0/50/99% of a destination's range held live, in batches; the figure is
   the median batch's time per pair. With cooldown 0 (the pick) and 60 s on a clock that does
   not move (every release cools, so past the range each acquire is the oldest-cooling
   fallback). Target: <= 2 us.
2. Memory (tracemalloc) per live lease, over one and over many destinations (target <= 300
   B), and per idle destination: while its released tuples cool, and after.
3. Footprint under a skewed load over 50 destinations (Zipf): distinct ports bound / busiest
   destination's live connections, sampled after a warm-up; target <= 1.34 on the mean of
   the samples, for three loads: connections that only open; churn (random closes, as many
   opens) without cool-down; churn with the default 60 s cool-down. Under churn with a
   cool-down no pick can reach 1.0: when another destination shares a port of the busiest
   and the busiest's connection ends first (half the time, for memoryless lifetimes), the
   cool-down keeps the busiest off that port while the other still holds it.
4. In situ: the table's cost per connection in a real run. A tight loop keeps the table's
   data and code in cache; a real run interleaves each acquire and release with a
   connect, a transport, a server's answers, so both meet cold caches. Here a real pool
   opens and closes connections (`pool.open_connection` on uvloop's native path and on
   asyncio, against `benchmarks/peer.py`), and every call the pool makes to its table
   (acquire, release, and any clash) goes through a proxy that times it with
   `perf_counter`. The figure is the time inside the table per connection (median over
   batches), less the proxy's own overhead (measured around a table that does nothing);
   beside it, the same table's tight-loop figure from (1). No target: it is what the
   tight loop's <= 2 us becomes in a real run.

    python -m benchmarks.table [--quick]
"""

from __future__ import annotations

import asyncio
import gc
import random
import socket
import sys
import time
import tracemalloc
from dataclasses import dataclass
from typing import Any

import uvloop

import bindpool
from benchmarks._common import Target, arguments, median, peer, percentile, save
from bindpool._table import PortTable

SOURCE = "127.0.0.2"
RANGE = range(32768, 61000)  # Linux's default ephemeral range: 28,232 ports
V4 = socket.AF_INET


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def speed(occupancy: float, cooldown: float, batches: int, batch: int) -> float:
    """Median over batches of the time per acquire+release pair, in microseconds."""
    table = PortTable({SOURCE: RANGE}, cooldown=cooldown, clock=Clock())
    dest = ("198.51.100.7", 443)
    held = [table.acquire(dest, V4) for _ in range(int(len(RANGE) * occupancy))]
    acquire, release = table.acquire, table.release
    timings = []
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(batch):
            claim = acquire(dest, V4)
            release(claim)  # type: ignore[arg-type]  # never None below a full range
        timings.append((time.perf_counter() - start) / batch * 1e6)
    # Correctness, outside the timed loop: the held leases are intact, nothing else live.
    assert table.statistics()[SOURCE].in_use == len(held)
    return median(timings)


class Timed:
    """Forwards the pool's calls to its table, adding up the time spent inside them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.calls = 0

    def _timed(self, method: Any, *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args)
        finally:
            self.seconds += time.perf_counter() - start
            self.calls += 1

    def acquire(self, destination: Any, family: int) -> Any:
        return self._timed(self.inner.acquire, destination, family)

    def release(self, claim: Any) -> None:
        self._timed(self.inner.release, claim)

    def clashed(self, claim: Any) -> float:
        seconds: float = self._timed(self.inner.clashed, claim)
        return seconds

    def port_in_use(self, claim: Any) -> float:
        seconds: float = self._timed(self.inner.port_in_use, claim)
        return seconds

    def source_gone(self, claim: Any) -> None:
        self._timed(self.inner.source_gone, claim)

    def remove_source(self, address: str) -> int:
        live: int = self.inner.remove_source(address)
        return live

    def resting(self, destination: Any, family: int) -> float | None:
        due: float | None = self.inner.resting(destination, family)
        return due

    @property
    def sources(self) -> Any:
        return self.inner.sources

    def statistics(self) -> Any:
        return self.inner.statistics()


class _Nothing:
    def acquire(self, destination: Any, family: int) -> None:
        return None

    def release(self, claim: Any) -> None:
        return None


def proxy_overhead(calls: int) -> float:
    """Seconds the proxy counts per call around a table that does nothing: its two clock
    reads and a call of an empty method (so the figure less it slightly undercounts)."""
    timed = Timed(_Nothing())
    for _ in range(calls):
        timed.acquire(None, V4)
        timed.release(None)
    return timed.seconds / timed.calls


IN_SITU_SOURCE = {"asyncio": "127.0.0.72", "uvloop": "127.0.0.73"}
IN_SITU_PORTS = range(26000, 30000)
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def in_situ_batches(
    loop_name: str, port: int, batches: int, batch: int, concurrency: int
) -> list[float]:
    """Seconds inside the table per connection, one figure per batch."""
    pool = bindpool.Pool([IN_SITU_SOURCE[loop_name]], ports=IN_SITU_PORTS)
    # Private: the one seam where the pool's dialer meets its table.
    timed = Timed(pool._dialer.table)
    pool._dialer.table = timed

    async def worker(n: int) -> None:
        for _ in range(n):
            _, writer = await pool.open_connection("127.0.0.1", port)
            writer.close()
            await writer.wait_closed()

    per_worker = max(1, batch // concurrency)
    figures = []
    for index in range(batches + 1):  # the first batch warms up, untimed
        await asyncio.sleep(0.05)  # the last batch's sockets have released their leases
        timed.seconds, timed.calls = 0.0, 0
        await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
        await asyncio.sleep(0.05)
        if index:
            figures.append(timed.seconds / (per_worker * concurrency))
    stats = pool.statistics()
    assert stats.in_use == 0, stats
    assert stats.connects == (batches + 1) * per_worker * concurrency, stats
    return figures


def in_situ(batches: int, batch: int) -> dict[str, dict[str, float]]:
    """Per loop: table time per connection in a real run (us), and the proxy's overhead."""
    overhead = proxy_overhead(200_000)
    figures = {}
    with peer() as port:
        for loop_name, factory in LOOPS.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                seconds = runner.run(in_situ_batches(loop_name, port, batches, batch, 50))
            # Two calls per connection (acquire, release), each with the proxy's overhead.
            figures[loop_name] = {
                "us_per_connection": (median(seconds) - 2 * overhead) * 1e6,
                "raw_us_per_connection": median(seconds) * 1e6,
                "proxy_overhead_us_per_call": overhead * 1e6,
                "batches": batches,
                "batch": batch,
            }
    return figures


def memory_per_lease(destinations: int, per_destination: int) -> float:
    table = PortTable({SOURCE: RANGE}, cooldown=60.0, clock=Clock())
    dests = [(f"10.{i // 250}.{i % 250}.1", 443) for i in range(destinations)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    claims = [table.acquire(d, V4) for d in dests for _ in range(per_destination)]
    used = tracemalloc.get_traced_memory()[0] - before - claims.__sizeof__()
    tracemalloc.stop()
    assert all(claims)
    assert table.statistics()[SOURCE].in_use == len(claims)
    return used / len(claims)


def memory_per_idle_destination(destinations: int) -> tuple[float, float]:
    """(bytes while cooling, bytes after the cool-down) per destination used once."""
    clock = Clock()
    table = PortTable({SOURCE: RANGE}, cooldown=60.0, clock=clock)
    dests = [(f"10.{i // 250}.{i % 250}.1", 443) for i in range(destinations)]
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for dest in dests:
        claim = table.acquire(dest, V4)
        assert claim is not None
        table.release(claim)
    cooling = tracemalloc.get_traced_memory()[0] - before
    clock.now += 62.0
    stats = table.statistics()[SOURCE]  # sweeps what is due, as any later call would
    gc.collect()
    after = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert (stats.destinations, stats.cooling, stats.in_use) == (0, 0, 0)
    return cooling / destinations, max(0.0, after) / destinations


def footprint(
    destinations: int, steps: int, live_target: int, cooldown: float, churn: bool, seed: int
) -> dict[str, float]:
    """Distinct ports bound / busiest destination's live connections, sampled over time.

    Destinations are drawn by a Zipf law (s = 1.1). Without churn, connections only open,
    up to `live_target`; with churn, the live count hovers around `live_target` while
    random connections close and new ones open, 200 events a second on a fake clock.
    """
    rng = random.Random(seed)
    clock = Clock()
    table = PortTable({SOURCE: RANGE}, cooldown=cooldown, clock=clock, rng=random.Random(seed))
    dests = [(f"203.0.113.{i}", 443) for i in range(destinations)]
    weights = [1 / (rank + 1) ** 1.1 for rank in range(destinations)]
    live: list[Any] = []
    per_dest = dict.fromkeys(dests, 0)
    ratios = []
    for step in range(steps):
        clock.now += 0.005
        opening = (
            len(live) < live_target
            if not churn
            else (rng.random() < 0.5 + (live_target - len(live)) / (2 * live_target))
        )
        if opening:
            dest = rng.choices(dests, weights)[0]
            claim = table.acquire(dest, V4)
            assert claim is not None
            live.append(claim)
            per_dest[dest] += 1
        elif churn and live:
            claim = live.pop(rng.randrange(len(live)))
            per_dest[claim.destination] -= 1
            table.release(claim)
        if step > steps // 4 and step % 500 == 0:
            bound = table.statistics()[SOURCE].footprint
            ratios.append(bound / max(per_dest.values()))
    assert table.statistics()[SOURCE].in_use == len(live)
    for claim in live:
        table.release(claim)
    return {
        "mean": sum(ratios) / len(ratios),
        "p95": percentile(ratios, 0.95),
        "max": max(ratios),
        "samples": len(ratios),
    }


@dataclass(frozen=True)
class Sizes:
    batches: int  # timed batches per occupancy
    batch: int  # acquire+release pairs per batch
    steps: int  # events per footprint load
    leases: int  # live leases for memory per lease, one destination
    destinations: int  # idle destinations for memory per idle destination
    situ_batches: int  # timed batches of real connections, per loop
    situ_batch: int  # connections per batch


SIZES = {
    "full": Sizes(25, 20_000, 300_000, 20_000, 5_000, 12, 2_000),
    "quick": Sizes(9, 5_000, 60_000, 20_000, 5_000, 5, 1_000),
    "tiny": Sizes(3, 100, 2_000, 500, 100, 2, 100),
}


def run(size: str) -> tuple[dict[str, Any], list[Target]]:
    sizes = SIZES[size]
    batches, batch, steps = sizes.batches, sizes.batch, sizes.steps
    data: dict[str, Any] = {"range": len(RANGE)}
    targets = []

    cost: dict[str, dict[str, float]] = {}
    for cooldown in (0.0, 60.0):
        row = {f"{int(o * 100)}%": speed(o, cooldown, batches, batch) for o in (0.0, 0.5, 0.99)}
        cost[f"cooldown {cooldown:g}s"] = row
        print(
            f"acquire+release, cooldown {cooldown:g}s: "
            + ", ".join(f"{k} {v:.2f} us" for k, v in row.items())
        )
        for occupancy, micros in row.items():
            targets.append(
                Target(
                    f"acquire+release at {occupancy}, cooldown {cooldown:g}s",
                    micros,
                    2.0,
                    True,
                    " us",
                )
            )
    data["acquire_release_us"] = cost

    situ = in_situ(sizes.situ_batches, sizes.situ_batch)
    data["in_situ"] = situ
    for loop_name, row in situ.items():
        print(
            f"in situ, {loop_name} pool.open_connection: {row['us_per_connection']:.2f} us "
            f"inside the table per connection (tight loop at 0%, cooldown 60s: "
            f"{cost['cooldown 60s']['0%']:.2f} us)"
        )

    spread = sizes.leases // 20  # destinations with 20 leases each
    one = memory_per_lease(1, sizes.leases)
    many = memory_per_lease(spread, 20)
    cooling, idle = memory_per_idle_destination(sizes.destinations)
    data["memory_bytes"] = {
        "leases": sizes.leases,
        "spread_destinations": spread,
        "idle_destinations": sizes.destinations,
        "per_lease_1_destination": one,
        "per_lease_spread": many,
        "per_idle_destination_cooling": cooling,
        "per_idle_destination_after_cooldown": idle,
    }
    print(
        f"memory: {one:.0f} B per lease (1 destination), {many:.0f} B "
        f"({spread} destinations); idle destination {cooling:.0f} B while "
        f"cooling, {idle:.1f} B after"
    )
    targets.append(Target("memory per live lease (worst layout)", max(one, many), 300, True, " B"))

    data["footprint"] = {}
    for label, cooldown, churn in (
        ("build-up, no churn", 60.0, False),
        ("churn, cooldown 0", 0.0, True),
        ("churn, cooldown 60s (default)", 60.0, True),
    ):
        skew = footprint(50, steps, 5_000, cooldown, churn, seed=1)
        data["footprint"][label] = skew
        print(
            f"footprint / busiest live, {label}: mean {skew['mean']:.3f}, "
            f"p95 {skew['p95']:.3f}, max {skew['max']:.3f}"
        )
        targets.append(
            Target(f"footprint / busiest destination, {label}", skew["mean"], 1.34, True)
        )
    return data, targets


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)
    data, targets = run(args.size)
    save("table", data, targets, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
