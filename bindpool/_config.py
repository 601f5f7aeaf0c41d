"""Checking a pool's arguments once, at construction, with messages that say what to fix.

Also the per-call checks of `connect()` and friends, so a bad call fails before any port is
taken or any socket exists.
"""

from __future__ import annotations

import ipaddress
import math
import socket
import ssl as _ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from bindpool import _host
from bindpool._errors import ConfigurationError
from bindpool._table import family_of

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from bindpool._types import Lease

__all__ = [
    "PoolConfig",
    "check_destination",
    "check_sources",
    "check_timeout",
    "check_tls",
    "configure",
]

Strategy = Literal["table", "kernel"]
STRATEGIES = ("table", "kernel")


@dataclass(frozen=True, slots=True)
class PoolConfig:
    """A pool's arguments, checked and normalised."""

    sources: tuple[str, ...]  # canonical text, order kept, no duplicates
    ports: tuple[int, ...]  # sorted; this process's shard of them
    cooldown: float
    max_attempts: int
    on_release: Callable[[Lease], object] | None
    strategy: Strategy
    # strategy "kernel": the block to narrow the kernel's pick to with IP_LOCAL_PORT_RANGE,
    # or None where the kernel lacks that option (the block is then the ephemeral range)
    span: tuple[int, int] | None = None


def configure(
    sources: Iterable[str],
    *,
    ports: Iterable[int] | None,
    cooldown: float,
    max_attempts: int,
    on_release: Callable[[Lease], object] | None,
    shard: tuple[int, int] | None,
    strategy: str,
) -> PoolConfig:
    """Check every argument of `Pool()`; raise `ConfigurationError` on the first bad one."""
    if strategy not in STRATEGIES:
        raise ConfigurationError(f"strategy must be 'table' or 'kernel', not {strategy!r}")
    if isinstance(cooldown, bool) or not isinstance(cooldown, int | float):
        raise ConfigurationError(f"cooldown must be a number of seconds, not {cooldown!r}")
    if not math.isfinite(cooldown) or cooldown < 0:
        raise ConfigurationError(f"cooldown must be a finite number >= 0, not {cooldown!r}")
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be an int >= 1, not {max_attempts!r}")
    if on_release is not None and not callable(on_release):
        raise ConfigurationError(f"on_release must be callable(Lease) or None, not {on_release!r}")
    addresses = check_sources(sources)
    kernel = strategy == "kernel"
    # The kernel never picks a reserved port (net.ipv4.ip_local_reserved_ports).
    reserved = frozenset(_host.reserved_ports()) if kernel else frozenset()
    chosen = _kernel_ports(ports, reserved) if kernel else _check_ports(ports)
    if shard is not None:
        chosen = _slice(chosen, shard)
    return PoolConfig(
        sources=addresses,
        ports=chosen,
        cooldown=float(cooldown),
        max_attempts=max_attempts,
        on_release=on_release,
        strategy="kernel" if kernel else "table",
        span=_kernel_span(chosen, reserved) if kernel else None,
    )


def check_sources(sources: Iterable[str]) -> tuple[str, ...]:
    """Canonical, local, unicast source IPs, without duplicates; else ConfigurationError."""
    if isinstance(sources, str | bytes):
        raise ConfigurationError(
            f"sources must be an iterable of IP strings, not one string: Pool([{sources!r}])"
        )
    try:
        items = list(sources)
    except TypeError:
        raise ConfigurationError(
            f"sources must be an iterable of IP strings, not {sources!r}"
        ) from None
    if not items:
        raise ConfigurationError("sources is empty: give at least one local IP to bind to")
    canonical: dict[str, None] = {}
    for item in items:
        address = _canonical_source(item)
        if not _host.is_local(address, family_of(address)):
            raise ConfigurationError(
                f"source {item!r} is not an address of this host (bind() refuses it): "
                "use one that `ip addr` lists, or any 127.x.y.z on loopback"
            )
        canonical[address] = None
    return tuple(canonical)


def _canonical_source(item: object) -> str:
    if not isinstance(item, str):
        raise ConfigurationError(f"source {item!r} must be a str such as '192.0.2.7'")
    try:
        ip = ipaddress.ip_address(item)
    except ValueError:
        raise ConfigurationError(
            f"source {item!r} is not a numeric IP address: bind() would resolve a name "
            "synchronously and block the event loop; resolve it once beforehand"
        ) from None
    if ip.is_unspecified or ip.is_multicast:
        raise ConfigurationError(
            f"source {item!r} is not a unicast address: bind to the exact local IP whose "
            "ports the pool manages"
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        raise ConfigurationError(
            f"source {item!r} is IPv4-mapped: give it as {str(ip.ipv4_mapped)!r}"
        )
    return str(ip)


def _check_ports(ports: Iterable[int] | None) -> tuple[int, ...]:
    if ports is None:
        chosen = _host.default_ports()
        if not chosen:
            raise ConfigurationError("this host reports an empty port range: pass ports=")
        return tuple(sorted(set(chosen)))
    if isinstance(ports, str | bytes):
        raise ConfigurationError(f"ports must be a range or iterable of ints, not {ports!r}")
    try:
        items = list(ports)
    except TypeError:
        raise ConfigurationError(
            f"ports must be a range or iterable of ints, not {ports!r}"
        ) from None
    if not items:
        raise ConfigurationError("ports is empty: give at least one port, e.g. range(40000, 41000)")
    for port in items:
        if isinstance(port, bool) or not isinstance(port, int):
            raise ConfigurationError(f"ports must hold ints, found {port!r}")
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"port {port} is outside 1-65535")
    return tuple(sorted(set(items)))


