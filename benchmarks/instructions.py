"""User-space instructions per connection through bindpool and the paths it replaces.

`benchmarks/throughput.py` measures client CPU per connection with `time.process_time()`;
on a shared 2-core machine its A/A control spreads about ±10%, so it cannot tell a change
of ±5%. There are no hardware counters here (`perf stat -e instructions`: not supported),
but valgrind counts the instructions a process executes, and the count is deterministic:
two repeats agree to well under 1%. So this counts them:

- the methods are throughput.py's own (`openers()`, `make_pools()`, `COMPARISONS`): plain,
  each bindpool path and each floor, on asyncio and uvloop; no A/A twin, since the count
  needs none: the spread of the repeats says how exact it is;
- each (loop, method) runs in a child process under
  `valgrind --tool=cachegrind --cache-sim=no`, which opens COUNT connections, 10 at a
  time, each open, then `close()` + `wait_closed()`; the pools' leases are checked back
  afterwards (in_use 0, `connects` == COUNT), so a broken path cannot look cheap;
- each child runs at a small and a large COUNT; instructions per connection is
  (I refs(large) - I refs(small)) ÷ (large - small), which cancels start-up, imports and
  every other fixed cost, and the pools start alike in both (what is left varies a little
  with the counts themselves, a few percent: compare figures taken at the same size);
- the peer (`benchmarks/peer.py`, a uvloop server) runs in its own process, never under
  valgrind; when root may make one, each child and its peer get a fresh private network
  namespace, so no child meets another's TIME_WAIT sockets (a refused port would cost a
  retry in one run and not the other); PYTHONHASHSEED is fixed.

Layer by layer (uvloop's native path, full and quick sizes): `leased` is the floor with the
connection made on `LeasedStreamProtocol` (the lease's carrier there), `tabled` adds a
`PortTable` that picks each port and takes it back on close, and `bindpool` adds the pool
and its dialer; the differences say what each layer of bindpool costs.

What it leaves out: the kernel. valgrind counts user-space instructions only, and system
time is not instructions it sees. On uvloop's native path bindpool and its floor make the
same syscalls, so their difference is bindpool's own code; elsewhere a path that makes more
syscalls costs more than its count says. It is an instrument beside throughput.py's CPU
figures, not a target: it sets none.

    python -m benchmarks.instructions [--quick | --size full|quick|tiny]
                                      [--mode auto|namespace|host]
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shutil
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks import _netns, throughput
from benchmarks._common import arguments, deadline, median, peer, save
from bindpool._protocol import LeasedStreamProtocol
from bindpool._table import PortTable

if TYPE_CHECKING:
    from bindpool._claim import Claim

ROOT = Path(__file__).parent.parent
CONCURRENCY = 10
VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
CHILD = "--child"  # internal: the process valgrind runs


@dataclass(frozen=True)
class Sizes:
    counts: tuple[int, int]  # connections in the small and the large run
    repeats: int
    comparisons: tuple[str, ...] = ()  # only these COMPARISONS' labels; () for all
    layers: bool = True  # also count LAYERS' middle steps


SIZES = {
    "full": Sizes((200, 1200), 2),
    "quick": Sizes((100, 600), 1),
    "tiny": Sizes((20, 60), 1, ("uvloop pool.open_connection (table)",), layers=False),
}
# uvloop's native path from its floor to bindpool, one layer of bindpool added at each step.
LAYERS = ("floor_explicit", "leased", "tabled", "bindpool")
LAYER_SOURCES = {"leased": "127.0.0.68", "tabled": "127.0.0.69"}


def comparisons(sizes: Sizes) -> list[throughput.Comparison]:
    """throughput.py's comparisons this size measures."""
    wanted = sizes.comparisons or tuple(c.label for c in throughput.COMPARISONS)
    return [c for c in throughput.COMPARISONS if c.label in wanted]


def methods(loop_name: str, sizes: Sizes) -> list[str]:
    """A loop's methods: plain, then each comparison's bindpool path and floor."""
    names = ["plain"]
    for comparison in comparisons(sizes):
        if comparison.loop == loop_name:
            names += [comparison.pooled, comparison.floor]
    if sizes.layers and loop_name == "uvloop":
        names += [name for name in LAYERS if name not in names]
    return names if len(names) > 1 else []


