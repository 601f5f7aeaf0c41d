"""Client CPU per connection through bindpool against the paths it replaces, in one run.

The headline is CPU, not rate: `time.process_time()` in the client process around a batch
of connections (open, then close), divided by the batch. Connection *rates* on these
shared 2-core machines moved by 15% between runs of the same code; client CPU per
connection, interleaved over >= 12 rounds against a server faster than the client, held
within about ±4% (FIELD-NOTES.md). So:

- the server is `benchmarks/peer.py`, a bare uvloop protocol in its own process: a server
  slower than the client makes the client wait, and the wait hides the client's own cost;
- every method runs one batch per round, in an order that rotates by one each round, so
  drift and neighbours' load hit them alike;
- each comparison is a ratio per round (the two batches of one round are paired), and the
  figure is the median over the rounds with its spread (quartiles and min-max);
- an A/A control runs plain against itself: its spread is the instrument's.

Ratios read as in issue 10: "plain ÷ bindpool" is plain's CPU per connection over
bindpool's, so above 1 means bindpool is cheaper than plain. Each bindpool path also has
its floor, the same path with no pool at all, in the same rounds:

- uvloop open_connection: `pool.open_connection` (table: uvloop's native connect); floor
  `loop.create_connection(local_addr=(ip, explicit_port))` + streams.
- uvloop sock=: `pool.connect` + `open_connection(sock=)`; floor a non-blocking socket,
  SO_REUSEADDR, bind (ip, explicit_port), connect_ex + wait for writability, `sock=`.
- uvloop kernel: `pool.open_connection` with strategy "kernel"; floor a non-blocking socket,
  IP_BIND_ADDRESS_NO_PORT + IP_LOCAL_PORT_RANGE, bind (ip, 0), connect_ex + wait, `sock=`.
- asyncio open_connection: `pool.open_connection` (a socket handed over); floor the same
  hand-written explicit-port connect as uvloop's sock= floor.

"plain" is `asyncio.open_connection(host, port)` with no source binding. Each method has
its own source IP, so none meets another's 4-tuples or TIME_WAIT sockets. When root may
make one, each loop's rounds run in a fresh private network namespace (loopback only, no
setting changed), so other work on the host stays out of the kernel's tables.

    python -m benchmarks.throughput [--quick] [--mode auto|namespace|host]
"""

from __future__ import annotations

import asyncio
import errno
import gc
import itertools
import socket
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import uvloop

import bindpool
from benchmarks import _netns
from benchmarks._common import Target, arguments, deadline, median, peer, save
from bindpool._host import IP_BIND_ADDRESS_NO_PORT, ephemeral_range, set_local_port_range

DEST = "127.0.0.1"
# One source IP per method and loop (asyncio 127.0.0.5x, uvloop 127.0.0.6x).
SOURCES = {
    "asyncio": {"bindpool": "127.0.0.52", "floor_sock": "127.0.0.53"},
    "uvloop": {
        "bindpool": "127.0.0.62",
        "floor_explicit": "127.0.0.63",
        "bindpool_sock": "127.0.0.64",
        "floor_sock": "127.0.0.65",
        "bindpool_kernel": "127.0.0.66",
        "floor_kernel": "127.0.0.67",
    },
}
PORTS = range(20000, 30000)  # strategy "table": below the ephemeral range, as a reserved block
EXPLICIT_PORTS = range(10000, 20000)  # the floors' explicit ports: as many, cycled


@dataclass(frozen=True)
class Comparison:
    """bindpool's `pooled` method against plain and against its `floor`, on `loop`."""

    label: str
    loop: str
    pooled: str
    floor: str
    bound: float  # the target for plain ÷ bindpool (issue 10)


COMPARISONS = (
    Comparison("uvloop pool.open_connection (table)", "uvloop", "bindpool", "floor_explicit", 0.85),
    Comparison("uvloop pool.connect + sock=", "uvloop", "bindpool_sock", "floor_sock", 0.80),
    Comparison("uvloop strategy kernel", "uvloop", "bindpool_kernel", "floor_kernel", 0.75),
    Comparison("asyncio pool.open_connection", "asyncio", "bindpool", "floor_sock", 1.15),
)
CONTROL = "plain_again"  # the A/A control: plain, under another name
LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


@dataclass(frozen=True)
class Sizes:
    connections: int  # per method per round
    rounds: int
    concurrency: int


SIZES = {
    "full": Sizes(3000, 16, 50),
    "quick": Sizes(800, 12, 50),
    "tiny": Sizes(60, 2, 6),
}
Streams = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Opener = Callable[[], Awaitable[Streams]]


def methods(loop: str) -> list[str]:
    """Every method a loop's rounds run: plain, its A/A twin, then bindpool's and floors."""
    names = ["plain", CONTROL]
    for comparison in COMPARISONS:
        if comparison.loop == loop:
            names += [comparison.pooled, comparison.floor]
    return names


# -- the floors: the same paths with no pool ---------------------------------------------------


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