def _slice(ports: tuple[int, ...], shard: object) -> tuple[int, ...]:
    """This shard's contiguous slice of `ports`: `count` nearly equal, disjoint, covering."""
    if (
        not isinstance(shard, tuple)
        or len(shard) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
    ):
        raise ConfigurationError(f"shard must be a tuple (index, count) of ints, not {shard!r}")
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigurationError(f"shard {shard!r} needs count >= 1 and 0 <= index < count")
    if count > len(ports):
        raise ConfigurationError(
            f"shard count {count} exceeds the {len(ports)} ports: a shard would be empty"
        )
    size, extra = divmod(len(ports), count)
    start = index * size + min(index, extra)
    return ports[start : start + size + (index < extra)]


def _kernel_ports(ports: Iterable[int] | None, reserved: frozenset[int]) -> tuple[int, ...]:
    """strategy "kernel": the ports its pick may land on. Default: the ephemeral range."""
    if ports is None:
        chosen = tuple(port for port in _host.ephemeral_range() if port not in reserved)
        if not chosen:
            raise ConfigurationError("every port of the ephemeral range is reserved: pass ports=")
        return chosen
    chosen = _check_ports(ports)
    if taken := reserved.intersection(chosen):
        raise ConfigurationError(
            f"strategy='kernel' cannot use reserved ports ({_host.format_port_list(list(taken))} "
            "are in net.ipv4.ip_local_reserved_ports, and the kernel's pick skips them): use a "
            "block clear of them, or strategy='table', which uses reserved ports by default"
        )
    return chosen


def _kernel_span(ports: tuple[int, ...], reserved: frozenset[int]) -> tuple[int, int] | None:
    """What strategy "kernel" needs of `ports`, or ConfigurationError saying why not.

    Returns the block to narrow the kernel's pick to, or None where the kernel cannot
    narrow it (and the block is the whole ephemeral range).
    """
    if not _host.has_option(socket.SOL_IP, _host.IP_BIND_ADDRESS_NO_PORT, 1):
        raise ConfigurationError(
            "strategy='kernel' needs IP_BIND_ADDRESS_NO_PORT (Linux >= 4.2), which this "
            "kernel lacks: use strategy='table'"
        )
    low, high = ports[0], ports[-1]
    skipped = sum(1 for port in reserved if low <= port <= high)  # gaps the kernel skips too
    if high - low + 1 != len(ports) + skipped:
        raise ConfigurationError(
            f"strategy='kernel' needs ports to be one contiguous block, for the kernel picks "
            f"anywhere from the lowest to the highest; got {len(ports)} ports spread over "
            f"{low}-{high}"
        )
    ephemeral = _host.ephemeral_range()
    first, last = ephemeral.start, ephemeral.stop - 1
    if low < first or high > last:
        raise ConfigurationError(
            f"strategy='kernel' picks from the host's ephemeral range {first}-{last} "
            f"(net.ipv4.ip_local_port_range) and can only narrow it; ports {low}-{high} "
            "leave it: choose a block inside it, or strategy='table'"
        )
    narrowing = _host.local_port_range(low, high)
    if _host.has_option(socket.SOL_IP, _host.IP_LOCAL_PORT_RANGE, narrowing):
        # Set even for the whole range: with it the kernel searches the block port by port,
        # without it every other port first (__inet_hash_connect), so its connect cost
        # doubles from half full (measured: 1.83x at 99%, against 1.05x with it).
        return low, high
    if (low, high) != (first, last):
        raise ConfigurationError(
            "this kernel lacks the per-socket IP_LOCAL_PORT_RANGE option (Linux >= 6.3), so "
            "strategy='kernel' can only pick from the whole ephemeral range: pass ports=None"
        )
    return None


# -- per call -------------------------------------------------------------------------------


def check_destination(host: object, port: object) -> None:
    if not isinstance(host, str) or not host:
        raise ConfigurationError(f"host must be a non-empty str (a name or an IP), not {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be an int in 1-65535, not {port!r}")


def check_timeout(timeout: object, name: str = "timeout") -> None:
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds or None, not {timeout!r}")
    if math.isnan(timeout) or timeout < 0:
        raise ConfigurationError(f"{name} must be >= 0 seconds or None, not {timeout!r}")


def check_tls(
    host: str,
    ssl: _ssl.SSLContext | bool | None,
    server_hostname: str | None,
    ssl_handshake_timeout: float | None,
) -> str | None:
    """asyncio's TLS rules, checked before a port is taken. Returns the name to verify."""
    check_timeout(ssl_handshake_timeout, "ssl_handshake_timeout")
    if not ssl:
        if server_hostname is not None:
            raise ConfigurationError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None:
            raise ConfigurationError("ssl_handshake_timeout is only meaningful with ssl")
        return None
    if not isinstance(ssl, _ssl.SSLContext | bool):
        raise ConfigurationError(f"ssl must be an ssl.SSLContext, True or None, not {ssl!r}")
    name = host if server_hostname is None else server_hostname
    if not isinstance(name, str):
        raise ConfigurationError(f"server_hostname must be a str, not {name!r}")
    verifies = ssl is True or ssl.check_hostname
    if not name and verifies:
        raise ConfigurationError(
            "ssl checks the host name but server_hostname is empty: pass the name to verify, "
            "or an SSLContext with check_hostname=False"
        )
    return name
