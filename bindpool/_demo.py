"""`bindpool demo`: the source-port wall and its removal, on loopback, without root.

Phase 1 opens connections the way asyncio's and aiohttp's `local_addr` does: `bind((ip, 0))`
then `connect()`. The kernel's pick is narrowed to a small block of its ephemeral range
with the per-socket IP_LOCAL_PORT_RANGE option (Linux >= 6.3), so the wall shows after a
few hundred connections instead of 28,000 and without touching any sysctl. Phase 2 opens
connections through a bindpool `Pool` on the same block. Listeners never `accept()`: each
connection waits in their queue, which costs the demo no file descriptor on that side.

Each phase ends with an abortive close (SO_LINGER 0: the kernel sends RST and keeps no
FIN_WAIT2/TIME_WAIT), so phase 1's sockets, bound without SO_REUSEADDR as `local_addr`
binds them, do not keep their ports from phase 2, and each phase has listeners of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import resource
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from bindpool import _config, _host
from bindpool._errors import ConfigurationError, PortsExhausted
from bindpool._pool import Pool

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = ["DemoResult", "Phase", "Progress", "block", "check", "check_source", "run"]

_LINGER_ZERO = struct.pack("ii", 1, 0)


class Progress(Protocol):
    """Where the demo reports progress: a progress bar, or nothing."""

    def start(self, label: str, total: int) -> None: ...

    def advance(self) -> None: ...

    def stop(self) -> None: ...


@dataclass(frozen=True)
class Phase:
    """How far one way of opening connections got, and what stopped it."""

    name: str
    opened: int
    stopped_by: str


@dataclass(frozen=True)
class DemoResult:
    source: str
    ports: range
    destinations: int
    local_addr: Phase | None  # None where the kernel lacks IP_LOCAL_PORT_RANGE
    bindpool: Phase
    note: str = ""

    @property
    def target(self) -> int:
        return len(self.ports) * self.destinations

    @property
    def ok(self) -> bool:
        return self.bindpool.opened == self.target


def block(size: int, source: str) -> range:
    """`size` ports of the ephemeral range (IP_LOCAL_PORT_RANGE cannot widen it) that nobody
    holds on `source` now, from the top down; the least used block if none is free.

    A port another socket holds (a listener, a connection, a TIME_WAIT left by a test run)
    would take from both phases alike and keep bindpool from range x destinations.
    """
    if size < 1:
        raise ValueError(f"--ports must be at least 1, not {size}")
    ipaddress.ip_address(source)  # a name would be resolved once per port tried: refuse it
    ephemeral = _host.ephemeral_range()
    if size > len(ephemeral):
        raise ValueError(_too_big(size, ephemeral))
    family, _ = _family(source)
    best, fewest = range(ephemeral.stop - size, ephemeral.stop), size + 1
    for stop in range(ephemeral.stop, ephemeral.start + size - 1, -size):
        candidate = range(stop - size, stop)
        used = sum(not _free(source, family, port) for port in candidate)
        if used < fewest:
            best, fewest = candidate, used
        if not used:
            break
    return best


def _too_big(size: int, ephemeral: range) -> str:
    return f"--ports {size} exceeds the ephemeral range {ephemeral.start}-{ephemeral.stop - 1}"


def _free(source: str, family: int, port: int) -> bool:
    """Nothing holds `port` on `source`: a bind without SO_REUSEADDR works (and leaves
    nothing behind, for the socket never connects)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((source, port))
        except OSError:
            return False
    return True


def check(ports: int, destinations: int) -> list[str]:
    """What keeps this host from running the demo at this size, in words; empty if nothing."""
    problems = []
    if ports < 1 or destinations < 1:
        problems.append("--ports and --destinations must be at least 1")
        return problems
    ephemeral = _host.ephemeral_range()
    if ports > len(ephemeral):
        problems.append(_too_big(ports, ephemeral))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = ports * destinations + 2 * destinations + 64
    if soft != resource.RLIM_INFINITY and needed > soft:
        problems.append(
            f"{ports} x {destinations} connections need ~{needed} file descriptors; the "
            f"limit is {soft} (ulimit -n): use fewer --ports or --destinations"
        )
    somaxconn = int(_host.sysctl("net.core.somaxconn") or 4096)
    if ports > somaxconn:
        problems.append(
            f"each listener must queue {ports} connections, but net.core.somaxconn is "
            f"{somaxconn}: use --ports {somaxconn} or less"
        )
    return problems