async def _connect(sock: socket.socket, address: tuple[str, int]) -> None:
    """connect_ex, then wait for writability on the running loop, then SO_ERROR."""
    code = sock.connect_ex(address)
    if code == errno.EINPROGRESS:
        loop = asyncio.get_running_loop()
        waiter = loop.create_future()
        loop.add_writer(sock.fileno(), _wake, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(sock.fileno())
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if code:
        raise OSError(code, f"connect to {address}: {errno.errorcode.get(code, code)}")


async def explicit_socket(
    source: str, ports: itertools.cycle[int], address: tuple[str, int]
) -> socket.socket:
    """strategy "table" without the table: SO_REUSEADDR, bind the next port of a cycle.

    A port in use elsewhere on the host (another program's listener) moves on, as a clash
    does in the pool; a few in a row mean something else is wrong.
    """
    for _ in range(8):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((source, next(ports)))
            await _connect(sock, address)
        except OSError as exc:
            sock.close()
            if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
                continue
            raise
        except BaseException:
            sock.close()
            raise
        return sock
    raise OSError(errno.EADDRNOTAVAIL, f"8 explicit ports in a row refused from {source}")


async def no_port_socket(source: str, span: range, address: tuple[str, int]) -> socket.socket:
    """strategy "kernel" without the ledger: NO_PORT + IP_LOCAL_PORT_RANGE, bind (ip, 0)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
    try:
        sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        set_local_port_range(sock, span[0], span[-1])
        sock.bind((source, 0))
        await _connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock


# -- one loop's rounds -------------------------------------------------------------------------


def openers(loop_name: str, port: int, pools: dict[str, bindpool.Pool]) -> dict[str, Opener]:
    sources = SOURCES[loop_name]
    address = (DEST, port)
    cycles = {name: itertools.cycle(EXPLICIT_PORTS) for name in ("floor_explicit", "floor_sock")}
    span = ephemeral_range()

    async def plain() -> Streams:
        return await asyncio.open_connection(DEST, port)

    async def floor_explicit() -> Streams:
        # What bindpool's native path asks of libuv, without the pool (libuv sets
        # SO_REUSEADDR itself; asyncio's local_addr does not, so uvloop only).
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        local = (sources["floor_explicit"], next(cycles["floor_explicit"]))
        transport, _ = await loop.create_connection(lambda: protocol, DEST, port, local_addr=local)
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def floor_sock() -> Streams:
        sock = await explicit_socket(sources["floor_sock"], cycles["floor_sock"], address)
        return await asyncio.open_connection(sock=sock)

    async def floor_kernel() -> Streams:
        sock = await no_port_socket(sources["floor_kernel"], span, address)
        return await asyncio.open_connection(sock=sock)

    async def bindpool_open() -> Streams:
        return await pools["bindpool"].open_connection(DEST, port)

    async def bindpool_sock() -> Streams:
        return await asyncio.open_connection(sock=await pools["bindpool_sock"].connect(DEST, port))

    async def bindpool_kernel() -> Streams:
        return await pools["bindpool_kernel"].open_connection(DEST, port)

    return {
        "plain": plain,
        CONTROL: plain,
        "floor_explicit": floor_explicit,
        "floor_sock": floor_sock,
        "floor_kernel": floor_kernel,
        "bindpool": bindpool_open,
        "bindpool_sock": bindpool_sock,
        "bindpool_kernel": bindpool_kernel,
    }


def make_pools(loop_name: str) -> dict[str, bindpool.Pool]:
    sources = SOURCES[loop_name]
    pools = {"bindpool": bindpool.Pool([sources["bindpool"]], ports=PORTS)}
    if "bindpool_sock" in sources:
        pools["bindpool_sock"] = bindpool.Pool([sources["bindpool_sock"]], ports=PORTS)
    if "bindpool_kernel" in sources:
        pools["bindpool_kernel"] = bindpool.Pool([sources["bindpool_kernel"]], strategy="kernel")
    return pools


async def batch(open_one: Opener, count: int, concurrency: int) -> tuple[float, float]:
    """Open and close `count` connections, `concurrency` at a time: (CPU us per connection
    in this process, connections per second of wall time)."""

    async def worker(n: int) -> None:
        for _ in range(n):
            _, writer = await open_one()
            writer.close()
            await writer.wait_closed()

    per_worker = count // concurrency
    done = per_worker * concurrency
    gc.collect()  # each batch starts with the collector in the same state
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(per_worker) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return cpu / done * 1e6, done / wall


async def rounds(loop_name: str, port: int, sizes: Sizes) -> dict[str, dict[str, list[float]]]:
    """Every method once per round, the order rotating by one each round."""
    names = methods(loop_name)
    pools = make_pools(loop_name)
    open_by = openers(loop_name, port, pools)
    figures: dict[str, dict[str, list[float]]] = {n: {"cpu_us": [], "rate": []} for n in names}
    for name in names:  # warm-up: every path once, untimed
        await batch(open_by[name], sizes.concurrency, sizes.concurrency)
    for index in range(sizes.rounds):
        turn = index % len(names)
        for name in names[turn:] + names[:turn]:
            cpu, rate = await batch(open_by[name], sizes.connections, sizes.concurrency)
            figures[name]["cpu_us"].append(cpu)
            figures[name]["rate"].append(rate)
    await asyncio.sleep(0.1)  # transports finish closing; sockets release their leases
    per_method = (sizes.connections // sizes.concurrency) * sizes.concurrency
    for name, pool in pools.items():  # correctness, outside the timed batches
        stats = pool.statistics()
        assert stats.in_use == 0, f"{name}: leases left: {stats}"
        assert stats.connects == sizes.rounds * per_method + sizes.concurrency, (name, stats)
    return figures


def phase(loop_name: str, sizes: Sizes) -> dict[str, dict[str, list[float]]]:
    """One loop's rounds: a fresh namespace if this runs in one, a server, the rounds."""
    if _netns.inside():
        _netns.renew()
    with peer(DEST) as port, asyncio.Runner(loop_factory=LOOPS[loop_name]) as runner:
        return runner.run(rounds(loop_name, port, sizes))


# -- what the rounds say -----------------------------------------------------------------------


def spread(values: list[float]) -> dict[str, float]:
    """Median, quartiles, min and max."""
    ordered = sorted(values)
    if len(ordered) >= 2:
        q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
    else:
        q1 = q3 = ordered[0]
    return {"median": median(ordered), "q1": q1, "q3": q3, "min": ordered[0], "max": ordered[-1]}


def paired(numerator: list[float], denominator: list[float]) -> dict[str, float]:
    """The spread of per-round ratios numerator[i] / denominator[i]."""
    return spread([a / b for a, b in zip(numerator, denominator, strict=True)])


def _show(figure: dict[str, float]) -> str:
    return (
        f"{figure['median']:.3f} (IQR {figure['q1']:.3f}-{figure['q3']:.3f}, "
        f"min-max {figure['min']:.3f}-{figure['max']:.3f})"
    )


def run(size: str) -> tuple[dict[str, Any], list[Target]]:
    sizes = SIZES[size]
    namespaced = _netns.inside()
    where = (
        "a fresh private network namespace (unshare -n) per loop, loopback"
        if namespaced
        else "the host's network namespace, loopback"
    )
    data: dict[str, Any] = {
        "connections": sizes.connections,
        "concurrency": sizes.concurrency,
        "rounds": sizes.rounds,
        "network": where,
        "methods": {},
        "comparisons": {},
    }
    print(
        f"throughput: client CPU per connection, {sizes.connections} connections per method "
        f"per round, {sizes.rounds} rotating rounds, concurrency {sizes.concurrency}; {where}"
    )
    targets = []
    for loop_name in LOOPS:
        figures = phase(loop_name, sizes)
        cpu = {name: values["cpu_us"] for name, values in figures.items()}
        data["methods"][loop_name] = {
            name: {"cpu_us": spread(values["cpu_us"]), "rate": spread(values["rate"])}
            for name, values in figures.items()
        }
        for name, row in data["methods"][loop_name].items():
            print(
                f"  {loop_name:<8} {name:<16} {row['cpu_us']['median']:6.1f} us CPU per "
                f"connection, {row['rate']['median']:7.0f} connections/s"
            )
        control = paired(cpu["plain"], cpu[CONTROL])
        data["comparisons"][f"{loop_name} A/A control (plain ÷ plain)"] = {
            "loop": loop_name,
            "plain_over_bindpool": control,
        }
        print(f"  {loop_name} A/A control, plain ÷ plain: {_show(control)}")
        for comparison in COMPARISONS:
            if comparison.loop != loop_name:
                continue
            row = {
                "loop": loop_name,
                "bindpool": comparison.pooled,
                "floor": comparison.floor,
                "bound": comparison.bound,
                "plain_over_bindpool": paired(cpu["plain"], cpu[comparison.pooled]),
                "plain_over_floor": paired(cpu["plain"], cpu[comparison.floor]),
                "floor_over_bindpool": paired(cpu[comparison.floor], cpu[comparison.pooled]),
            }
            data["comparisons"][comparison.label] = row
            print(
                f"  {comparison.label}: plain ÷ bindpool {_show(row['plain_over_bindpool'])}; "
                f"plain ÷ floor {row['plain_over_floor']['median']:.3f}; floor ÷ bindpool "
                f"{row['floor_over_bindpool']['median']:.3f}"
            )
            targets.append(
                Target(
                    f"CPU per connection, plain ÷ bindpool: {comparison.label}",
                    row["plain_over_bindpool"]["median"],
                    comparison.bound,
                    False,
                )
            )
    return data, targets


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(__doc__, argv, modes=("namespace", "host"))
    mode = _netns.choose(_netns.OPTION if args.mode == "host" else args.mode)
    if mode == _netns.NAMESPACE and not _netns.inside():
        return _netns.reexec("benchmarks.throughput", argv)
    deadline(900)
    data, targets = run(args.size)
    save("throughput", data, targets, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