class _Owner:
    """What a `LeasedStreamProtocol` gives its claim back to, here straight to the table."""

    def __init__(self, table: PortTable) -> None:
        self.table = table

    def _give_back(self, claim: Claim) -> None:
        self.table.release(claim)


def layer_openers(port: int, table: PortTable) -> dict[str, throughput.Opener]:
    """The floor with bindpool's layers added one at a time, no pool (see LAYERS)."""
    cycle = itertools.cycle(throughput.EXPLICIT_PORTS)
    owner = _Owner(table)
    key = (throughput.DEST, port)

    async def leased() -> throughput.Streams:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = LeasedStreamProtocol(reader, loop=loop)
        local = (LAYER_SOURCES["leased"], next(cycle))
        transport, _ = await loop.create_connection(protocol, *key, local_addr=local)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def tabled() -> throughput.Streams:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = LeasedStreamProtocol(reader, loop=loop)
        claim = table.acquire(key, socket.AF_INET)
        assert claim is not None
        try:
            local = (claim.source, claim.port)
            transport, _ = await loop.create_connection(protocol, *key, local_addr=local)
        except BaseException:
            table.release(claim)
            raise
        protocol._adopt(claim, owner)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    return {"leased": leased, "tabled": tabled}


# -- the child, under valgrind -----------------------------------------------------------------