def check_source(source: str) -> list[str]:
    """What keeps `source` from being the demo's source IP, in words; empty if nothing.

    The demo runs on loopback, so the hint names the loopback address of the source's family.
    """
    try:
        address = ipaddress.ip_address(source)
    except ValueError:
        return [
            f"--source {source!r} is not an IP address: give a numeric local IP, such as "
            "127.0.0.2 (any 127.x.y.z) or ::1"
        ]
    loopback = "::1" if address.version == 6 else "127.0.0.2 (any 127.x.y.z)"
    family, _ = _family(source)
    if not address.is_multicast and not _host.is_local(source, family):
        return [
            f"source {source!r} is not an address of this host: the demo runs on "
            f"loopback, use --source {loopback}"
        ]
    try:
        _config.check_sources([source])
    except ConfigurationError as exc:
        return [str(exc)]
    return []


def _family(source: str) -> tuple[int, str]:
    return (socket.AF_INET6, "::1") if ":" in source else (socket.AF_INET, "127.0.0.1")


@contextlib.contextmanager
def _listeners(count: int, backlog: int, family: int, host: str) -> Iterator[list[tuple[str, int]]]:
    opened = []
    try:
        for _ in range(count):
            listener = socket.socket(family, socket.SOCK_STREAM)
            opened.append(listener)
            listener.bind((host, 0))
            listener.listen(backlog)
        yield [sock.getsockname()[:2] for sock in opened]
    finally:
        for listener in opened:
            listener.close()


def _reset_all(socks: list[socket.socket]) -> None:
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ZERO)
        sock.close()
    socks.clear()


def _kernel_pick(
    source: str, ports: range, listeners: list[tuple[str, int]], progress: Progress
) -> Phase:
    """Phase 1: bind((source, 0)) narrowed to `ports`, then connect, until the kernel refuses."""
    family, _ = _family(source)
    socks: list[socket.socket] = []
    total = len(ports) * len(listeners)
    stopped_by = "every connection asked for was opened"
    progress.start("local_addr: bind((ip, 0)), then connect", total)
    try:
        for n in range(total):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                _host.set_local_port_range(sock, ports.start, ports.stop - 1)
                sock.bind((source, 0))
                sock.settimeout(5)
                sock.connect(listeners[n % len(listeners)])
            except OSError as exc:
                sock.close()
                code = errno.errorcode.get(exc.errno or 0, "?")
                stopped_by = f"{code}: {exc.strerror}"
                break
            socks.append(sock)
            progress.advance()
        return Phase("local_addr", len(socks), stopped_by)
    finally:
        progress.stop()
        _reset_all(socks)


async def _pool_pick(
    source: str, ports: range, listeners: list[tuple[str, int]], progress: Progress
) -> Phase:
    """Phase 2: the same block through a Pool, round-robin over the listeners."""
    socks: list[socket.socket] = []
    total = len(ports) * len(listeners)
    stopped_by = "every connection asked for was opened"
    progress.start("bindpool: a port chosen per destination", total)
    pool = Pool([source], ports=ports)
    try:
        for n in range(total):
            try:
                socks.append(await pool.connect(*listeners[n % len(listeners)], timeout=5))
            except (PortsExhausted, OSError) as exc:
                code = errno.errorcode.get(exc.errno or 0, type(exc).__name__)
                stopped_by = f"{code}: {exc.strerror or exc}"
                break
            progress.advance()
        return Phase("bindpool", len(socks), stopped_by)
    finally:
        progress.stop()
        _reset_all(socks)
        await pool.aclose()


def run(source: str, chosen: range, destinations: int, progress: Progress) -> DemoResult:
    """Both phases on the block `chosen` (see `block()`); `check()` first for a friendly
    refusal."""
    family, host = _family(source)
    backlog = int(_host.sysctl("net.core.somaxconn") or 4096)
    local_addr: Phase | None = None
    note = ""
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        _host.set_local_port_range(probe, chosen.start, chosen.stop - 1)
        narrowing = True
    except OSError:
        narrowing = False
    finally:
        probe.close()
    if narrowing:
        with _listeners(destinations, backlog, family, host) as listeners:
            local_addr = _kernel_pick(source, chosen, listeners, progress)
    else:
        note = (
            "this kernel has no IP_LOCAL_PORT_RANGE (Linux >= 6.3), so the demo cannot narrow "
            "the kernel's pick without root: local_addr would stop at the whole ephemeral "
            f"range ({len(_host.ephemeral_range())} ports) whatever the destinations, "
            "where bindpool reaches range x destinations. Phase 1 skipped."
        )
    with _listeners(destinations, backlog, family, host) as listeners:
        pooled = asyncio.run(_pool_pick(source, chosen, listeners, progress))
    return DemoResult(source, chosen, destinations, local_addr, pooled, note)
