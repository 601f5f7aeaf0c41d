"""A million connections from one source IP: as many as the host allows, and how fast.

TCP needs each 4-tuple (source IP, source port, destination IP, destination port) to be
unique, not each source port: one source IP with the default 28,232-port ephemeral range
(32768-60999) can hold 28,232 connections to *each* destination. With 36 listeners that is
36 x 28,232 = 1,016,352 connections from 127.0.0.2 at once. `bind((ip, 0))`, the way
asyncio's and aiohttp's `local_addr` bind, picks the port before it knows the destination
and stops at 28,232 for all of them together (FIELD-NOTES.md).

How it runs, in a private network namespace (root; `unshare -n`, `benchmarks/_netns.py`):
- the namespace's `ip_local_port_range` is set to the range (so `Pool`'s default ports are
  it), and `somaxconn` raised so that each listener's accept queue holds a connection from
  every port: the listeners never `accept()`, so the server side costs no file descriptor;
- a process may have 20,000 open files here and cannot raise it: the connections live in
  worker processes forked from this one (`benchmarks/_fleet.py`), each with its own slice
  of the ports, `Pool([source], shard=(i, n))`, connecting to every listener until its pool
  says `PortsExhausted`; `--concurrent` of them connect at a time (default: one per core),
  each with `--tasks` connects in flight on its event loop: uvloop's by default (`--loop`),
  which a program that holds a million connections would run (on 2026-12-01, 44.3 s and
  27.9 + 56.2 us of user + system CPU per connection, against 45.3 s and 31.2 + 54.7 us on
  asyncio's loop);
- the phases, each with fresh listeners, each torn down (listeners closed, workers ended)
  before the next: `bind((ip, 0))` from 127.0.0.3 until the kernel says EADDRINUSE; the
  kernel's own connect (blocking socket + SO_REUSEADDR + bind(explicit port) + connect, no
  pool) from 127.0.0.4, to the same count through as many workers holding the same slices,
  `--concurrent` at a time: the kernel's cost per connection grows with what it already
  holds (its hash tables, each port bound once per listener), so only the same count is a
  fair floor; then bindpool.

Reported: the count held at once, the time to open them and the rate, kernel memory (the
growth of /proc/meminfo's Slab, and /proc/net/sockstat), the workers' memory (RSS and PSS
summed), and where the time went (the workers' user and system CPU, their start-up, the
parent). Memory guards: the run refuses to start when MemAvailable is below what it needs
(7.5 KiB per connection, both ends, as measured; plus the workers; with a margin), and
stops, killing every worker, when MemAvailable falls below 1 GiB while it runs. Workers die
with this process whatever ends it (PR_SET_PDEATHSIG), and their sockets with them.

    python -m benchmarks.scale [--quick | --size full|quick|tiny] [--concurrent K] [--tasks T]
                               [--listeners D] [--loop uvloop|asyncio]
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import gc
import importlib.util
import math
import os
import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import bindpool
from benchmarks import _netns
from benchmarks._common import SIZES as SIZE_NAMES
from benchmarks._common import Target, deadline, save
from benchmarks._fleet import Fleet, Job
from bindpool._host import default_ports

if TYPE_CHECKING:
    from collections.abc import Callable

SOURCE, BIND0_SOURCE, FLOOR_SOURCE = "127.0.0.2", "127.0.0.3", "127.0.0.4"
DEST = "127.0.0.1"
LISTENER_PORTS = range(20000, 32000)  # below every range used here: never an automatic pick
KERNEL_BYTES = 7.5 * 1024  # per connection, both ends: 7.3 GB for 1,016,352 (issue 10)
WORKER_BYTES = 24 << 20  # a forked worker's own memory before its sockets, with room
SOCKET_BYTES = 1024  # a worker's memory per socket it holds (the object, its list slot)
MARGIN = 1.25
FLOOR_BYTES = 1 << 30  # stop the run when MemAvailable falls below this
GiB = float(1 << 30)


@dataclass(frozen=True)
class Sizes:
    listeners: int
    ports: range  # the namespace's ephemeral range, hence the pool's default ports


SIZES = {
    "full": Sizes(36, range(32768, 61000)),
    "quick": Sizes(4, range(40000, 42000)),
    "tiny": Sizes(2, range(40000, 40300)),
}


class Stopped(RuntimeError):
    """A guard stopped the run: memory ran low, or time ran out."""


# -- /proc -------------------------------------------------------------------------------------


def meminfo() -> dict[str, int]:
    """/proc/meminfo in bytes."""
    figures = {}
    for line in Path("/proc/meminfo").read_text().splitlines():
        name, _, rest = line.partition(":")
        parts = rest.split()
        figures[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return figures


def sockstat() -> dict[str, int]:
    """/proc/net/sockstat's TCP line (this namespace): inuse, orphan, tw, alloc, mem (pages)."""
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()[1:]
            return {words[i]: int(words[i + 1]) for i in range(0, len(words), 2)}
    return {}