async def connections(loop_name: str, method: str, count: int, port: int) -> None:
    """`count` connections through `method`, CONCURRENCY at a time; then the leases checked."""
    pools = throughput.make_pools(loop_name)
    table = PortTable({LAYER_SOURCES["tabled"]: throughput.PORTS}, cooldown=60.0)
    openers = throughput.openers(loop_name, port, pools) | layer_openers(port, table)
    open_one = openers[method]

    async def worker(n: int) -> None:
        for _ in range(n):
            _, writer = await open_one()
            writer.close()
            await writer.wait_closed()

    assert count % CONCURRENCY == 0, count
    await asyncio.gather(*(worker(count // CONCURRENCY) for _ in range(CONCURRENCY)))
    await asyncio.sleep(0.1)  # transports finish closing; sockets release their leases
    for name, pool in pools.items():
        stats = pool.statistics()
        assert stats.in_use == 0, f"{name}: leases left: {stats}"
        assert stats.connects == (count if name == method else 0), (name, stats)
    assert sum(s.in_use for s in table.statistics().values()) == 0, "tabled: leases left"


def child(argv: list[str]) -> int:
    loop_name, method, count, port = argv
    with asyncio.Runner(loop_factory=throughput.LOOPS[loop_name]) as runner:
        runner.run(connections(loop_name, method, int(count), int(port)))
    return 0


# -- the parent --------------------------------------------------------------------------------


def refs(stderr: str) -> int:
    """The "I refs" valgrind's cachegrind prints at exit: instructions executed."""
    found = re.search(r"I\s+refs:\s+([\d,]+)", stderr)
    if found is None:
        raise RuntimeError(f"no 'I refs' in valgrind's output:\n{stderr[-2000:]}")
    return int(found.group(1).replace(",", ""))


def count_instructions(loop_name: str, method: str, count: int) -> int:
    """I refs of one child opening `count` connections; a fresh namespace and peer if in one."""
    if _netns.inside():
        _netns.renew()
    with peer(throughput.DEST) as port:
        command = [*VALGRIND, sys.executable, "-m", "benchmarks.instructions", CHILD]
        command += [loop_name, method, str(count), str(port)]
        done = subprocess.run(
            command,
            cwd=ROOT,
            env=os.environ | {"PYTHONHASHSEED": "0"},
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        raise RuntimeError(f"{loop_name} {method} x{count} failed:\n{done.stderr[-3000:]}")
    return refs(done.stderr)


def per_connection(small: int, large: int, counts: tuple[int, int]) -> float:
    """Instructions per connection: the difference of two runs over the difference of counts."""
    return (large - small) / (counts[1] - counts[0])


def measure(loop_name: str, method: str, sizes: Sizes) -> dict[str, Any]:
    runs: dict[str, list[int]] = {"small": [], "large": []}
    figures = []
    for _ in range(sizes.repeats):
        small, large = (count_instructions(loop_name, method, n) for n in sizes.counts)
        runs["small"].append(small)
        runs["large"].append(large)
        figures.append(per_connection(small, large, sizes.counts))
    middle = median(figures)
    return {
        "median": middle,
        "min": min(figures),
        "max": max(figures),
        "spread": (max(figures) - min(figures)) / middle,
        "repeats": figures,
        "refs": runs,
    }


def compare(
    measured: dict[str, dict[str, Any]], comparison: throughput.Comparison
) -> dict[str, Any]:
    """Ratios of the medians (above 1: bindpool runs fewer instructions), and bindpool's own."""
    plain, pooled, floor = (
        measured[name]["median"] for name in ("plain", comparison.pooled, comparison.floor)
    )
    return {
        "loop": comparison.loop,
        "bindpool": comparison.pooled,
        "floor": comparison.floor,
        "plain_over_bindpool": plain / pooled,
        "plain_over_floor": plain / floor,
        "floor_over_bindpool": floor / pooled,
        "bindpool_own": pooled - floor,
    }


def layers(measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """What each layer adds to the one before it (LAYERS), in instructions per connection."""
    steps = [name for name in LAYERS if name in measured]
    return [
        {
            "layer": name,
            "instructions": measured[name]["median"],
            "adds": measured[name]["median"] - measured[before]["median"],
        }
        for before, name in itertools.pairwise(steps)
    ]


def valgrind_version() -> str:
    done = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip()


def run(size: str) -> dict[str, Any]:
    sizes = SIZES[size]
    if shutil.which("valgrind") is None:
        reason = "valgrind is not installed (apt-get install valgrind): nothing counted"
        print(f"instructions: skipped, {reason}")
        return {"skipped": reason}
    where = (
        "a fresh private network namespace (unshare -n) per child, loopback"
        if _netns.inside()
        else "the host's network namespace, loopback"
    )
    data: dict[str, Any] = {
        "counts": list(sizes.counts),
        "repeats": sizes.repeats,
        "concurrency": CONCURRENCY,
        "network": where,
        "valgrind": valgrind_version(),
        "methods": {},
        "comparisons": {},
    }
    print(
        f"instructions: user-space instructions per connection under {data['valgrind']} "
        f"cachegrind, (I refs({sizes.counts[1]}) - I refs({sizes.counts[0]})) ÷ "
        f"{sizes.counts[1] - sizes.counts[0]}, {sizes.repeats} repeat(s), concurrency "
        f"{CONCURRENCY}; {where}",
        flush=True,
    )
    for loop_name in throughput.LOOPS:
        names = methods(loop_name, sizes)
        if not names:
            continue
        measured = data["methods"][loop_name] = {}
        for name in names:
            row = measured[name] = measure(loop_name, name, sizes)
            print(
                f"  {loop_name:<8} {name:<16} {row['median'] / 1000:7.1f}k instructions per "
                f"connection (min-max {row['min'] / 1000:.1f}k-{row['max'] / 1000:.1f}k)",
                flush=True,
            )
        for comparison in comparisons(sizes):
            if comparison.loop != loop_name:
                continue
            row = data["comparisons"][comparison.label] = compare(measured, comparison)
            print(
                f"  {comparison.label}: plain ÷ bindpool {row['plain_over_bindpool']:.3f}; "
                f"floor ÷ bindpool {row['floor_over_bindpool']:.3f}; plain ÷ floor "
                f"{row['plain_over_floor']:.3f}; bindpool's own "
                f"{row['bindpool_own'] / 1000:.1f}k instructions per connection",
                flush=True,
            )
        if loop_name == "uvloop" and sizes.layers:
            steps = data["layers"] = layers(measured)
            print(
                "  uvloop native path, layer by layer: "
                + "; ".join(f"{row['layer']} +{row['adds'] / 1000:.1f}k" for row in steps),
                flush=True,
            )
    if sizes.repeats > 1:
        spreads = [row["spread"] for rows in data["methods"].values() for row in rows.values()]
        print(f"  largest spread between repeats: {max(spreads):.2%} of the median")
    return data


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CHILD]:
        return child(argv[1:])
    args = arguments(__doc__, argv, modes=("namespace", "host"))
    mode = _netns.choose(_netns.OPTION if args.mode == "host" else args.mode)
    if mode == _netns.NAMESPACE and not _netns.inside():
        return _netns.reexec("benchmarks.instructions", argv)
    deadline(900)
    save("instructions", run(args.size), [], args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
