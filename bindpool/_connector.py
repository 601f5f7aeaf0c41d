"""One connection attempt: socket, the strategy's options, bind, non-blocking connect.

Which port, and whether to try again, is decided elsewhere (`Pool`); this module makes one
attempt and says precisely how it ended.

Kernel behaviour relied on (FIELD-NOTES.md, "Kernel rules that shape the design"):
- Every socket that shares a port must set SO_REUSEADDR, or `bind()` gives EADDRINUSE.
  EADDRINUSE also means a listener, a socket without SO_REUSEADDR, or the kernel's own
  automatic pick holds the port on this IP: the port is unusable for now, whatever the
  destination. That is a `Clash(at_bind=True)`.
- A socket bound to an explicit port has its full 4-tuple checked at `connect()`; if the
  4-tuple is taken (someone else's connection, or TIME_WAIT without timestamps) a
  non-blocking `connect_ex` returns EADDRNOTAVAIL at once. That is a `Clash(at_bind=False)`.
- Anything else (refused, unreachable, a bind error that is not EADDRINUSE) is the world's
  answer for this destination and propagates as the kernel's `OSError`.

Two ways to make the attempt, the fastest correct one for each job:
- `attempt()` returns a socket: the strategy's options, `bind()`, `connect_ex` plus a wait
  for writability on the running loop, then SO_ERROR. That is the fastest `sock=` path on
  both asyncio and uvloop (uvloop's `sock_connect` runs getaddrinfo in a thread pool even for
  numeric addresses). For strategy "kernel" the options make `bind((ip, 0))` take no port
  and `connect()` pick one (`_ledger.py`); EADDRNOTAVAIL at connect then means no port is
  free for that 4-tuple in the block.
- `attempt_native()` returns a transport, on uvloop only: libuv binds the port (setting
  SO_REUSEADDR itself) and connects in C, close to a plain connect's speed; asyncio's own
  `local_addr` cannot serve, for it binds without SO_REUSEADDR. Measured on loopback,
  sequentially: 49 us per connection against 63 us for `attempt()` plus `sock=`, whose
  add_writer/remove_writer pair alone costs uvloop ~22 us (a poll handle made and freed).
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

from bindpool._host import IP_BIND_ADDRESS_NO_PORT, IP_LOCAL_PORT_RANGE, local_port_range
from bindpool._socket import PooledSocket

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from bindpool._resolve import Address

__all__ = [
    "SHARE_PORT",
    "Clash",
    "Option",
    "attempt",
    "attempt_native",
    "has_native_connect",
    "kernel_picks",
]

_STREAM = socket.SOCK_STREAM | socket.SOCK_NONBLOCK  # non-blocking from birth: no fcntl calls
_SOL_SOCKET, _SO_ERROR = socket.SOL_SOCKET, socket.SO_ERROR

# connect() results after which the socket has its port (it failed later, if at all).
_PICKED = frozenset({0, errno.EINPROGRESS, errno.ECONNREFUSED})
# A socket option set before bind(): (level, name, value).
Option = tuple[int, int, int | bytes]
# strategy "table": bind the chosen port; every socket sharing a port needs SO_REUSEADDR.
SHARE_PORT: tuple[Option, ...] = ((socket.SOL_SOCKET, socket.SO_REUSEADDR, 1),)


def kernel_picks(span: tuple[int, int] | None) -> tuple[Option, ...]:
    """strategy "kernel": bind((ip, 0)) takes no port (IP_BIND_ADDRESS_NO_PORT); connect()
    picks one for the 4-tuple, within `span` (IP_LOCAL_PORT_RANGE) if given."""
    options: list[Option] = [(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)]
    if span is not None:
        low, high = span
        options.append((socket.SOL_IP, IP_LOCAL_PORT_RANGE, local_port_range(low, high)))
    return tuple(options)


class Clash(Exception):
    """The kernel refused this 4-tuple or port; another port may well work.

    Internal: the retry policy catches it; it never reaches users.

    Attributes:
        error: the kernel's error (errno EADDRINUSE or EADDRNOTAVAIL).
        at_bind: True for EADDRINUSE at bind() (the port is unusable on the source),
            False for EADDRNOTAVAIL at connect() (this 4-tuple is taken elsewhere).
    """

    def __init__(self, error: OSError, *, at_bind: bool) -> None:
        super().__init__(error)
        self.error = error
        self.at_bind = at_bind


async def attempt(
    loop: asyncio.AbstractEventLoop,
    family: int,
    options: tuple[Option, ...],
    source: str,
    port: int,
    address: Address,
    picked: Callable[[int], object] | None = None,
) -> PooledSocket:
    """Open a socket with `options`, bound to (source, port), connected to `address`.

    With port 0 (strategy "kernel") the kernel picks the port inside `connect()`; `picked`
    hears it then, before the wait, so a connection that fails later is still known by it.

    Returns:
        The connected socket. It holds no lease yet: the caller adopts one into it.

    Raises:
        Clash: the kernel refused the port (bind) or the 4-tuple (connect).
        OSError: any other failure, as the kernel reported it.
        CancelledError: the wait was cancelled. In every failure the socket is closed.
    """
    sock = PooledSocket(family, _STREAM)
    try:
        for level, name, value in options:
            sock.setsockopt(level, name, value)
        try:
            sock.bind((source, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise Clash(exc, at_bind=True) from exc
            raise
        code = sock.connect_ex(address)
        if picked is not None and code in _PICKED:
            picked(sock.getsockname()[1])
        if code == errno.EINPROGRESS:
            await _writable(loop, sock.fileno())
            code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
        if code:
            # The same words asyncio's sock_connect uses; OSError() picks the subclass
            # (ConnectionRefusedError, ...) from the errno.
            error = OSError(code, f"Connect call failed {address}")
            if code == errno.EADDRNOTAVAIL:
                raise Clash(error, at_bind=False)
            raise error
    except BaseException:
        sock.close()  # no lease adopted yet: this only closes the fd
        raise
    return sock


def has_native_connect(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether `attempt_native()` works on this loop: uvloop's does."""
    kind = type(loop)
    native = _NATIVE.get(kind)
    if native is None:
        native = _NATIVE[kind] = kind.__module__.partition(".")[0] == "uvloop"
    return native


_NATIVE: dict[type, bool] = {}


async def attempt_native(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    source: str,
    port: int,
    address: Address,
) -> asyncio.Transport:
    """Let uvloop bind (source, port) and connect to `address`; see the module docs.

    Returns:
        The transport, connected to `protocol`.

    Raises:
        Clash: EADDRINUSE (bind) or EADDRNOTAVAIL (connect); libuv reports both alike, so
            a source that stopped being local also reads as a clash, and ends, after
            `max_attempts`, as PortsExhausted.
        OSError: any other failure. uvloop closes its socket on every failure.
    """
    try:
        transport, _ = await loop.create_connection(
            lambda: protocol, address[0], address[1], local_addr=(source, port)
        )
    except OSError as exc:
        if exc.errno in (errno.EADDRINUSE, errno.EADDRNOTAVAIL):
            raise Clash(exc, at_bind=exc.errno == errno.EADDRINUSE) from exc
        raise
    return transport


async def _writable(loop: asyncio.AbstractEventLoop, fd: int) -> None:
    waiter = loop.create_future()
    loop.add_writer(fd, _wake, waiter)
    try:
        await waiter
    finally:
        loop.remove_writer(fd)


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