def process_memory(pids: list[int]) -> dict[str, int]:
    """Summed RSS and PSS (bytes) of `pids`: forked workers share pages, PSS splits them."""
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return {"rss": rss, "pss": pss}


# -- what runs in the workers ------------------------------------------------------------------


def _cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


def bindpool_job(
    index: int, count: int, dests: list[tuple[str, int]], tasks: int, loop: str
) -> Job:
    """Connect through `Pool([SOURCE], shard=(index, count))` to every listener until the
    pool says PortsExhausted for it, on `loop` ("uvloop" or "asyncio")."""

    def job(progress: Callable[[int], None]) -> tuple[dict[str, Any], object]:
        begun = time.perf_counter()
        gc.disable()  # the worker's list of sockets only grows: nothing to collect
        pool = bindpool.Pool([SOURCE], shard=(index, count))
        socks: list[socket.socket] = []
        failures: dict[str, int] = {}

        async def connect_all() -> None:
            queue = list(dests)

            async def task() -> None:
                while queue:
                    host, port = queue.pop()
                    while True:
                        try:
                            sock = await pool.connect(host, port)
                        except bindpool.PortsExhausted:
                            break
                        except OSError as exc:  # not a clash: counted, and bounded
                            name = errno.errorcode.get(exc.errno or 0, str(exc))
                            failures[name] = failures.get(name, 0) + 1
                            if sum(failures.values()) > 100:
                                raise
                            continue
                        socks.append(sock)
                        progress(len(socks))

            await asyncio.gather(*(task() for _ in range(min(tasks, len(dests)))))

        ready = time.perf_counter()
        user, system = _cpu()
        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(connect_all())
        user, system = _cpu()[0] - user, _cpu()[1] - system
        stats = pool.statistics()
        report = {
            "held": len(socks),
            "footprint": stats.footprint,
            "connects": stats.connects,
            "retries": stats.retries,
            "exhausted": stats.exhausted,
            "failures": failures,
            "startup_s": ready - begun,
            "connect_s": time.perf_counter() - ready,
            "user_s": user,
            "system_s": system,
        }
        return report, (pool, socks)

    return job


def _uvloop() -> asyncio.AbstractEventLoop:
    import uvloop  # only when asked for: it is an optional extra

    return uvloop.new_event_loop()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "uvloop": _uvloop,
    "asyncio": asyncio.new_event_loop,
}


def raw_job(
    source: str, ports: range | None, dests: list[tuple[str, int]], most: int, seconds: float
) -> Job:
    """Blocking sockets, no pool: bind((source, 0)) when `ports` is None (until the kernel
    refuses), else SO_REUSEADDR + bind((source, port)) for each port to each listener; at
    most `most` sockets, for at most `seconds`."""

    def job(progress: Callable[[int], None]) -> tuple[dict[str, Any], object]:
        gc.disable()
        socks: list[socket.socket] = []
        stopped_by = "count"
        user, system = _cpu()
        begun = time.perf_counter()
        until = time.monotonic() + seconds
        pairs = (
            ((0, dests[i % len(dests)]) for i in range(most))
            if ports is None
            else ((port, dest) for port in ports for dest in dests)
        )
        for port, dest in pairs:
            if len(socks) >= most:
                break
            if time.monotonic() > until:
                stopped_by = "time bound"
                break
            sock = socket.socket()
            try:
                if port:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((source, port))
                sock.connect(dest)
            except OSError as exc:
                sock.close()
                stopped_by = errno.errorcode.get(exc.errno or 0, str(exc))
                break
            socks.append(sock)
            progress(len(socks))
        user, system = _cpu()[0] - user, _cpu()[1] - system
        report = {
            "held": len(socks),
            "stopped_by": stopped_by,
            "connect_s": time.perf_counter() - begun,
            "user_s": user,
            "system_s": system,
        }
        return report, socks

    return job


