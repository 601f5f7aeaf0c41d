"""The port wall that `capacity` and `occupancy` set up, and the ways of meeting it they compare.

The wall is a block of R ports. In a private network namespace (root) it is the namespace's
`net.ipv4.ip_local_port_range`, so bind((ip, 0)) and IP_BIND_ADDRESS_NO_PORT meet it as they
would on a host whose range is full. Without root it is each socket's IP_LOCAL_PORT_RANGE
(SOL_IP 51, Linux >= 6.3; FIELD-NOTES.md), on a block of the host's ephemeral range that is
free now. Both bindpool strategies get the same block as `ports`.

Destinations are listeners that never accept(): connections wait in their accept queue
(up to min(backlog, somaxconn)) and cost no file descriptor. Listeners bind explicit ports
outside the block, for a port bound by bind() is skipped by the kernel's automatic pick on
every address. Every client socket is closed with SO_LINGER 0 (an RST), so no FIN_WAIT2 or
TIME_WAIT outlives a method; each method gets fresh listeners, for reset connections stay
in the accept queue (and count against the backlog) until the listener closes.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import bindpool
from benchmarks import _netns
from bindpool._host import (
    IP_BIND_ADDRESS_NO_PORT,
    ephemeral_range,
    set_local_port_range,
    sysctl,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

__all__ = [
    "BIND0",
    "KERNEL",
    "NO_PORT",
    "NO_PORT_NARROW",
    "RAW",
    "TABLE",
    "Wall",
    "listeners",
    "reset",
    "setup",
]

BIND0 = "bind(ip, 0)"
NO_PORT = "IP_BIND_ADDRESS_NO_PORT"
# NO_PORT with IP_LOCAL_PORT_RANGE set to the whole namespace range: a reference row in the
# namespace only (in option mode NO_PORT already carries the option).
NO_PORT_NARROW = "NO_PORT + IP_LOCAL_PORT_RANGE"
TABLE = "bindpool table"
KERNEL = "bindpool kernel"
RAW = (BIND0, NO_PORT, NO_PORT_NARROW)
STRATEGY: dict[str, Literal["table", "kernel"]] = {TABLE: "table", KERNEL: "kernel"}

DEST = "127.0.0.1"
NAMESPACE_BLOCK_START = 40000  # the namespace's ephemeral range starts here
LISTENER_PORTS = range(20000, 32000)  # below the namespace's range, and Linux's default
RST = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, leaves no state


def reset(sock: socket.socket) -> None:
    """Close with an RST: no FIN_WAIT2, no TIME_WAIT, the 4-tuple free at once."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RST)
    sock.close()


@dataclass(frozen=True)
class Wall:
    """Where the R-port wall stands: `mode` is `_netns.NAMESPACE` or `_netns.OPTION`."""

    mode: str
    block: range

    def describe(self) -> str:
        low, high = self.block[0], self.block[-1]
        if self.mode == _netns.NAMESPACE:
            return (
                f"private network namespace (unshare -n): net.ipv4.ip_local_port_range = "
                f"{low}-{high} ({len(self.block)} ports)"
            )
        return (
            f"host namespace (not root): each socket's IP_LOCAL_PORT_RANGE = {low}-{high} "
            f"({len(self.block)} ports of the host's ephemeral range)"
        )

    def raw_socket(self, method: str) -> socket.socket:
        """A blocking TCP socket with `method`'s options, not bound yet."""
        sock = socket.socket()
        if method in (NO_PORT, NO_PORT_NARROW):
            sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        if self.mode == _netns.OPTION or method == NO_PORT_NARROW:
            set_local_port_range(sock, self.block[0], self.block[-1])
        return sock

    def connect(self, method: str, source: str, dest: tuple[str, int]) -> socket.socket:
        """A connection by a raw method; the OSError that stopped it, if one did."""
        sock = self.raw_socket(method)
        try:
            sock.bind((source, 0))
            sock.connect(dest)
        except BaseException:
            sock.close()
            raise
        return sock

    def pool(self, method: str, source: str) -> bindpool.Pool:
        """A pool of `method`'s strategy on the wall's block."""
        return bindpool.Pool([source], ports=self.block, strategy=STRATEGY[method])

    def methods(self) -> list[str]:
        reference = [NO_PORT_NARROW] if self.mode == _netns.NAMESPACE else []
        return [BIND0, NO_PORT, *reference, TABLE, KERNEL]

    def check(self, socks: list[socket.socket], source: str) -> None:
        """Correctness: every socket is from `source`, on a port of the block, its 4-tuple
        unique."""
        names = [sock.getsockname() for sock in socks]
        assert all(ip == source and port in self.block for ip, port in names), "off the block"
        tuples = {(name, sock.getpeername()) for name, sock in zip(names, socks, strict=True)}
        assert len(tuples) == len(socks), "a 4-tuple twice"


def _free(port: int) -> bool:
    """No socket on any address holds `port` now (an exclusive wildcard bind succeeds)."""
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def _free_block(size: int) -> range:
    host = ephemeral_range()
    for _ in range(200):
        start = random.randrange(host.start, host.stop - size)
        block = range(start, start + size)
        if all(_free(port) for port in block):
            return block
    raise RuntimeError(f"no free block of {size} ports in the ephemeral range {host}")


def setup(mode: str, size: int, backlog: int) -> Wall:
    """The wall for `mode`: a namespace's range (prepared here) or a free host block."""
    if mode == _netns.NAMESPACE:
        block = range(NAMESPACE_BLOCK_START, NAMESPACE_BLOCK_START + size)
        _netns.prepare(block[0], block[-1], backlog)
    else:
        block = _free_block(size)
        somaxconn = int(sysctl("net.core.somaxconn") or 4096)
        if somaxconn < backlog:
            raise SystemExit(
                f"net.core.somaxconn is {somaxconn}, the listeners need {backlog}: run as root "
                "(a private namespace may raise it) or with a smaller range"
            )
    return Wall(mode, block)


@contextlib.contextmanager
def listeners(count: int, backlog: int) -> Iterator[list[tuple[str, int]]]:
    """`count` fresh listeners on DEST that never accept; closed afterwards.

    Their ports are explicit and outside this namespace's ephemeral range: a port bound by
    bind() is skipped by the kernel's automatic pick on every address, and would be one
    fewer in the wall.
    """
    ephemeral = ephemeral_range()
    candidates = [port for port in LISTENER_PORTS if port not in ephemeral]
    if not candidates:
        raise RuntimeError(f"the ephemeral range {ephemeral} covers {LISTENER_PORTS}")
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            for _ in range(1000):
                listener = socket.socket()
                try:
                    listener.bind((DEST, random.choice(candidates)))
                except OSError:
                    listener.close()
                    continue
                break
            else:
                raise RuntimeError(f"no free listener port in {LISTENER_PORTS}")
            listener.listen(backlog)
            opened.append(listener)
        yield [listener.getsockname() for listener in opened]
    finally:
        for listener in opened:
            listener.close()
