"""One connection attempt: socket, the strategy's options, bind, non-blocking connect.

Which port, and whether to try again, is decided elsewhere (`Pool`); this module makes one
attempt and says precisely how it ended.

Kernel behaviour relied on (FIELD-NOTES.md, "Kernel rules that shape the design"):
- Every socket that shares a port must set SO_REUSEADDR, or `bind()` gives EADDRINUSE.
  EADDRINUSE also means a listener, a socket without SO_REUSEADDR, or the kernel's own
  automatic pick holds the port on this IP: the port is unusable for now, whatever the
  destination. That is a `Clash(PORT)`.
- A socket bound to an explicit port has its full 4-tuple checked at `connect()`; if the
  4-tuple is taken (someone else's connection, our own still closing, or TIME_WAIT without
  timestamps) a non-blocking `connect_ex` returns EADDRNOTAVAIL at once. That is a
  `Clash(TUPLE)`.
- EADDRNOTAVAIL at `bind()` means the source address is not on this host (any more: `ip
  addr del`). That is a `Clash(SOURCE)`: the pool marks the source down.
- EACCES at `bind()`: a port below `ip_unprivileged_port_start` without the capability;
  re-raised as a `PermissionError` that names the port.
- A socket whose kernel-picked port equals the destination's, on the same IP, is connected
  to itself (TCP simultaneous open, FIELD-NOTES.md): closed, and `ConnectionRefusedError`,
  which is what connect() would have said with the pool out of the way.
- Anything else (refused, unreachable) is the world's answer for this destination and
  propagates as the kernel's `OSError`.

Two ways to make the attempt, the fastest correct one for each job:
- `attempt()` returns a socket: the strategy's options, `bind()`, `connect_ex` plus a wait
  for writability on the running loop, then SO_ERROR. That is the fastest `sock=` path on
  both asyncio and uvloop (uvloop's `sock_connect` runs getaddrinfo in a thread pool even for
  numeric addresses). For strategy "kernel" the options make `bind((ip, 0))` take no port
  and `connect()` pick one (`_ledger.py`); EADDRNOTAVAIL at connect then means no port is
  free for that 4-tuple in the block.
- On uvloop, `Pool.open_connection` lets the loop itself connect
  (`loop.create_connection(local_addr=(source, port))`): libuv binds the port (setting
  SO_REUSEADDR itself) and connects in C, close to a plain connect's speed; asyncio's own
  `local_addr` cannot serve, for it binds without SO_REUSEADDR. `native_error()` reads
  what it reports. Measured on loopback, sequentially: 49 us per connection against 63 us
  for `attempt()` plus `sock=` before `attempt()` learned to skip add_writer/remove_writer
  (a poll handle made and freed: ~22 us on uvloop) for a connect already finished.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from typing import TYPE_CHECKING

from bindpool._host import (
    IP_BIND_ADDRESS_NO_PORT,
    IP_LOCAL_PORT_RANGE,
    is_local,
    local_port_range,
)
from bindpool._socket import PooledSocket

if TYPE_CHECKING:
    from collections.abc import Callable

    from bindpool._resolve import Address

__all__ = [
    "PORT",
    "SHARE_PORT",
    "SOURCE",
    "TUPLE",
    "Clash",
    "Option",
    "attempt",
    "native_error",
    "has_native_connect",
    "kernel_picks",
    "self_connect_refusal",
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


# What a `Clash` refused.
TUPLE = "tuple"  # EADDRNOTAVAIL at connect(): this 4-tuple exists
PORT = "port"  # EADDRINUSE at bind(): the port is unusable on the source
SOURCE = "source"  # EADDRNOTAVAIL at bind(): the source address is not on this host


class Clash(Exception):
    """The kernel refused this 4-tuple, port or source; another may well work.

    Internal: the retry policy catches it; it never reaches users.

    Attributes:
        error: the kernel's error (errno EADDRINUSE or EADDRNOTAVAIL).
        kind: `TUPLE`, `PORT` or `SOURCE`, see the module docs.
        own: set by the pool: the refused 4-tuple was its own, still closing.
    """

    def __init__(self, error: OSError, kind: str) -> None:
        super().__init__(error)
        self.error = error
        self.kind = kind
        self.own = False


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
        Clash: the kernel refused the port or the source (bind) or the 4-tuple (connect).
        PermissionError: the port is privileged and the process may not bind it.
        ConnectionRefusedError: the kernel connected the socket to itself.
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
            raise bind_error(exc, source, port) from exc
        code = sock.connect_ex(address)
        if picked is not None and code in _PICKED:
            port = sock.getsockname()[1]
            picked(port)
            if port == address[1] and source == address[0]:  # only the kernel picks so
                code = _SELF_CONNECT
        if code == errno.EINPROGRESS:
            # To loopback and same-host peers the handshake completes inside connect():
            # asking again (about 1 us) says 0 then, or EALREADY while it is in flight. A
            # finished connect skips add_writer/remove_writer, whose poll handle alone
            # costs uvloop ~22 us; measured: pool.connect at 16,000 ports 43 -> 27 us.
            code = sock.connect_ex(address)
            if code == errno.EALREADY:
                await _writable(loop, sock.fileno())
                code = sock.getsockopt(_SOL_SOCKET, _SO_ERROR)
            elif not code:
                await asyncio.sleep(0)  # still one turn of the loop, as a wait would be
        if code:
            raise connect_error(code, address)
    except BaseException:
        sock.close()  # no lease adopted yet: this only closes the fd
        raise
    return sock


_SELF_CONNECT = -1  # not an errno: the kernel's pick connected the socket to itself


def bind_error(exc: OSError, source: str, port: int) -> Exception:
    """What a failed bind() means for the retry policy, or for the caller."""
    if exc.errno == errno.EADDRINUSE:
        return Clash(exc, PORT)
    if exc.errno == errno.EADDRNOTAVAIL:
        return Clash(exc, SOURCE)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return PermissionError(
            exc.errno,
            f"bind() to port {port} on {source} refused: ports below "
            "net.ipv4.ip_unprivileged_port_start need root or CAP_NET_BIND_SERVICE; "
            "give the pool ports above it",
        )
    return exc


def connect_error(code: int, address: Address) -> Exception:
    """What a failed connect() means: a clash to retry, or the world's answer."""
    if code == _SELF_CONNECT:
        return ConnectionRefusedError(
            errno.ECONNREFUSED,
            f"Connect call failed {address}: nothing listens there (from the same address "
            "and port, connect() would only reach itself by TCP simultaneous open)",
        )
    # The same words asyncio's sock_connect uses; OSError() picks the subclass
    # (ConnectionRefusedError, ...) from the errno.
    error = OSError(code, f"Connect call failed {address}")
    return Clash(error, TUPLE) if code == errno.EADDRNOTAVAIL else error


