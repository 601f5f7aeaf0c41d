"""One connection: resolve, race or try the addresses, the retry policy, the kernel's answers.

The `Pool` is the public surface; this is its machinery, the connect path. `Dialer.dial`
resolves (an IP literal from a cache, a name with the loop's getaddrinfo), tries the
addresses in turn or races them (`_race.py`), and for each address runs the retry policy
around single attempts (`_connector.py`), each on a 4-tuple from the allocator (the port
table, or the kernel strategy's ledger).

Ownership. A claim belongs to the retry loop from `acquire()` until the attempt succeeds;
then what the attempt made adopts it: a `PooledSocket` gives it back when closed, detached
or collected; on uvloop's native path, the `LeasedStreamProtocol` when the connection is
lost. On every other way out (refused, timeout, cancellation, any exception) the loop gives
it back itself before the error propagates. A clash gives the 4-tuple back to the table as
resting, not as a lease: no `on_release` call, one more in `retries`.

Reading the kernel's answers (`_connector.Clash`, rests in `_health.py`): a refused
4-tuple or port rests as long as the evidence warrants and the loop moves on to another; a
source whose address left the host goes down and the loop moves on to another source; when
no source of the family is up, the call fails as `SourceUnavailable`. With `wait=`, a call
that finds no free 4-tuple waits in line for a release (`_waiters.py`). Each decision is
logged on logger "bindpool" (DEBUG; WARNING when a source goes down).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import logging
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn, Protocol, cast

from bindpool import _connector, _race, _resolve
from bindpool._errors import PortsExhausted, SourceUnavailable, combined, no_source_for
from bindpool._table import family_of
from bindpool._types import Lease

if TYPE_CHECKING:
    import ssl as _ssl
    from collections.abc import Awaitable

    from bindpool._claim import Claim, Destination
    from bindpool._config import PoolConfig
    from bindpool._health import Health
    from bindpool._ledger import KernelLedger
    from bindpool._protocol import LeasedStreamProtocol
    from bindpool._socket import PooledSocket
    from bindpool._sources import SourceSet
    from bindpool._types import SourceStatistics
    from bindpool._waiters import Waiters

__all__ = ["Allocator", "Dialer", "Tls"]

_log = logging.getLogger("bindpool")


class Tls(NamedTuple):
    """What a TLS connection needs besides the socket, as asyncio takes it."""

    context: _ssl.SSLContext | bool
    server_hostname: str | None
    handshake_timeout: float | None


class Allocator(Protocol):
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


class Dialer:
    """Opens connections for a `Pool` and takes their leases back (it is their owner).

    Attributes:
        table: the allocator (a `PortTable`, or the `KernelLedger`).
        ledger: the same allocator when the strategy is "kernel", else None.
        health: which sources are up.
        waiters: connects waiting for a 4-tuple (`wait=`).
        sources: the source IPs new connections may use, in order.
        families: the same by address family (no empty entries).
        connects, retries, exhausted: the pool's counters.
    """

    def __init__(
        self,
        config: PoolConfig,
        table: Allocator,
        ledger: KernelLedger | None,
        options: tuple[_connector.Option, ...],
        health: Health,
        waiters: Waiters,
        wait: float,
    ) -> None:
        self._config = config
        self._options = options
        self._on_release = config.on_release
        self._wait = wait
        self.table = table
        self.ledger = ledger
        self.health = health
        self.waiters = waiters
        self.sources = list(config.sources)
        self.families: dict[int, tuple[str, ...]] = {}
        self.refamily()
        self.connects = 0
        self.retries = 0
        self.exhausted = 0

    def refamily(self) -> None:
        """`sources` changed: recompute `families`."""
        families: dict[int, list[str]] = {}
        for address in self.sources:
            families.setdefault(family_of(address), []).append(address)
        self.families = {family: tuple(ips) for family, ips in families.items()}

    async def hand_over(
        self,
        loop: asyncio.AbstractEventLoop,
        protocol: asyncio.BaseProtocol,
        host: str,
        port: int,
        timeout: float | None,
        tls: Tls | None,
        eyeballs: _race.Eyeballs | None,
    ) -> asyncio.Transport:
        """Connect a socket, then give it to the loop. TLS goes this way, so that `timeout`
        ends with the connect and the handshake has `ssl_handshake_timeout` to itself."""
        sock = cast("PooledSocket", await self.dial(loop, host, port, timeout, None, eyeballs))
        return await _handed_over(loop, protocol, sock, tls)

    # -- one connection: resolve, then the retry policy around single attempts -----------------
    #
    # `dial` is a plain function that returns the coroutine to await:
    # for an IP literal without a timeout (the hot path), `open_connection` then awaits the
    # retry loop directly. Each coroutine frame in between is passed through on every
    # resumption; on uvloop, three of them cost ~15% of the connect rate.

    def dial(
        self,
        loop: asyncio.AbstractEventLoop,
        host: str,
        port: int,
        timeout: float | None,
        protocol: LeasedStreamProtocol | None,
        eyeballs: _race.Eyeballs | None = None,
    ) -> Awaitable[PooledSocket | asyncio.Transport]:
        """Resolve, then try each address in turn or race them; all within `timeout`.

        With `protocol` None the result is a socket; else a transport for `protocol`, made by
        the loop's native connect (or, for a race or a scoped IPv6 address, a hand-over).
        `loop` is the running loop, asked for once per connection by the caller: each
        `asyncio.get_running_loop()` is a getpid() system call (CPython 3.11 checks for a
        fork), 0.3-0.4 us here.
        """
        targets = _resolve.literal(host, port)
        if timeout is None and targets is not None:
            target = targets[0]  # an IP literal: one address
            address = target[1]
            if target[0] in self.families and (
                protocol is None or len(address) < 4 or not address[3]  # no scope id: _one
            ):
                return self._retry(loop, target, protocol)
        return self._dial_generally(loop, host, port, timeout, protocol, targets, eyeballs)

    async def _dial_generally(
        self,
        loop: asyncio.AbstractEventLoop,
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
                if targets is None:
                    targets = await _resolve.resolve(loop, host, port)
                usable = [t for t in targets if t[0] in self.families]
                if not usable:
                    raise no_source_for(host, (t[0] for t in targets), self.sources)
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
            f"connecting to {where} from {', '.join(self.sources)} timed out "
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
        table = self.table
        family, address, key = target
        clash: _connector.Clash | None = None
        avoid: frozenset[str] | None = None  # strategy "kernel": sources full for key now
        waited = False  # in line for a release already (`wait=`)
        for attempts in range(self._config.max_attempts):
            if self.waiters.queues and key in self.waiters.queues:
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
                    ledger = self.ledger  # the kernel picks the port: the ledger records it
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
                if self.ledger is not None and exc.kind == _connector.TUPLE:
                    avoid = (avoid or frozenset()) | {claim.source}
                continue
            except BaseException:
                if self.health.probing:
                    self._bound(claim.source)  # the bind worked: the address is back
                self._give_back(claim)
                raise
            if self.health.probing:
                self._bound(claim.source)
            self.connects += 1
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
            return await self.waiters.wait(
                key,
                self._wait,
                functools.partial(self.table.acquire, key, family),
                functools.partial(self.table.resting, key, family),
                first=waited,
            )
        except TimeoutError:
            if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                raise  # the caller's own timeout, not ours
            raise self._no_claim(key, family, attempts, clash) from None

    def _all_down(self, family: int) -> bool:
        sources = self.families.get(family, ())
        return bool(sources) and all(ip in self.health.down for ip in sources)

    # -- what the kernel said, and what the pool makes of it ------------------------------------

    def _refused(self, claim: Claim, clash: _connector.Clash) -> None:
        """A clash: rest what was refused (see `_health.py`), or mark the source down."""
        kind = clash.kind
        if kind == _connector.SOURCE:
            # Down first: if that was the last lease of a removed source, giving the claim
            # back forgets the source, health and all.
            first = self.health.went_down(claim.source)
            self.table.source_gone(claim)
            if first:
                _log.warning(
                    "source %s is down: bind() says the address is not on this host (%s); "
                    "skipped, and tried again within %.3g s",
                    claim.source,
                    clash.error.strerror,
                    self.health.retry_in(claim.source),
                )
            else:
                _log.debug(
                    "source %s is still down; tried again in %.3g s",
                    claim.source,
                    self.health.retry_in(claim.source),
                )
            return
        self.retries += 1
        where = f"{claim.source}:{claim.port}"
        if kind == _connector.PORT:
            seconds = self.table.port_in_use(claim)
            _log.debug(
                "clash: port %s in use at bind() (EADDRINUSE: a listener or a socket without "
                "SO_REUSEADDR holds it); held %.3g s for every destination",
                where,
                seconds,
            )
            return
        own = clash.own = claim.reused
        seconds = self.table.clashed(claim)
        _log.debug(
            "clash: %s -> %s:%d refused at connect() (EADDRNOTAVAIL: %s); %s",
            where,
            *claim.destination,
            "the pool's own 4-tuple, still closing"
            if own
            else "the kernel has no free port for it"
            if self.ledger is not None
            else "another socket holds this 4-tuple",
            f"held {seconds:.3g} s" if seconds else "another source, or the next call, asks again",
        )

    def _bound(self, source: str) -> None:
        """A bind on `source` worked while it was being retried: it is up again."""
        if self.health.came_up(source):
            _log.debug("source %s is up again: bind() works", source)

    def _no_claim(
        self,
        key: tuple[str, int],
        family: int,
        attempts: int,
        clash: _connector.Clash | None,
    ) -> OSError:
        """The error when no attempt is left: no source up, or no 4-tuple free."""
        sources = self.families.get(family, ())
        down = [ip for ip in sources if ip in self.health.down]
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
        self.exhausted += 1
        reason = None
        if self.ledger is not None and clash is not None:
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
        self.table.release(claim)
        if self.waiters.queues:
            self.waiters.wake(claim.destination)
        if self._on_release is not None:
            lease = Lease(claim.source, claim.port, claim.destination)
            try:
                self._on_release(lease)
            except Exception:
                # It may run inside close() or a finalizer: report, never propagate.
                _log.exception("on_release hook failed for %s", lease)


async def _handed_over(
    loop: asyncio.AbstractEventLoop,
    protocol: asyncio.BaseProtocol,
    sock: PooledSocket,
    tls: Tls | None,
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
