"""httpx through the pool: an `AsyncHTTPTransport` whose connections come from a `Pool`.

    pool = bindpool.Pool(["192.0.2.7", "192.0.2.8"])
    async with httpx.AsyncClient(transport=bindpool.httpx.AsyncHTTPTransport(pool)) as client:
        response = await client.get("https://example.com/")

Theory of operation (httpx 0.28.1, httpcore 1.0.9, anyio 4.16; see FIELD-NOTES.md):

- httpx has no public network-backend argument, but httpcore's `AsyncConnectionPool` (and its
  `AsyncHTTPProxy` / `AsyncSOCKSProxy` subclasses) takes `network_backend=`, and
  `httpx.AsyncHTTPTransport` keeps the httpcore pool it sends requests through in `self._pool`
  (`handle_async_request`, `aclose`, `__aenter__`, `__aexit__` use nothing else). So the
  transport here builds the same httpcore pool httpx would, with `PoolBackend` as its backend,
  and inherits the rest: httpx's pool limits, keep-alive, HTTP/1.1, HTTP/2 (with h2), TLS,
  timeouts, retries and its mapping of httpcore errors to httpx ones.
- httpcore calls `connect_tcp(host, port, timeout, local_address, socket_options)` with the
  URL's host, unresolved; `Pool.connect` resolves it without blocking the loop and bounds
  resolution, bind and connect by the connect timeout. A host with several addresses is
  raced as anyio's `connect_tcp` (httpcore's own backend) races it: the next address 0.25 s
  after the previous one or as soon as it fails, the first connected wins (`Pool.connect`'s
  `happy_eyeballs_delay`; its interleave 1 alternates families in the resolver's order,
  where anyio puts the first IPv6 address, then the first IPv4 one, first). Socket options
  are set after the connect, as httpcore's own backends do. `local_address` has no meaning
  here: the pool's sources replace it, so the transport refuses it (and `uds`) outright.
- anyio >= 4.10 `SocketStream.from_socket` wraps the connected `PooledSocket` (on asyncio,
  through `loop.create_connection(sock=...)`); TLS is anyio's `TLSStream.wrap` on top, as in
  httpcore's `AnyIOStream`, so TLS through an HTTP proxy's CONNECT tunnel works the same way.
  The streams mirror `AnyIOStream`, including its error mapping (OSError -> ConnectError,
  TimeoutError -> ConnectTimeout, ...), with one change: httpcore's `start_tls` closes the
  stream on `Exception` only, so a cancelled handshake leaks the socket; here it closes on
  `BaseException`.
- httpcore's pool re-raises every failure with `raise exc from None` (connection_pool.py),
  which clears the cause the backend set; the transport puts it back from `__context__`, so
  an `httpx.ConnectError`'s `__cause__` chain holds the `OSError` (e.g. `PortsExhausted`).
- The lease goes back exactly once, by the socket itself (`PooledSocket`): anyio's `aclose()`
  aborts the transport synchronously, and the loop then closes (asyncio) or detaches (uvloop)
  the socket. Until the loop owns it, `connect_tcp` closes the socket itself on any failure.
- asyncio and uvloop only: trio's `from_stdlib_socket` refuses `socket.socket` subclasses, so
  under any other library `connect_tcp` fails at once with `ConfigurationError`.
"""

from __future__ import annotations

try:
    import anyio
    import httpcore
    import httpx
    from anyio.abc import SocketAttribute, SocketStream
    from anyio.streams.tls import TLSAttribute, TLSStream
except ImportError as exc:
    raise ImportError("bindpool.httpx needs httpx: pip install 'bindpool[httpx]'") from exc

import asyncio
import contextlib
import importlib.util
import select
from typing import TYPE_CHECKING, Any, TypeAlias

from bindpool._errors import ConfigurationError
from bindpool._pool import Pool

if TYPE_CHECKING:
    import socket
    import ssl
    from collections.abc import Iterable, Iterator, Mapping

    from anyio.abc import ByteStream

__all__ = ["AsyncHTTPTransport", "PoolBackend"]

# anyio's connect_tcp default (4.x), which httpcore's AnyIOBackend uses; a test checks it.
HAPPY_EYEBALLS_DELAY = 0.25

# httpcore's SOCKET_OPTION and httpx's CertTypes, spelled out: both live in private modules.
SocketOption: TypeAlias = (
    tuple[int, int, int] | tuple[int, int, bytes | bytearray] | tuple[int, int, None, int]
)
CertTypes: TypeAlias = str | tuple[str, str] | tuple[str, str, str]

# httpx 0.28's DEFAULT_LIMITS (private in httpx._config); a test checks they still agree.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

_ExceptionMap: TypeAlias = "Mapping[type[BaseException], type[Exception]]"

