"""The pool: resolve, ask the table for a 4-tuple, attempt, retry on a clash, hand over.

Ownership. A claim belongs to the retry loop from `acquire()` until the attempt succeeds;
then what the attempt made adopts it: a `PooledSocket` gives it back when closed, detached
or collected; on uvloop's native path, the `LeasedStreamProtocol` when the connection is
lost. On every other way out (refused, timeout, cancellation, any exception) the loop gives
it back itself before the error propagates. A clash gives the 4-tuple back to the table as
resting, not as a lease: no `on_release` call, one more in `retries`.

Reading the kernel's answers (`_connector.Clash`, rests in `_health.py`): a refused
4-tuple or port rests as long as the evidence warrants and the loop moves on to another; a
source whose address left the host goes down and the loop moves on to another source; when
no source of the family is up, the call fails as `SourceUnavailable`. Each decision is
logged on logger "bindpool" (DEBUG; WARNING when a source goes down).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
import time
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, Self, TypeVar, cast

from bindpool import _config, _connector, _race, _resolve, _select
from bindpool._errors import (
    ConfigurationError,
    PoolClosed,
    PortsExhausted,
    SourceUnavailable,
    combined,
    no_source_for,
)
from bindpool._health import Health
from bindpool._ledger import KernelLedger
from bindpool._protocol import LeasedStreamProtocol
from bindpool._table import PortTable, family_of
from bindpool._types import Lease, PoolStatistics, SourceStatistics
from bindpool._waiters import Waiters

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Awaitable, Callable, Iterable
    from types import TracebackType

    from bindpool._claim import Claim, Destination
    from bindpool._socket import PooledSocket
    from bindpool._sources import SourceSet

__all__ = ["Pool"]

_P = TypeVar("_P", bound=asyncio.BaseProtocol)


class _Tls(NamedTuple):
    """What a TLS connection needs besides the socket, as asyncio takes it."""

    context: _ssl.SSLContext | bool
    server_hostname: str | None
    handshake_timeout: float | None


class _Allocator(Protocol):
    """What the retry policy asks of the port table, or of the kernel strategy's ledger."""

    @property
    def sources(self) -> SourceSet[Any]: ...

    def acquire(self, destination: Destination, family: int) -> Claim | None: ...
    def release(self, claim: Claim) -> None: ...
    def clashed(self, claim: Claim) -> float: ...
    def port_in_use(self, claim: Claim) -> float: ...
    def source_gone(self, claim: Claim) -> None: ...
    def remove_source(self, address: str) -> int: ...
    def resting(self, destination: Destination, family: int) -> float | None: ...
    def statistics(self) -> dict[str, SourceStatistics]: ...


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
        self._wait = float(wait)
        self._health = Health(time.monotonic)
        selector = _select.Selector(_select.check(select))
        self._table: _Allocator
        self._ledger: KernelLedger | None = None
        if config.strategy == "kernel":
            self._ledger = KernelLedger(
                dict.fromkeys(config.sources, len(config.ports)),
                health=self._health,
                select=selector,
            )
            self._table = self._ledger
            self._options = _connector.kernel_picks(config.span)
        else:
            self._table = PortTable(
                dict.fromkeys(config.sources, config.ports),
                cooldown=config.cooldown,
                health=self._health,
                select=selector,
            )
            self._options = _connector.SHARE_PORT
        self._table.sources.on_drained = self._drained
        self._sources = list(config.sources)  # active: not removed
        self._families: dict[int, tuple[str, ...]] = {}
        self._refamily()
        self._waiters = Waiters()
        self._drains: dict[str, asyncio.Future[None]] = {}
        self._on_release = config.on_release
        self._closed = False
        self._connects = 0
        self._retries = 0
        self._exhausted = 0

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
            type(host) is str  # the common call, checked cheaply (about 1 us less)
            and host
            and type(port) is int
            and 0 < port < 65536
            and timeout is None
            and happy_eyeballs_delay is None
            and interleave is None
            and not self._closed
        ):
            return cast("PooledSocket", await self._dial(host, port, None, None))
        eyeballs = self._check_call(host, port, timeout, happy_eyeballs_delay, interleave)
        return cast("PooledSocket", await self._dial(host, port, timeout, None, eyeballs))

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
            type(host) is str  # the common call, checked cheaply (about 1.5 us less)
            and host
            and type(port) is int
            and 0 < port < 65536
            and timeout is None
            and ssl is None
            and server_hostname is None
            and ssl_handshake_timeout is None
            and limit == 65536
            and type(limit) is int
            and happy_eyeballs_delay is None
            and interleave is None
            and not self._closed
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
        if not ssl and self._ledger is None and _connector.has_native_connect(loop):
            # uvloop binds and connects in C; the stream protocol itself holds the lease.
            leased = LeasedStreamProtocol(reader, loop=loop)
            transport = await self._dial(host, port, timeout, leased, eyeballs)  # type: ignore[assignment]
            protocol: asyncio.StreamReaderProtocol = leased
        else:
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            tls = _Tls(ssl, name, ssl_handshake_timeout) if ssl else None
            transport = await self._hand_over(loop, protocol, host, port, timeout, tls, eyeballs)
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
        tls = _Tls(ssl, name, ssl_handshake_timeout) if ssl else None
        loop = asyncio.get_running_loop()
        transport = await self._hand_over(loop, protocol, host, port, timeout, tls, eyeballs)
        return transport, protocol

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

    async def _hand_over(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.BaseProtocol,
        host: str,
        port: int,
        timeout: float | None,
        tls: _Tls | None,
        eyeballs: _race.Eyeballs | None,
    ) -> asyncio.Transport:
        """Connect a socket, then give it to the loop. TLS goes this way, so that `timeout`
        ends with the connect and the handshake has `ssl_handshake_timeout` to itself."""
        sock = cast("PooledSocket", await self._dial(host, port, timeout, None, eyeballs))
        return await _handed_over(loop, protocol, sock, tls)

    # -- one connection: resolve, then the retry policy around single attempts -----------------
    #
    # `_dial` is a plain function that returns the coroutine to await:
    # for an IP literal without a timeout (the hot path), `open_connection` then awaits the
    # retry loop directly. Each coroutine frame in between is passed through on every
    # resumption; on uvloop, three of them cost ~15% of the connect rate.

    def _dial(
        self,
        host: str,
        port: int,
        timeout: float | None,
        protocol: LeasedStreamProtocol | None,
        eyeballs: _race.Eyeballs | None = None,
    ) -> Awaitable[PooledSocket | asyncio.Transport]:
        """Resolve, then try each address in turn or race them; all within `timeout`.

        With `protocol` None the result is a socket; else a transport for `protocol`, made by
        the loop's native connect (or, for a race or a scoped IPv6 address, a hand-over).
        """
        targets = _resolve.literal(host, port)
        if timeout is None and targets is not None:
            target = targets[0]  # an IP literal: one address
            address = target[1]
            if target[0] in self._families and (
                protocol is None or len(address) < 4 or not address[3]  # no scope id: _one
            ):
                return self._retry(asyncio.get_running_loop(), target, protocol)
        return self._dial_generally(host, port, timeout, protocol, targets, eyeballs)

    async def _dial_generally(
        self,
        host: str,
        port: int,
        timeout: float | None,
        protocol: LeasedStreamProtocol | None,
        targets: tuple[_resolve.Target, ...] | None,
        eyeballs: _race.Eyeballs | None,
    ) -> PooledSocket | asyncio.Transport:
        """Names, several addresses, a timeout: the general case of `_dial`."""
        deadline = asyncio.timeout(timeout)
        try:
            async with deadline if timeout is not None else contextlib.nullcontext():
                loop = asyncio.get_running_loop()
                if targets is None:
                    targets = await _resolve.resolve(loop, host, port)
                usable = [t for t in targets if t[0] in self._families]
                if not usable:
                    raise no_source_for(host, (t[0] for t in targets), self._sources)
                if eyeballs is not None:  # else in the resolver's order, as asyncio does
                    usable = _race.order(usable, _family, eyeballs)
                if eyeballs is None or eyeballs.delay is None or len(usable) == 1:
                    errors: list[OSError] = []
                    for target in usable:
                        try:
                            return await self._one(loop, target, protocol)
                        except OSError as exc:
                            errors.append(exc)
                    raise combined(errors)
                # One protocol cannot receive several transports: race sockets, hand over one.
                sock = await _race.race(
                    (functools.partial(self._retry, loop, target, None) for target in usable),
                    eyeballs.delay,
                    _close,
                )
                if protocol is None:
                    return sock
                return await _handed_over(loop, protocol, cast("PooledSocket", sock), None)
        except TimeoutError:
            if not deadline.expired():
                raise
            self._timed_out(host, port, timeout)

    def _timed_out(self, host: str, port: int, timeout: float | None) -> NoReturn:
        """asyncio.timeout's TimeoutError says nothing: say what timed out."""
        where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        raise TimeoutError(
            f"connecting to {where} from {', '.join(self._sources)} timed out "
            f"after {timeout} s (timeout=)"
        ) from None

    def _one(
        self,
        loop: asyncio.AbstractEventLoop,
        target: _resolve.Target,
        protocol: LeasedStreamProtocol | None,
    ) -> Awaitable[PooledSocket | asyncio.Transport]:
        """One address. uvloop's native connect takes only (host, port) and would lose an
        IPv6 scope id (fe80::1%eth0): such an address goes through a socket hand-over."""
        address = target[1]
        if protocol is None or len(address) < 4 or not address[3]:
            return self._retry(loop, target, protocol)
        return self._scoped(loop, target, protocol)

    async def _scoped(
        self,
        loop: asyncio.AbstractEventLoop,
        target: _resolve.Target,
        protocol: asyncio.BaseProtocol,
    ) -> asyncio.Transport:
        sock = cast("PooledSocket", await self._retry(loop, target, None))
        return await _handed_over(loop, protocol, sock, None)

    async def _retry(
        self,
        loop: asyncio.AbstractEventLoop,
        target: _resolve.Target,
        protocol: LeasedStreamProtocol | None,
    ) -> PooledSocket | asyncio.Transport:
        """The retry policy: another port after a clash, at most `max_attempts` tries.

        Each attempt hands the claim to what it made: the socket, or on the native path
        the stream protocol, which gives it back when the connection is lost.
        """
        table = self._table
        family, address, key = target
        clash: _connector.Clash | None = None
        avoid: frozenset[str] | None = None  # strategy "kernel": sources full for key now
        waited = False  # in line for a release already (`wait=`)
        for attempts in range(self._config.max_attempts):
            if self._waiters.queues and key in self._waiters.queues:
                claim = None  # others wait for this destination: in line behind them
            elif avoid is None:
                claim = table.acquire(key, family)
            else:
                claim = cast("KernelLedger", table).acquire(key, family, avoid)
            if claim is None:
                claim = await self._queue(key, family, attempts, clash, waited)
                waited = True
            try:
                if protocol is None:
                    ledger = self._ledger  # the kernel picks the port: the ledger records it
                    sock = await _connector.attempt(
                        loop,
                        family,
                        self._options,
                        claim.source,
                        claim.port,
                        address,
                        None if ledger is None else functools.partial(ledger.bound, claim),
                    )
                    sock._adopt(claim, self)  # no await since the connect: nothing between
                    result: PooledSocket | asyncio.Transport = sock
                else:
                    # uvloop binds and connects in C; the protocol is its own factory. Inline,
                    # not a helper coroutine: a frame less on every resumption.
                    try:
                        result, _ = await loop.create_connection(
                            protocol, address[0], address[1], local_addr=(claim.source, claim.port)
                        )
                    except OSError as exc:
                        error = _connector.native_error(exc, claim.source, claim.port)
                        if error is exc:
                            raise
                        raise error from exc
                    protocol._adopt(claim, self)
            except _connector.Clash as exc:
                clash = exc
                self._refused(claim, exc)
                if self._ledger is not None and exc.kind == _connector.TUPLE:
                    avoid = (avoid or frozenset()) | {claim.source}
                continue
            except BaseException:
                if self._health.probing:
                    self._bound(claim.source)  # the bind worked: the address is back
                self._give_back(claim)
                raise
            if self._health.probing:
                self._bound(claim.source)
            self._connects += 1
            return result
        raise self._no_claim(key, family, self._config.max_attempts, clash)

    async def _queue(
        self,
        key: Destination,
        family: int,
        attempts: int,
        clash: _connector.Clash | None,
        waited: bool,
    ) -> Claim:
        """No 4-tuple is free for `key`: wait for a release (`wait=`), else fail."""
        if not self._wait or self._all_down(family):
            raise self._no_claim(key, family, attempts, clash)
        try:
            return await self._waiters.wait(
                key,
                self._wait,
                functools.partial(self._table.acquire, key, family),
                functools.partial(self._table.resting, key, family),
                first=waited,
            )
        except TimeoutError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the caller's own timeout, not ours
            raise self._no_claim(key, family, attempts, clash) from None

    def _all_down(self, family: int) -> bool:
        sources = self._families.get(family, ())
        return bool(sources) and all(ip in self._health.down for ip in sources)

    # -- what the kernel said, and what the pool makes of it ------------------------------------

    def _refused(self, claim: Claim, clash: _connector.Clash) -> None:
        """A clash: rest what was refused (see `_health.py`), or mark the source down."""
        kind = clash.kind
        if kind == _connector.SOURCE:
            # Down first: if that was the last lease of a removed source, giving the claim
            # back forgets the source, health and all.
            first = self._health.went_down(claim.source)
            self._table.source_gone(claim)
            if first:
                _log.warning(
                    "source %s is down: bind() says the address is not on this host (%s); "
                    "skipped, and tried again within %.3g s",
                    claim.source,
                    clash.error.strerror,
                    self._health.retry_in(claim.source),
                )
            else:
                _log.debug(
                    "source %s is still down; tried again in %.3g s",
                    claim.source,
                    self._health.retry_in(claim.source),
                )
            return
        self._retries += 1
        where = f"{claim.source}:{claim.port}"
        if kind == _connector.PORT:
            seconds = self._table.port_in_use(claim)
            _log.debug(
                "clash: port %s in use at bind() (EADDRINUSE: a listener or a socket without "
                "SO_REUSEADDR holds it); held %.3g s for every destination",
                where,
                seconds,
            )
            return
        own = clash.own = claim.reused
        seconds = self._table.clashed(claim)
        _log.debug(
            "clash: %s -> %s:%d refused at connect() (EADDRNOTAVAIL: %s); %s",
            where,
            *claim.destination,
            "the pool's own 4-tuple, still closing"
            if own
            else "the kernel has no free port for it"
            if self._ledger is not None
            else "another socket holds this 4-tuple",
            f"held {seconds:.3g} s" if seconds else "another source, or the next call, asks again",
        )

    def _bound(self, source: str) -> None:
        """A bind on `source` worked while it was being retried: it is up again."""
        if self._health.came_up(source):
            _log.debug("source %s is up again: bind() works", source)

    def _no_claim(
        self,
        key: tuple[str, int],
        family: int,
        attempts: int,
        clash: _connector.Clash | None,
    ) -> OSError:
        """The error when no attempt is left: no source up, or no 4-tuple free."""
        sources = self._families.get(family, ())
        down = [ip for ip in sources if ip in self._health.down]
        if sources and len(down) == len(sources):
            _log.debug("source unavailable for %s: %s down", key, ", ".join(down))
            return SourceUnavailable(key, down)
        if key[0] in sources and self._config.ports == (key[1],):
            # The one port the pool has is the destination's own, which the table never
            # hands out for it (a self-connect). Without the pool, connect() would say what
            # listens there: nothing (refused), or a listener, which also holds the port.
            refused = _connector.self_connect_refusal(family, key)
            if refused is not None:
                return refused
        self._exhausted += 1
        reason = None
        if self._ledger is not None and clash is not None:
            reason = (
                "the kernel found no free port for it in the block (connect() said "
                "EADDRNOTAVAIL; 4-tuples in TIME_WAIT count until the kernel frees them)"
            )
        elif clash is not None and clash.own:
            reason = (
                f"{attempts} attempts in a row were refused; the last 4-tuples tried are its own, "
                "released moments "
                "ago and still closing (the peer has not closed its end yet: FIN_WAIT2); "
                "they rest about 10 ms, then work again"
            )
        elif clash is not None:
            at = "connect" if clash.kind == _connector.TUPLE else "bind"
            name = errno.errorcode.get(clash.error.errno or 0, "?")
            reason = (
                f"{attempts} attempts in a row were refused, the last at {at}() ({name}): "
                "other sockets hold those 4-tuples or ports; they rest briefly, then longer "
                "if refused again"
            )
        if down:
            reason = f"{reason or 'every port is live, resting or unusable for it'}; down: "
            reason += ", ".join(down)
        error = PortsExhausted(key, sources, attempts, reason)
        error.__cause__ = clash.error if clash is not None else None
        _log.debug("%s", error)
        return error

    def _give_back(self, claim: Claim) -> None:
        """A lease ends: its 4-tuple starts cooling, then the hook hears of it."""
        self._table.release(claim)
        if self._waiters.queues:
            self._waiters.wake(claim.destination)
        if self._on_release is not None:
            lease = Lease(claim.source, claim.port, claim.destination)
            try:
                self._on_release(lease)
            except Exception:
                # It may run inside close() or a finalizer: report, never propagate.
                _log.exception("on_release hook failed for %s", lease)

    # -- the rest of the surface ---------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """A snapshot: live leases, footprint, cooling 4-tuples, counters, per source."""
        sources = self._table.statistics()
        return PoolStatistics(
            in_use=sum(s.in_use for s in sources.values()),
            footprint=sum(s.footprint for s in sources.values()),
            cooling=sum(s.cooling for s in sources.values()),
            connects=self._connects,
            retries=self._retries,
            exhausted=self._exhausted,
            sources=sources,
        )

    @property
    def sources(self) -> tuple[str, ...]:
        """The source IPs new connections may use, in canonical form, in the order given
        (then added); not those removed, even while they drain."""
        return tuple(self._sources)

    # -- sources as a living set ---------------------------------------------------------------

    def add_source(self, ip: str) -> None:
        """Let new connections use `ip` from now on (validated as the constructor's are).

        Adding a source being removed (draining) keeps it; adding one the pool has does
        nothing.

        Raises:
            ConfigurationError: `ip` is not a numeric, unicast address of this host.
        """
        (address,) = _config.check_sources([ip])
        if address in self._sources:
            return
        if self._ledger is not None:
            self._ledger.add_source(address, len(self._config.ports))
        else:
            cast("PortTable", self._table).add_source(address, self._config.ports)
        self._sources.append(address)
        self._refamily()
        drain = self._drains.pop(address, None)
        if drain is not None and not drain.done():
            drain.set_result(None)  # the removal was taken back
        _log.debug("source %s added", address)
        self._waiters.wake_all()  # room for everyone waiting, maybe

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
        if address not in self._sources:
            if address in self._drains:  # being removed already: wait with the first
                if drain:
                    await asyncio.shield(self._drains[address])
                return
            raise ConfigurationError(f"{ip!r} is not a source of this pool: {self._sources}")
        if len(self._sources) == 1:
            raise ConfigurationError(
                f"{address} is the pool's last source: add another first (add_source), "
                "or close the pool"
            )
        self._sources.remove(address)
        self._refamily()
        live = self._table.remove_source(address)
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

    def _refamily(self) -> None:
        families: dict[int, list[str]] = {}
        for address in self._sources:
            families.setdefault(family_of(address), []).append(address)
        self._families = {family: tuple(ips) for family, ips in families.items()}

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
        stats = self._table.statistics().values()
        state = "closed" if self._closed else "open"
        return (
            f"<bindpool.Pool {state} sources={list(self._sources)} "
            f"ports={len(self._config.ports)} in_use={sum(s.in_use for s in stats)} "
            f"footprint={sum(s.footprint for s in stats)}>"
        )


async def _handed_over(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    sock: PooledSocket,
    tls: _Tls | None,
) -> asyncio.Transport:
    """Give a connected socket to the loop, for `protocol`, with TLS if asked."""
    try:
        transport, _ = await loop.create_connection(
            lambda: protocol,
            sock=sock,
            ssl=tls and tls.context,
            server_hostname=tls and tls.server_hostname,
            ssl_handshake_timeout=tls and tls.handshake_timeout,
        )
    except BaseException:
        sock.close()  # we own it until the loop has it; asyncio may have closed it too
        raise
    return transport


def _family(target: _resolve.Target) -> int:
    return target[0]


def _close(result: PooledSocket | asyncio.Transport) -> None:
    """A race's loser that connected anyway: closing the socket gives its lease back."""
    result.close()