def self_connect_refusal(family: int, address: tuple[str, int]) -> OSError | None:
    """For a destination on the source's own IP whose port is the pool's only port: the
    `ConnectionRefusedError` connect() would give without the pool, if nothing listens
    there (binding the port then works); None if something does (it holds the port)."""
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError:
            return None
    error = connect_error(_SELF_CONNECT, address)
    assert isinstance(error, OSError)
    return error


def has_native_connect(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether the loop's own connect can bind an explicit port with SO_REUSEADDR (see
    `native_error`): uvloop's can."""
    kind = type(loop)
    native = _NATIVE.get(kind)
    if native is None:
        native = _NATIVE[kind] = kind.__module__.partition(".")[0] == "uvloop"
    return native


_NATIVE: dict[type, bool] = {}


def native_error(exc: OSError, source: str, port: int) -> Exception:
    """What an error from uvloop's native connect (`local_addr=(source, port)`) means.

    EADDRINUSE is a bind refusal (`PORT`). libuv reports EADDRNOTAVAIL at bind (the source
    left the host) and at connect (the 4-tuple exists) alike, so this asks the kernel which
    it was, off the hot path: `SOURCE` or `TUPLE`. Anything else is `exc` itself (uvloop has
    closed its socket).
    """
    if exc.errno == errno.EADDRINUSE:
        return Clash(exc, PORT)
    if exc.errno == errno.EADDRNOTAVAIL:
        local = is_local(source, socket.AF_INET6 if ":" in source else socket.AF_INET)
        return Clash(exc, TUPLE if local else SOURCE)
    if exc.errno in (errno.EACCES, errno.EPERM):
        return bind_error(exc, source, port)
    return exc


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
