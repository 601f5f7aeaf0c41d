"""The pool: the public surface of bindpool.

A `Pool` checks its arguments, builds its allocator (the port table, or the kernel
strategy's ledger), and hands each connect to its `Dialer` (`_dialer.py`), which resolves,
races or tries the addresses, runs the retry policy around single attempts and reads the
kernel's answers. Here too: statistics, the living set of sources (`add_source`,
`remove_source` and their drain), closing, and what a pool refuses (pickling, copying).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar, cast

from bindpool import _config, _connector, _race, _select
from bindpool._dialer import Allocator, Dialer, Tls
from bindpool._errors import ConfigurationError, PoolClosed
from bindpool._health import Health
from bindpool._ledger import KernelLedger
from bindpool._protocol import LeasedStreamProtocol
from bindpool._table import PortTable
from bindpool._types import Lease, PoolStatistics
from bindpool._waiters import Waiters

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Callable, Iterable
    from types import TracebackType

    from bindpool._socket import PooledSocket

__all__ = ["Pool"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)
_log = logging.getLogger("bindpool")


class Pool:
    """Outbound TCP connections from chosen source IPs, each port shared by destinations.

    Args:
        sources: numeric local IPs (IPv4 and/or IPv6) to bind to; at least one.
        ports: the ports to use on every source. None: the host's reserved ports
            (`net.ipv4.ip_local_reserved_ports`) if it has any, else its ephemeral range.
        cooldown: seconds a released (source, port, destination) rests before that
            destination gets it again, while any other port is free for it.
        max_attempts: bind/connect attempts per connection before `PortsExhausted`.
        on_release: called with the `Lease` once, when its port goes back.
        shard: `(index, count)`: use only slice `index` of `count` disjoint, contiguous
            slices of `ports`, so that worker processes sharing a source never clash.
        strategy: "table": bindpool picks each port from its table. "kernel": the kernel
            picks it at connect time (IP_BIND_ADDRESS_NO_PORT, narrowed to `ports` with
            IP_LOCAL_PORT_RANGE), atomically across processes; `ports` must then be one
            contiguous block inside the host's ephemeral range and clear of its reserved
            ports, which the kernel's pick skips (default: that range, less those), and
            TIME_WAIT is left to the kernel (`cooldown` is unused).
        select: which source a connection tries first: "room" (most room for the
            destination; ties rotate), "round_robin" (each connection the next source),
            "sticky" (rendezvous hashing: a destination keeps its source while that source
            is up and has room), or a callable `(destination, sources) -> sources` giving
            the usable sources in the order to try. Down and draining sources are never
            offered.
        wait: seconds a connect may wait for a 4-tuple to be released when none is free
            for its destination (first come, first served, woken by the release); 0
            fails at once with `PortsExhausted`. Counts against the call's `timeout`.

    Raises:
        ConfigurationError: any argument is wrong; the message says which and why.
    """

    def __init__(
        self,
        sources: Iterable[str],
        *,
        ports: Iterable[int] | None = None,
        cooldown: float = 60.0,
        max_attempts: int = 32,
        on_release: Callable[[Lease], object] | None = None,
        shard: tuple[int, int] | None = None,
        strategy: _config.Strategy = "table",
        select: _select.Policy = "room",
        wait: float = 0.0,
    ) -> None:
        config = _config.configure(
            sources,
            ports=ports,
            cooldown=cooldown,
            max_attempts=max_attempts,
            on_release=on_release,
            shard=shard,
            strategy=strategy,
        )
        _config.check_timeout(wait, "wait")
        if wait is None:
            raise ConfigurationError("wait must be a number of seconds >= 0 (0: do not wait)")
        self._config = config
        health = Health(time.monotonic)
        selector = _select.Selector(_select.check(select))
        table: Allocator
        ledger: KernelLedger | None = None
        if config.strategy == "kernel":
            table = ledger = KernelLedger(
                dict.fromkeys(config.sources, len(config.ports)), health=health, select=selector
            )
            options = _connector.kernel_picks(config.span)
        else:
            table = PortTable(
                dict.fromkeys(config.sources, config.ports),
                cooldown=config.cooldown,
                health=health,
                select=selector,
            )
            options = _connector.SHARE_PORT
        table.sources.on_drained = self._drained
        self._dialer = Dialer(config, table, ledger, options, health, Waiters(), float(wait))
        self._drains: dict[str, asyncio.Future[None]] = {}
        self._closed = False

    # -- connecting --------------------------------------------------------------------------

    async def connect(
        self,
        host: str,
        port: int,
        *,
        timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
    ) -> PooledSocket:
        """A connected, non-blocking socket to `host:port` from one of the sources.

        Args:
            host: a name (resolved with the loop's getaddrinfo) or an IP literal.
            port: the destination port.
            timeout: seconds for resolution, bind and connect together; None waits.
            happy_eyeballs_delay: None tries the addresses of `host` one after another.
                A number of seconds races them (RFC 8305, as asyncio's `create_connection`):
                each next address starts that long after the previous one, or as soon as
                it fails; each attempt has its own lease and retries; the first to connect
                wins, the others are cancelled or closed and their leases given back
                before this returns.
            interleave: reorder the addresses by family as asyncio does: `interleave - 1`
                addresses of the first family, then one of each family in turn. None is 1
                with a delay and the resolver's order without one.

        Returns:
            A `PooledSocket`; its lease goes back once when it is closed, detached or
            collected. Hand it to `loop.create_connection(sock=...)` and friends.

        Raises:
            PortsExhausted: no free 4-tuple for the destination on any source, or
                `max_attempts` clashes in a row (errno EADDRNOTAVAIL).
            SourceUnavailable: every source of the destination's family is down (its
                address is not on this host); errno EADDRNOTAVAIL.
            ConfigurationError: bad arguments, or no source has the destination's family.
            PoolClosed: the pool was closed.
            TimeoutError: `timeout` passed; the message names destination, sources, timeout.
            ConnectionRefusedError: nothing listens there (never a socket connected to
                itself: see `_connector`).
            OSError: the connection failed (refused, unreachable, name not found...); for
                several addresses, one error naming each address's failure, as asyncio's.
        """
        if (
            timeout is None
            and happy_eyeballs_delay is None
            and interleave is None
            and self._plain_call(host, port)
        ):
            loop = asyncio.get_running_loop()
            return cast("PooledSocket", await self._dialer.dial(loop, host, port, None, None))
        eyeballs = self._check_call(host, port, timeout, happy_eyeballs_delay, interleave)
        loop = asyncio.get_running_loop()
        dialing = self._dialer.dial(loop, host, port, timeout, None, eyeballs)
        return cast("PooledSocket", await dialing)

    async def open_connection(
        self,
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        limit: int = 2**16,
        timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """`asyncio.open_connection` through the pool: a (reader, writer) pair.

        With `ssl` and no `server_hostname`, the name verified is `host`, as in asyncio.
        `timeout` bounds resolution, bind and connect; `ssl_handshake_timeout` the TLS
        handshake, which follows the race when `happy_eyeballs_delay` is given (see
        `connect()` for it and `interleave`). Raises what `connect()` raises, and TLS
        errors; the lease is back by then.
        """
        if (
            timeout is None
            and ssl is None
            and server_hostname is None
            and ssl_handshake_timeout is None
            and limit == 65536
            and type(limit) is int
            and happy_eyeballs_delay is None
            and interleave is None
            and self._plain_call(host, port)
        ):
            eyeballs, name = None, None
        else:
            eyeballs = self._check_call(host, port, timeout, happy_eyeballs_delay, interleave)
            name = _config.check_tls(host, ssl, server_hostname, ssl_handshake_timeout)
            if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
                raise ConfigurationError(f"limit must be an int >= 1 (bytes), not {limit!r}")
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        transport: asyncio.Transport
        if not ssl and self._dialer.ledger is None and _connector.has_native_connect(loop):
            # uvloop binds and connects in C; the stream protocol itself holds the lease.
            leased = LeasedStreamProtocol(reader, loop=loop)
            transport = await self._dialer.dial(loop, host, port, timeout, leased, eyeballs)  # type: ignore[assignment]
            protocol: asyncio.StreamReaderProtocol = leased
        else:
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            tls = Tls(ssl, name, ssl_handshake_timeout) if ssl else None
            transport = await self._dialer.hand_over(
                loop, protocol, host, port, timeout, tls, eyeballs
            )
        return reader, asyncio.StreamWriter(transport, protocol, reader, loop)

    async def create_connection(
        self,
        protocol_factory: Callable[[], _P],
        host: str,
        port: int,
        *,
        ssl: _ssl.SSLContext | bool | None = None,
        server_hostname: str | None = None,
        ssl_handshake_timeout: float | None = None,
        timeout: float | None = None,
        happy_eyeballs_delay: float | None = None,
        interleave: int | None = None,
    ) -> tuple[asyncio.Transport, _P]:
        """`loop.create_connection` through the pool: a (transport, protocol) pair.

        The connection is made on a `PooledSocket` handed to the loop, so the lease goes
        back when the connection closes, whatever protocol it has by then
        (`transport.set_protocol()`, `loop.start_tls()`). See `open_connection` for `ssl`,
        `server_hostname`, `ssl_handshake_timeout` and `timeout`, `connect()` for
        `happy_eyeballs_delay` and `interleave`.
        """
        eyeballs = self._check_call(host, port, timeout, happy_eyeballs_delay, interleave)
        name = _config.check_tls(host, ssl, server_hostname, ssl_handshake_timeout)
        if not callable(protocol_factory):
            raise ConfigurationError(f"protocol_factory must be callable, not {protocol_factory!r}")
        # Made before any port is taken: a factory error costs nothing, and a clash retries
        # before the protocol has seen anything.
        protocol = protocol_factory()
        tls = Tls(ssl, name, ssl_handshake_timeout) if ssl else None
        loop = asyncio.get_running_loop()
        transport = await self._dialer.hand_over(loop, protocol, host, port, timeout, tls, eyeballs)
        return transport, protocol

    def _plain_call(self, host: object, port: object) -> bool:
        """The common call (a str host, an int port, an open pool), checked in a few type
        tests; the full checks (`_check_call`) cost about 1-1.5 us more per connection."""
        return (
            type(host) is str
            and bool(host)
            and type(port) is int
            and 0 < port < 65536
            and not self._closed
        )

    def _check_call(
        self,
        host: str,
        port: int,
        timeout: float | None,
        happy_eyeballs_delay: float | None,
        interleave: int | None,
    ) -> _race.Eyeballs | None:
        if self._closed:
            raise PoolClosed("the pool is closed: create a new Pool to connect")
        _config.check_destination(host, port)
        _config.check_timeout(timeout)
        return _race.check(happy_eyeballs_delay, interleave)

    # -- the rest of the surface ---------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A snapshot: live leases, footprint, cooling 4-tuples, counters, per source."""
        sources = self._dialer.table.statistics()
        return PoolStatistics(
            in_use=sum(s.in_use for s in sources.values()),
            footprint=sum(s.footprint for s in sources.values()),
            cooling=sum(s.cooling for s in sources.values()),
            connects=self._dialer.connects,
            retries=self._dialer.retries,
            exhausted=self._dialer.exhausted,
            sources=sources,
        )

    @property
    def sources(self) -> tuple[str, ...]:
        """The source IPs new connections may use, in canonical form, in the order given
        (then added); not those removed, even while they drain."""
        return tuple(self._dialer.sources)

    # -- sources as a living set ---------------------------------------------------------------

    def add_source(self, ip: str) -> None:
        """Let new connections use `ip` from now on (validated as the constructor's are).

        Adding a source being removed (draining) keeps it; adding one the pool has does
        nothing.

        Raises:
            ConfigurationError: `ip` is not a numeric, unicast address of this host.
        """
        (address,) = _config.check_sources([ip])
        if address in self._dialer.sources:
            return
        if self._dialer.ledger is not None:
            self._dialer.ledger.add_source(address, len(self._config.ports))
        else:
            cast("PortTable", self._dialer.table).add_source(address, self._config.ports)
        self._dialer.sources.append(address)
        self._dialer.refamily()
        drain = self._drains.pop(address, None)
        if drain is not None and not drain.done():
            drain.set_result(None)  # the removal was taken back
        _log.debug("source %s added", address)
        self._dialer.waiters.wake_all()  # room for everyone waiting, maybe

    async def remove_source(self, ip: str, *, drain: bool = True) -> None:
        """No new connection uses `ip`; open ones keep working and release as usual.

        Args:
            ip: one of the pool's sources.
            drain: True returns once every lease on `ip` is released (its connections
                closed); False returns at once. Either way the pool forgets `ip`, and
                frees its memory, when its last lease ends.

        Raises:
            ConfigurationError: `ip` is not a source of this pool, or is its last one.
        """
        address = _config.canonical_source(ip)
        if address not in self._dialer.sources:
            if address in self._drains:  # being removed already: wait with the first
                if drain:
                    await asyncio.shield(self._drains[address])
                return
            raise ConfigurationError(f"{ip!r} is not a source of this pool: {self._dialer.sources}")
        if len(self._dialer.sources) == 1:
            raise ConfigurationError(
                f"{address} is the pool's last source: add another first (add_source), "
                "or close the pool"
            )
        self._dialer.sources.remove(address)
        self._dialer.refamily()
        live = self._dialer.table.remove_source(address)
        _log.debug("source %s removed; %d connections on it drain", address, live)
        if not live:
            return
        future = self._drains.setdefault(address, asyncio.get_running_loop().create_future())
        if drain:
            await asyncio.shield(future)  # cancelling this wait leaves the removal as it is

    def _drained(self, address: str) -> None:
        """The allocator forgot a removed source: its last lease ended."""
        _log.debug("source %s drained", address)
        future = self._drains.pop(address, None)
        if future is not None and not future.done():
            future.set_result(None)

    @property
    def closed(self) -> bool:
        """True after `aclose()`."""
        return self._closed

    async def aclose(self) -> None:
        """Refuse new connections (`PoolClosed`); open ones stay open and still release."""
        self._closed = True

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __reduce_ex__(self, protocol: Any) -> NoReturn:
        raise TypeError(
            "a bindpool.Pool cannot be pickled or copied: its leases belong to the sockets of "
            "this process; make a new Pool in the other process (with shard= to split ports)"
        )

    def __copy__(self) -> NoReturn:
        self.__reduce_ex__(0)

    def __deepcopy__(self, memo: object) -> NoReturn:
        self.__reduce_ex__(0)

    def __repr__(self) -> str:
        stats = self._dialer.table.statistics().values()
        state = "closed" if self._closed else "open"
        return (
            f"<bindpool.Pool {state} sources={list(self._dialer.sources)} "
            f"ports={len(self._config.ports)} in_use={sum(s.in_use for s in stats)} "
            f"footprint={sum(s.footprint for s in stats)}>"
        )