# -- one phase: listeners, a fleet, samples, memory, teardown ----------------------------------


def listeners(count: int, backlog: int) -> list[socket.socket]:
    opened: list[socket.socket] = []
    for port in LISTENER_PORTS:
        if len(opened) == count:
            break
        listener = socket.socket()
        try:
            listener.bind((DEST, port))
        except OSError:
            listener.close()
            continue
        listener.listen(backlog)
        opened.append(listener)
    if len(opened) < count:
        raise RuntimeError(f"only {len(opened)} free listener ports in {LISTENER_PORTS}")
    return opened


def phase(
    jobs: list[Job], listening: list[socket.socket], concurrent: int, ends_by: float
) -> dict[str, Any]:
    """Run `jobs`, `concurrent` at a time; while all hold, measure; then tear down."""
    samples: list[tuple[float, int]] = []
    before = meminfo()
    parent = os.times()
    fds = [listener.fileno() for listener in listening]
    with Fleet(len(jobs), fds) as fleet:
        start = time.perf_counter()
        pending = list(jobs)
        while pending or fleet.working():
            while pending and fleet.working() < concurrent:
                fleet.start(pending.pop(0))
            fleet.poll(0.05)
            samples.append((time.perf_counter() - start, fleet.held()))
            available = meminfo()["MemAvailable"]
            if available < FLOOR_BYTES:
                raise Stopped(f"MemAvailable fell to {available / GiB:.2f} GiB: stopped")
            if time.monotonic() > ends_by:
                raise Stopped("the run's time bound passed")
        opened = time.perf_counter() - start
        samples.append((opened, fleet.held()))
        parent_cpu = sum(os.times()[:2]) - sum(parent[:2])
        after = meminfo()
        tcp = sockstat()
        processes = process_memory([worker.pid for worker in fleet.workers])
        reports = [worker.report or {} for worker in fleet.workers]
        startups = [w.reported - w.forked for w in fleet.workers]
        teardown = time.perf_counter()
        for listener in listening:  # resets every queued connection: no FIN, no TIME_WAIT
            listener.close()
        fleet.close()
    held = sum(report["held"] for report in reports)
    return {
        "held": held,
        "workers": len(reports),
        "opened_s": opened,
        "rate": held / opened if opened else 0.0,
        "teardown_s": time.perf_counter() - teardown,
        "samples": thin(samples, 400),
        "reports": reports,
        "worker_lifetime_s": sum(startups),
        "parent_cpu_s": parent_cpu,
        "slab_bytes": after["Slab"] - before["Slab"],
        "mem_available_drop_bytes": before["MemAvailable"] - after["MemAvailable"],
        "sockstat": tcp,
        "process_bytes": processes,
    }


def thin(samples: list[tuple[float, int]], most: int) -> list[tuple[float, int]]:
    step = max(1, math.ceil(len(samples) / most))
    kept = samples[::step]
    return kept if kept[-1] == samples[-1] else [*kept, samples[-1]]


# -- the run -----------------------------------------------------------------------------------


def plan(sizes: Sizes, listeners_count: int) -> tuple[int, int, int]:
    """(connections, bindpool workers, sockets a worker may hold) for the fd limit."""
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    room = limit - 200  # the interpreter's own files, the pipes, the inherited listeners
    ports = len(sizes.ports)
    workers = next(n for n in range(1, ports + 1) if math.ceil(ports / n) * listeners_count <= room)
    return ports * listeners_count, workers, room


def needed_bytes(connections: int, workers: int) -> float:
    process = workers * WORKER_BYTES + connections * SOCKET_BYTES
    return (connections * KERNEL_BYTES + process) * MARGIN + FLOOR_BYTES


def prepare(sizes: Sizes, backlog: int) -> None:
    """The namespace's range and accept-queue bound; refuses outside a private namespace."""
    low, high = sizes.ports[0], sizes.ports[-1]
    _netns.prepare(low, high, backlog)
    ports = default_ports()
    if len(ports) != len(sizes.ports):
        raise RuntimeError(f"the pool's default ports are {len(ports)}, not {len(sizes.ports)}")


