"""aiohttp adapter: a `TCPConnector` whose every connection comes from a `bindpool.Pool`.

Theory of operation
-------------------
aiohttp's `TCPConnector` (read in 3.14.5; the shape below has held since 3.10, FIELD-NOTES.md
"aiohttp and httpx") resolves the host with its own resolver and DNS cache, then calls
`_wrap_create_connection(factory, addr_infos=..., req=..., timeout=..., client_error=...,
ssl=..., server_hostname=...)`. Its own version races the addresses with aiohappyeyeballs,
hands the winning socket to `loop.create_connection(sock=...)` inside
`ceil_timeout(timeout.sock_connect)`, and maps failures to aiohttp's errors. The method is
private, but it is the one place where a connector can connect with a retry: `socket_factory`
gets no destination and no second chance, so a 4-tuple clash there is a `ClientConnectorError`.
aiohttp's proxy path goes through it too (with `client_error=ClientProxyConnectionError`).

The override keeps everything around the connect as aiohttp has it and replaces the connect:

- The TCP step is aiohappyeyeballs' `start_connection`, through the pool: the addresses are
  ordered by the connector's `interleave` and, with its `happy_eyeballs_delay` (0.25 s by
  default, as aiohttp), raced (`bindpool._race`); without a delay they are tried one after
  the other. Each attempt is a `Pool.connect`, whose retry policy moves to another port on a
  clash; the race's losers are cancelled or closed, their leases back before the call goes
  on. Families the pool has no source for are skipped. When every address fails, aiohttp's
  caller drops the first (per family, by `interleave`) and calls again with the rest, as it
  does for its own method.
- The TLS step follows on the one connected socket, and any failure of it ends the call, as
  in aiohttp: only TCP-step failures move on to the next address. (aiohttp's caller then
  drops the address and calls again, so each address is connected once per call.)
- The same `ceil_timeout(timeout.sock_connect, ceil_threshold)` bounds the whole call, TLS
  handshake included.
- Errors map as aiohttp maps them: certificate errors to `ClientConnectorCertificateError`,
  other TLS errors to `ClientConnectorSSLError`, any other `OSError` to
  `client_error(req.connection_key, exc)`, so `PortsExhausted` (an `OSError`) becomes the
  cause of a `ClientConnectorError`; a bare timeout passes through for aiohttp to report.
  `PoolClosed` is a misuse, not a network failure, and propagates unchanged.
- The connected `PooledSocket` goes to `loop.create_connection(sock=...)` with aiohttp's own
  arguments, exactly where aiohttp puts aiohappyeyeballs' socket. The lease follows the
  socket: it goes back once when the transport closes it (asyncio) or detaches it (uvloop),
  also after a failed TLS handshake, which no protocol hears of. The pool's uvloop-native
  `create_connection` is not used: its lease follows a protocol wrapper, which loses track
  when the transport's protocol is swapped, as aiohttp's CONNECT proxy path does with
  `loop.start_tls`. Inside aiohttp it was no faster (2.6-2.9k requests/s either way, a new
  connection per request, on loopback).

Refused: `local_addr` (the pool's sources are the local addresses) and `socket_factory` (the
pool makes, binds and connects the sockets).
"""

from __future__ import annotations

try:
    import aiohttp
    from aiohttp.client_exceptions import (
        ClientConnectorCertificateError,
        ClientConnectorError,
        ClientConnectorSSLError,
        cert_errors,
        ssl_errors,
    )
    from aiohttp.helpers import ceil_timeout
except ImportError as exc:
    raise ImportError(
        "bindpool.aiohttp needs aiohttp >= 3.12: pip install 'bindpool[aiohttp]'"
    ) from exc

import asyncio
import errno
import functools
from typing import TYPE_CHECKING, Any

from bindpool import _race
from bindpool._errors import ConfigurationError, combined, no_source_for
from bindpool._pool import Pool
from bindpool._table import family_of

if TYPE_CHECKING:
    from aiohappyeyeballs import AddrInfoType
    from aiohttp.client_proto import ResponseHandler
    from aiohttp.client_reqrep import ClientRequest

    from bindpool._socket import PooledSocket

__all__ = ["TCPConnector"]

_MINIMUM = (3, 12)
if tuple(int(part) for part in aiohttp.__version__.split(".")[:2]) < _MINIMUM:
    raise ImportError(
        f"bindpool.aiohttp needs aiohttp >= 3.12, found {aiohttp.__version__}: "
        "pip install 'bindpool[aiohttp]'"
    )

# aiohttp.TCPConnector's default (3.12 to 3.14); a test checks they still agree.
HAPPY_EYEBALLS_DELAY = 0.25

# What aiohttp's own TCPConnector offers that the pool replaces: the message says why.
_REFUSED = {
    "local_addr": "the pool's sources are the local addresses: give them to bindpool.Pool",
    "socket_factory": "the pool makes, binds and connects the sockets itself",
}