# The maps of httpcore 1.0.9's AnyIOStream/AnyIOBackend, in the same order (first match
# wins, so TimeoutError, an OSError, comes before OSError). OSError on read, write and TLS is
# an extra safety net: anyio turns socket errors into BrokenResourceError already.
_CONNECT_ERRORS: _ExceptionMap = {
    TimeoutError: httpcore.ConnectTimeout,
    OSError: httpcore.ConnectError,
    anyio.BrokenResourceError: httpcore.ConnectError,
}
_TLS_ERRORS: _ExceptionMap = {
    TimeoutError: httpcore.ConnectTimeout,
    anyio.BrokenResourceError: httpcore.ConnectError,
    anyio.EndOfStream: httpcore.ConnectError,
    OSError: httpcore.ConnectError,  # ssl.SSLError (a failed verification) is one
}
_READ_ERRORS: _ExceptionMap = {
    TimeoutError: httpcore.ReadTimeout,
    anyio.BrokenResourceError: httpcore.ReadError,
    anyio.ClosedResourceError: httpcore.ReadError,
    anyio.EndOfStream: httpcore.ReadError,
    OSError: httpcore.ReadError,
}
_WRITE_ERRORS: _ExceptionMap = {
    TimeoutError: httpcore.WriteTimeout,
    anyio.BrokenResourceError: httpcore.WriteError,
    anyio.ClosedResourceError: httpcore.WriteError,
    OSError: httpcore.WriteError,
}


# httpcore's get_extra_info keys for the two ends of the connection.
_ADDRESSES = {
    "client_addr": SocketAttribute.local_address,
    "server_addr": SocketAttribute.remote_address,
}


@contextlib.contextmanager
def _mapped(errors: _ExceptionMap) -> Iterator[None]:
    """httpcore's `map_exceptions`: the first matching class wins; the original is the
    cause (until httpcore's pool clears it: see `_restore_cause`)."""
    try:
        yield
    except Exception as exc:
        for source, target in errors.items():
            if isinstance(exc, source):
                raise target(str(exc)) from exc
        raise


def _refuse_local_address(local_address: str) -> ConfigurationError:
    return ConfigurationError(
        f"local_address={local_address!r} is not accepted: the pool's sources replace it "
        "(give the IPs to bindpool.Pool(sources) instead)"
    )


def _refuse_uds(path: str) -> ConfigurationError:
    return ConfigurationError(
        f"uds={path!r} is not accepted: connections are TCP from the pool's sources, and "
        "the pool's sources replace it (use httpx.AsyncHTTPTransport(uds=...) for a Unix "
        "socket)"
    )


def _require_asyncio() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise ConfigurationError(
            "bindpool.httpx needs asyncio (or uvloop): no asyncio loop is running here, and "
            "trio refuses the socket.socket subclass the pool hands out"
        ) from None


def _is_readable(sock: socket.socket | None) -> bool:
    """httpcore's `is_socket_readable`: data or EOF waiting means an idle connection is
    unusable. A socket already gone counts as readable (its next read is the end)."""
    fd = -1 if sock is None else sock.fileno()
    if fd < 0:
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))


class _PoolStream(httpcore.AsyncNetworkStream):
    """httpcore's view of one pooled connection: an anyio byte stream, plain or TLS."""

    def __init__(self, stream: ByteStream) -> None:
        self._stream = stream

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        with _mapped(_READ_ERRORS), anyio.fail_after(timeout):
            try:
                return await self._stream.receive(max_bytes)
            except anyio.EndOfStream:
                return b""  # the peer closed: httpcore reads b"" as the end

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        with _mapped(_WRITE_ERRORS), anyio.fail_after(timeout):
            await self._stream.send(buffer)

    async def aclose(self) -> None:
        # anyio's asyncio SocketStream aborts its transport before its first await, so the
        # socket closes (and its lease goes back) even if this is cancelled.
        await self._stream.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            with _mapped(_TLS_ERRORS), anyio.fail_after(timeout):
                tls = await TLSStream.wrap(
                    self._stream,
                    server_side=False,
                    hostname=server_hostname,
                    ssl_context=ssl_context,
                    standard_compatible=False,  # as httpcore: no close_notify, EOF is fine
                )
        except BaseException:
            # httpcore's AnyIOStream catches Exception only: a cancelled handshake would
            # leave this socket open and its lease out. Close it, cancellation included.
            await anyio.aclose_forcefully(self._stream)
            raise
        return _PoolStream(tls)

    def get_extra_info(self, info: str) -> Any:
        stream = self._stream
        if info == "ssl_object":
            return stream.extra(TLSAttribute.ssl_object, None)
        if info in _ADDRESSES:
            return stream.extra(_ADDRESSES[info], None)
        if info == "socket":
            return stream.extra(SocketAttribute.raw_socket, None)
        if info == "is_readable":
            return _is_readable(stream.extra(SocketAttribute.raw_socket, None))
        return None


class PoolBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend whose TCP connections come from `pool`.

    Use it with httpcore directly (`httpcore.AsyncConnectionPool(network_backend=...)`);
    with httpx, `AsyncHTTPTransport` builds one for you.
    """

    def __init__(self, pool: Pool) -> None:
        if not isinstance(pool, Pool):
            raise ConfigurationError(f"pool must be a bindpool.Pool, not {pool!r}")
        self.pool = pool

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """`pool.connect(host, port, timeout=timeout, happy_eyeballs_delay=0.25)`, as an
        httpcore stream.

        Raises:
            httpcore.ConnectError: refused, unreachable, name not found, or `PortsExhausted`
                (kept as the cause).
            httpcore.ConnectTimeout: `timeout` passed.
            bindpool.PoolClosed: the pool was closed.
            bindpool.ConfigurationError: `local_address` given; not running on asyncio.
        """
        _require_asyncio()
        if local_address is not None:
            raise _refuse_local_address(local_address)
        with _mapped(_CONNECT_ERRORS):
            sock = await self.pool.connect(
                host, port, timeout=timeout, happy_eyeballs_delay=HAPPY_EYEBALLS_DELAY
            )
            try:
                for option in socket_options or ():
                    sock.setsockopt(*option)
                stream = await SocketStream.from_socket(sock)
            except BaseException:
                sock.close()  # ours until the loop has it; closing twice is harmless
                raise
        return _PoolStream(stream)

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise _refuse_uds(path)

    async def sleep(self, seconds: float) -> None:
        await anyio.sleep(seconds)


class AsyncHTTPTransport(httpx.AsyncHTTPTransport):
    """`httpx.AsyncHTTPTransport` whose connections come from `pool`.

    Takes httpx's own arguments (keyword-only) and keeps their meaning: `verify`, `cert`,
    `trust_env`, `http1`, `http2` (needs h2), `limits`, `proxy` (the pool connects to the
    proxy), `retries`, `socket_options`. Closing the transport closes its connections; the
    pool itself stays open (it may serve other clients).

    Attributes:
        backend: the `PoolBackend` the httpcore pool connects through.

    Raises:
        ConfigurationError: `local_address` or `uds` given (the pool's sources replace them),
            or `pool` is not a `bindpool.Pool`.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        verify: ssl.SSLContext | str | bool = True,
        cert: CertTypes | None = None,
        trust_env: bool = True,
        http1: bool = True,
        http2: bool = False,
        limits: httpx.Limits = DEFAULT_LIMITS,
        proxy: httpx.URL | str | httpx.Proxy | None = None,
        uds: str | None = None,
        local_address: str | None = None,
        retries: int = 0,
        socket_options: Iterable[SocketOption] | None = None,
    ) -> None:
        # No super().__init__(): it would build an httpcore pool with the default backend and
        # no way to pass ours. What follows is httpx 0.28.1's body with `network_backend`.
        if local_address is not None:
            raise _refuse_local_address(local_address)
        if uds is not None:
            raise _refuse_uds(uds)
        backend = PoolBackend(pool)
        self.backend = backend
        if isinstance(proxy, str | httpx.URL):
            proxy = httpx.Proxy(url=proxy)
        ssl_context = httpx.create_ssl_context(verify=verify, cert=cert, trust_env=trust_env)
        common: dict[str, Any] = {
            "ssl_context": ssl_context,
            "max_connections": limits.max_connections,
            "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry,
            "http1": http1,
            "http2": http2,
            "retries": retries,
            "network_backend": backend,
        }
        if proxy is None:
            self._pool = httpcore.AsyncConnectionPool(**common, socket_options=socket_options)
        elif proxy.url.scheme in ("http", "https"):
            self._pool = httpcore.AsyncHTTPProxy(
                proxy_url=_core_url(proxy.url),
                proxy_auth=proxy.raw_auth,
                proxy_headers=proxy.headers.raw,
                proxy_ssl_context=proxy.ssl_context,
                socket_options=socket_options,
                **common,
            )
        else:  # socks5 or socks5h: httpx.Proxy accepts no other scheme
            if importlib.util.find_spec("socksio") is None:  # httpcore imports it later
                raise ImportError(
                    "Using SOCKS proxy, but the 'socksio' package is not installed. "
                    "Make sure to install httpx using `pip install httpx[socks]`."
                )
            self._pool = httpcore.AsyncSOCKSProxy(
                proxy_url=_core_url(proxy.url), proxy_auth=proxy.raw_auth, **common
            )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            return await super().handle_async_request(request)
        except httpx.TransportError as exc:
            _restore_cause(exc.__cause__)
            raise

    @property
    def pool(self) -> Pool:
        """The `bindpool.Pool` the connections come from."""
        return self.backend.pool

    def __repr__(self) -> str:
        return f"<bindpool.httpx.AsyncHTTPTransport {self.pool!r}>"


def _restore_cause(error: BaseException | None) -> None:
    """Give an httpcore error back the cause httpcore's own pool took from it.

    httpcore 1.0.9's `AsyncConnectionPool.handle_async_request` re-raises every failure with
    `raise exc from None`, which clears the cause a backend set (ours: the `OSError`, e.g.
    `PortsExhausted`). The error it was raised from is still its `__context__`.
    """
    if (
        isinstance(error, httpcore.NetworkError | httpcore.TimeoutException)
        and error.__cause__ is None
        and error.__suppress_context__
        and error.__context__ is not None
    ):
        error.__cause__ = error.__context__


def _core_url(url: httpx.URL) -> httpcore.URL:
    return httpcore.URL(
        scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=url.raw_path
    )