def run(
    size: str,
    concurrent: int,
    tasks: int,
    listeners_count: int,
    bind0_seconds: float,
    loop: str = "uvloop",
) -> tuple[dict[str, Any], list[Target]]:
    sizes = SIZES[size]
    connections, workers, room = plan(sizes, listeners_count)
    need, available = needed_bytes(connections, workers), meminfo()["MemAvailable"]
    if available < need:
        raise SystemExit(
            f"scale: {connections:,} connections need about {need / GiB:.1f} GiB of memory "
            f"({KERNEL_BYTES / 1024:.1f} KiB per connection in the kernel, both ends, plus "
            f"{workers} workers, x{MARGIN} margin, {FLOOR_BYTES / GiB:.0f} GiB spare); "
            f"MemAvailable is {available / GiB:.1f} GiB. Try --listeners "
            f"{max(1, int(listeners_count * available / need))} or --quick."
        )
    ends_by = time.monotonic() + bind0_seconds + 900
    backlog = len(sizes.ports) + 64
    prepare(sizes, backlog)
    print(
        f"scale: {listeners_count} listeners x {len(sizes.ports):,} ports "
        f"({sizes.ports[0]}-{sizes.ports[-1]}) = {connections:,} connections from {SOURCE}; "
        f"{workers} workers, {concurrent} connecting at a time, {tasks} connects in flight "
        f"each on {loop}; MemAvailable {available / GiB:.1f} GiB, needs about {need / GiB:.1f}",
        flush=True,
    )
    data: dict[str, Any] = {
        "source": SOURCE,
        "listeners": listeners_count,
        "ports": len(sizes.ports),
        "range": [sizes.ports[0], sizes.ports[-1]],
        "expected": connections,
        "concurrent": concurrent,
        "tasks": tasks,
        "loop": loop,
        "cpus": os.cpu_count(),
        "fd_limit": room + 200,
    }

    # bind((ip, 0)): enough workers for the whole range even if each stops at its fd room.
    listening = listeners(listeners_count, backlog)
    dests = [sock.getsockname() for sock in listening]
    count = math.ceil(len(sizes.ports) / room) + 1
    data["bind0"] = phase(
        [raw_job(BIND0_SOURCE, None, dests, room, bind0_seconds) for _ in range(count)],
        listening,
        concurrent,
        ends_by,
    )
    data["bind0"]["stopped_by"] = sorted({r["stopped_by"] for r in data["bind0"]["reports"]})
    print(_line("bind((ip, 0))", data["bind0"]), flush=True)

    # The kernel's own connect, no pool, blocking: the same count, in the pools' slices.
    listening = listeners(listeners_count, backlog)
    dests = [sock.getsockname() for sock in listening]
    span = len(sizes.ports)
    slices = [sizes.ports[span * i // workers : span * (i + 1) // workers] for i in range(workers)]
    data["kernel"] = phase(
        [raw_job(FLOOR_SOURCE, part, dests, room, 300) for part in slices],
        listening,
        concurrent,
        ends_by,
    )
    print(_line("kernel's own (no pool)", data["kernel"]), flush=True)

    listening = listeners(listeners_count, backlog)
    dests = [sock.getsockname() for sock in listening]
    data["bindpool"] = phase(
        [bindpool_job(i, workers, dests, tasks, loop) for i in range(workers)],
        listening,
        concurrent,
        ends_by,
    )
    print(_line("bindpool", data["bindpool"]), flush=True)
    data["time"] = where_time_went(data["bindpool"], data["kernel"], concurrent)
    for line in describe(data):
        print(f"  {line}")

    held = data["bindpool"]["held"]
    targets = [Target("connections held at once from one source IP", held, connections, False)]
    if size == "full":
        opened = data["bindpool"]["opened_s"]
        targets.append(Target("time to open them", opened, 30.0, True, " s"))
    return data, targets


def where_time_went(
    pooled: dict[str, Any], kernel: dict[str, Any], concurrent: int
) -> dict[str, float]:
    """Per connection, in microseconds: the workers' Python (user) and kernel (system) CPU,
    against the kernel's own connect; and the wall time's shares."""
    held = max(1, pooled["held"])
    user = sum(r["user_s"] for r in pooled["reports"])
    system = sum(r["system_s"] for r in pooled["reports"])
    startup = sum(r["startup_s"] for r in pooled["reports"])
    raw = max(1, kernel["held"])
    raw_user = sum(r["user_s"] for r in kernel["reports"])
    raw_system = sum(r["system_s"] for r in kernel["reports"])
    wall = pooled["opened_s"]
    cores = os.cpu_count() or 1
    return {
        "user_us": user / held * 1e6,
        "system_us": system / held * 1e6,
        "kernel_user_us": raw_user / raw * 1e6,
        "kernel_system_us": raw_system / raw * 1e6,
        "startup_s": startup,
        "worker_cpu_s": user + system,
        "parent_cpu_s": pooled["parent_cpu_s"],
        "wall_s": wall,
        "cores": cores,
        # Of the CPU time the wall offered to the workers connecting at once (other work on
        # the host takes the rest).
        "busy": (user + system + pooled["parent_cpu_s"])
        / (wall * min(cores, concurrent, pooled["workers"])),
    }


def _line(name: str, phase_data: dict[str, Any]) -> str:
    return (
        f"  {name}: {phase_data['held']:,} held, opened in {phase_data['opened_s']:.1f} s "
        f"({phase_data['rate']:,.0f}/s) by {phase_data['workers']} workers; kernel Slab "
        f"+{phase_data['slab_bytes'] / GiB:.2f} GiB, workers RSS "
        f"{phase_data['process_bytes']['rss'] / GiB:.2f} GiB (PSS "
        f"{phase_data['process_bytes']['pss'] / GiB:.2f}); torn down in "
        f"{phase_data['teardown_s']:.1f} s"
    )


def describe(data: dict[str, Any]) -> list[str]:
    pooled, time_ = data["bindpool"], data["time"]
    held = max(1, pooled["held"])
    errors = sum(sum(r["failures"].values()) for r in pooled["reports"])
    return [
        f"bindpool: {pooled['held']:,} of {data['expected']:,} held, {errors} errors, "
        f"{sum(r['retries'] for r in pooled['reports'])} retries; bind((ip, 0)): "
        f"{data['bind0']['held']:,} (stopped by {', '.join(data['bind0']['stopped_by'])})",
        f"kernel memory: Slab +{pooled['slab_bytes'] / held:.0f} B per connection (both ends); "
        f"sockstat TCP inuse {pooled['sockstat'].get('inuse', 0):,}, mem "
        f"{pooled['sockstat'].get('mem', 0)} pages",
        f"time: worker CPU {time_['user_us']:.1f} us user + {time_['system_us']:.1f} us system "
        f"per connection (the kernel's own connect: {time_['kernel_user_us']:.1f} + "
        f"{time_['kernel_system_us']:.1f}); start-up {time_['startup_s']:.2f} s in all; "
        f"parent {time_['parent_cpu_s']:.1f} s; cores busy {time_['busy']:.0%} of the wall",
    ]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="4 listeners x 2000 ports")
    parser.add_argument("--size", choices=SIZE_NAMES, help="full (default), quick or tiny")
    parser.add_argument("--results", type=Path, help="directory for the JSON results")
    parser.add_argument("--concurrent", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--tasks", type=int, default=8, help="connects in flight per worker")
    parser.add_argument("--listeners", type=int, help="override the size's listener count")
    parser.add_argument(
        "--loop",
        choices=sorted(LOOPS),
        default="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        help="the bindpool workers' event loop (default: uvloop when installed)",
    )
    parser.add_argument(
        "--bind0-seconds",
        type=float,
        default=300,
        help="time bound of the bind((ip, 0)) phase: near its wall each bind scans the "
        "range, and the last thousands take minutes",
    )
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    if not _netns.inside():
        if not _netns.available():
            raise SystemExit(
                "scale needs a private network namespace (root and unshare(1)): it raises "
                "somaxconn and sets the ephemeral range, which it never does to the host"
            )
        return _netns.reexec("benchmarks.scale", argv)
    deadline(
        int(args.bind0_seconds) + 1500
    )  # SIGALRM ends this process; the workers die with it (PR_SET_PDEATHSIG)
    listeners_count = args.listeners or SIZES[size].listeners
    data, targets = run(
        size, args.concurrent, args.tasks, listeners_count, args.bind0_seconds, args.loop
    )
    save("scale", data, targets, args.results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