class TCPConnector(aiohttp.TCPConnector):
    """An `aiohttp.TCPConnector` whose connections come from `pool`.

    Everything else is aiohttp's: connection limits, keep-alive and reuse, DNS resolution
    and caching, TLS settings, timeouts, proxies. Each TCP connection aiohttp opens holds one
    lease of the pool for as long as the connection is open, idle in aiohttp's pool
    included; closing the connector (or the session) closes them and gives them back.

    Args:
        pool: the pool to take connections from. The connector does not close it.
        **kwargs: any `aiohttp.TCPConnector` argument but `local_addr` and `socket_factory`.

    Raises:
        ConfigurationError: `pool` is not a `bindpool.Pool`, `local_addr` or
            `socket_factory` was given, or `happy_eyeballs_delay` or `interleave` is not a
            number aiohttp could use.
    """

    def __init__(self, pool: Pool, **kwargs: Any) -> None:
        if not isinstance(pool, Pool):
            raise ConfigurationError(f"pool must be a bindpool.Pool, not {pool!r}")
        for name, why in _REFUSED.items():
            if kwargs.get(name) is not None:
                raise ConfigurationError(
                    f"bindpool.aiohttp.TCPConnector does not take {name}: {why}"
                )
        # aiohttp keeps these as _happy_eyeballs_delay and _interleave; a copy of our own,
        # so that a change of those private names cannot silently turn the race off.
        self._eyeballs = _race.Eyeballs(
            kwargs.get("happy_eyeballs_delay", HAPPY_EYEBALLS_DELAY), kwargs.get("interleave")
        )
        _race.check(*self._eyeballs)
        super().__init__(**kwargs)
        self._pool = pool
        self._families = frozenset(family_of(source) for source in pool.sources)

    @property
    def pool(self) -> Pool:
        """The pool the connections come from."""
        return self._pool

    async def _wrap_create_connection(
        self,
        *args: Any,
        addr_infos: list[AddrInfoType],
        req: ClientRequest,
        timeout: aiohttp.ClientTimeout,
        client_error: type[Exception] = ClientConnectorError,
        **kwargs: Any,
    ) -> tuple[asyncio.Transport, ResponseHandler]:
        """Connect through the pool; aiohttp's own bounds and error mapping around it."""
        usable = [info for info in addr_infos if info[0] in self._families]
        if not usable:
            problem = no_source_for(req.host, (info[0] for info in addr_infos), self._pool.sources)
            raise client_error(
                req.connection_key, OSError(errno.EAFNOSUPPORT, str(problem))
            ) from problem
        shutdown = getattr(self, "_ssl_shutdown_timeout", None)  # appeared during 3.12
        if kwargs.get("ssl") and shutdown:
            # What aiohttp's own method adds (the deprecated ssl_shutdown_timeout argument).
            kwargs["ssl_shutdown_timeout"] = shutdown
        try:
            async with ceil_timeout(timeout.sock_connect, ceil_threshold=timeout.ceil_threshold):
                sock = await self._tcp(usable)
                try:
                    # The TLS step, if any: whatever fails here ends the call, as in aiohttp.
                    return await self._loop.create_connection(*args, **kwargs, sock=sock)
                except BaseException:
                    # Ours until the loop has it; closing gives the lease back (once, even
                    # if the loop closed it too).
                    sock.close()
                    raise
        except cert_errors as exc:
            raise ClientConnectorCertificateError(req.connection_key, exc) from exc
        except ssl_errors as exc:
            raise ClientConnectorSSLError(req.connection_key, exc) from exc
        except OSError as exc:
            if exc.errno is None and isinstance(exc, asyncio.TimeoutError):
                raise
            raise client_error(req.connection_key, exc) from exc

    async def _tcp(self, usable: list[AddrInfoType]) -> PooledSocket:
        """The TCP step: a connected pooled socket to one of the addresses, as
        aiohappyeyeballs' `start_connection` orders, races or tries them."""
        eyeballs = self._eyeballs
        ordered = _race.order(usable, _family, eyeballs)
        # The address's host, not the tuple: a scoped IPv6 address keeps its zone there
        # ("fe80::1%eth0"), which the pool resolves into the scope id.
        attempts = [
            functools.partial(self._pool.connect, info[4][0], info[4][1]) for info in ordered
        ]
        if eyeballs.delay is None or len(attempts) == 1:
            errors: list[OSError] = []
            for attempt in attempts:
                try:
                    return await attempt()
                except OSError as exc:
                    errors.append(exc)
            raise combined(errors)
        return await _race.race(attempts, eyeballs.delay, _close)


def _family(info: AddrInfoType) -> int:
    return int(info[0])


def _close(sock: PooledSocket) -> None:
    sock.close()
