"""Checking a pool's arguments once, at construction, with messages that say what to fix.

Also the per-call checks of `connect()` and friends, so a bad call fails before any port is
taken or any socket exists. Those run on every connect: the common case (an IP literal, no
timeout or a float one) costs a few comparisons; names pay for `check_name` where they are
resolved, next to a getaddrinfo that costs far more.

Nothing the user passes is trusted to be small: an iterable is read item by item with a cap
(an infinite one is refused, not materialised), a range is checked by its bounds, a number by
comparison (an int past float range would make `float()` raise OverflowError), and every value
shown in a message goes through `_shown`, which cannot raise (str() refuses ints of more than
4300 digits) and stays short.
"""

from __future__ import annotations

import ipaddress
import itertools
import socket
import ssl as _ssl
import sys
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
    "check_name",
    "canonical_source",
    "check_sources",
    "check_timeout",
    "check_tls",
    "configure",
]

Strategy = Literal["table", "kernel"]
STRATEGIES = ("table", "kernel")

# One more item than there are port numbers (0-65535) means the iterable repeats itself or is
# endless: refused after reading that many, never read to the end.
MOST_PORTS = 65_536
# The same bound for sources: a pool binds each one at construction to check it.
MOST_SOURCES = 65_536
# The largest number of seconds the event loops take: asyncio converts a delay with float(),
# which raises OverflowError for an int past this. Floats up to inf are fine (inf: no limit).
LONGEST = sys.float_info.max


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
        raise ConfigurationError(f"cooldown must be a number of seconds, not {_shown(cooldown)}")
    if not 0 <= cooldown <= LONGEST:  # NaN fails every comparison; no float() of a huge int
        raise ConfigurationError(
            f"cooldown must be a finite number >= 0, not {_shown(cooldown)}: 0 turns it off"
        )
    if isinstance(max_attempts, bool) or not isinstance(max_attempts, int) or max_attempts < 1:
        raise ConfigurationError(f"max_attempts must be an int >= 1, not {_shown(max_attempts)}")
    if on_release is not None and not callable(on_release):
        raise ConfigurationError(
            f"on_release must be callable(Lease) or None, not {_shown(on_release)}"
        )
    addresses = check_sources(sources)
    kernel = strategy == "kernel"
    # The kernel never picks a reserved port (net.ipv4.ip_local_reserved_ports).
    reserved = frozenset(_host.reserved_ports()) if kernel else frozenset()
    chosen = _kernel_ports(ports, reserved) if kernel else _check_ports(ports)
    if shard is not None:
        chosen = _slice(chosen, shard)
    if not kernel:  # the kernel's own pick at connect() needs no capability, even below it
        _check_privilege(chosen)
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
            f"sources must be an iterable of IP strings, not one string: Pool([{_shown(sources)}])"
        )
    try:
        items = iter(sources)
    except TypeError:
        raise ConfigurationError(
            f"sources must be an iterable of IP strings, not {_shown(sources)}"
        ) from None
    canonical: dict[str, None] = {}
    for count, item in enumerate(itertools.islice(items, MOST_SOURCES + 1)):
        if count == MOST_SOURCES:
            raise ConfigurationError(
                f"sources holds more than {MOST_SOURCES:,} items (or never ends): "
                "give the addresses themselves, as a list"
            )
        if isinstance(item, str) and item in canonical:
            continue  # seen, and already canonical: no need to parse it again
        address = canonical_source(item)
        if address in canonical:
            continue
        family = family_of(address)
        if family == socket.AF_INET and _host.is_broadcast(address):
            raise ConfigurationError(
                f"source {item!r} is not a unicast address: it is a broadcast address here, "
                "and the kernel would send from another one; bind to the interface's own IP"
            )
        if not _host.is_local(address, family):
            raise ConfigurationError(
                f"source {item!r} is not an address of this host (bind() refuses it): "
                "use one that `ip addr` lists, or any 127.x.y.z on loopback"
            )
        canonical[address] = None
    if not canonical:
        raise ConfigurationError("sources is empty: give at least one local IP to bind to")
    return tuple(canonical)


def canonical_source(item: object) -> str:
    if not isinstance(item, str):
        raise ConfigurationError(f"source {_shown(item)} must be a str such as '192.0.2.7'")
    try:
        ip = ipaddress.ip_address(item)
    except ValueError:
        raise ConfigurationError(
            f"source {_shown(item)} is not a numeric IP address: bind() would resolve a name "
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
    """Sorted distinct ports, each in 1-65535; never reads more than MOST_PORTS + 1 items."""
    if ports is None:
        default = _host.default_ports()
        if not default:
            raise ConfigurationError("this host reports an empty port range: pass ports=")
        return tuple(sorted(set(default)))
    if isinstance(ports, range):
        return _range_ports(ports)
    if isinstance(ports, str | bytes):
        raise ConfigurationError(f"ports must be a range or iterable of ints, not {_shown(ports)}")
    try:
        items = iter(ports)
    except TypeError:
        raise ConfigurationError(
            f"ports must be a range or iterable of ints, not {_shown(ports)}"
        ) from None
    chosen: set[int] = set()
    for count, port in enumerate(itertools.islice(items, MOST_PORTS + 1)):
        if count == MOST_PORTS:
            raise ConfigurationError(
                f"ports holds more than {MOST_PORTS:,} items (or never ends), more than there "
                "are ports: give a range, e.g. range(40000, 41000)"
            )
        if isinstance(port, bool) or not isinstance(port, int):
            raise ConfigurationError(f"ports must hold ints, found {_shown(port)}")
        if not 1 <= port <= 65535:
            raise ConfigurationError(f"port {_shown(port)} is outside 1-65535")
        chosen.add(port)
    if not chosen:
        raise ConfigurationError("ports is empty: give at least one port, e.g. range(40000, 41000)")
    return tuple(sorted(chosen))


def _range_ports(ports: range) -> tuple[int, ...]:
    """A range's ports, checked by its bounds before a single one is made.

    len() of a range past sys.maxsize raises OverflowError; bool() and indexing do not.
    """
    if not ports:
        raise ConfigurationError("ports is empty: give at least one port, e.g. range(40000, 41000)")
    low, high = (ports[0], ports[-1]) if ports.step > 0 else (ports[-1], ports[0])
    if low < 1 or high > 65535:
        raise ConfigurationError(
            f"ports {_shown(ports)} reach {_shown(low if low < 1 else high)}, outside 1-65535: "
            "give a range inside it, e.g. range(40000, 41000)"
        )
    return tuple(ports) if ports.step > 0 else tuple(reversed(ports))


def _check_privilege(ports: tuple[int, ...]) -> None:
    """Refuse ports that bind() would refuse this process (PermissionError on every connect).

    `ports` is sorted. Read at construction: capabilities and the sysctl rarely change.
    """
    lowest = _host.lowest_bindable_port()
    if ports[0] >= lowest:
        return
    below = [port for port in ports if port < lowest]
    raise ConfigurationError(
        f"ports {_host.format_port_list(below)} are below net.ipv4.ip_unprivileged_port_start "
        f"({lowest}) and this process lacks CAP_NET_BIND_SERVICE, so every bind() to them "
        f"would fail with PermissionError: use ports from {lowest} up, or grant the "
        "capability (systemd: AmbientCapabilities=CAP_NET_BIND_SERVICE; docker: "
        "--cap-add NET_BIND_SERVICE)"
    )


def _slice(ports: tuple[int, ...], shard: object) -> tuple[int, ...]:
    """This shard's contiguous slice of `ports`: `count` nearly equal, disjoint, covering."""
    if (
        not isinstance(shard, tuple)
        or len(shard) != 2
        or not all(isinstance(n, int) and not isinstance(n, bool) for n in shard)
    ):
        raise ConfigurationError(
            f"shard must be a tuple (index, count) of ints, not {_shown(shard)}"
        )
    index, count = shard
    if count < 1 or not 0 <= index < count:
        raise ConfigurationError(f"shard {_shown(shard)} needs count >= 1 and 0 <= index < count")
    if count > len(ports):
        raise ConfigurationError(
            f"shard count {_shown(count)} exceeds the {len(ports)} ports: a shard would be empty"
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
    """Types and ranges only: a name's own check (`check_name`) waits for its resolution."""
    if not isinstance(host, str) or not host:
        raise ConfigurationError(
            f"host must be a non-empty str (a name or an IP), not {_shown(host)}"
        )
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ConfigurationError(f"port must be an int in 1-65535, not {_shown(port)}")


def check_name(name: str, what: str = "host") -> None:
    """A host name getaddrinfo and ssl can take as it is, or ConfigurationError.

    Both encode a str with the "idna" codec (IDNA 2003), which raises UnicodeError for what it
    cannot encode (an empty label, one over 63 characters, a lone surrogate...) but passes NUL,
    where C then cuts the name short: "localhost\\x00.evil.example" would reach localhost.
    """
    if "\x00" in name:
        raise ConfigurationError(
            f"{what} {_shown(name)} contains a NUL character, which would cut the name short: "
            "pass the name alone"
        )
    try:
        name.encode("idna")
    except UnicodeError as exc:
        reason = exc.__cause__ or exc  # the codec's own words: "label empty or too long"...
        raise ConfigurationError(
            f"{what} {_shown(name)} is not a valid host name ({reason}): each dot-separated "
            "label needs 1 to 63 characters, and non-ASCII names must be valid IDNA"
        ) from None


def check_timeout(timeout: object, name: str = "timeout") -> None:
    """None, or seconds the event loop can schedule: any float >= 0 (inf: no limit)."""
    if timeout is None:
        return
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        raise ConfigurationError(
            f"{name} must be a number of seconds or None, not {_shown(timeout)}"
        )
    if not timeout >= 0:  # NaN fails every comparison
        raise ConfigurationError(f"{name} must be >= 0 seconds or None, not {_shown(timeout)}")
    if timeout > LONGEST and isinstance(timeout, int):  # float inf passes: asyncio takes it
        raise ConfigurationError(
            f"{name} {_shown(timeout)} is too large for the event loop to schedule: "
            "pass None (or math.inf) for no limit"
        )


def check_tls(
    host: str,
    ssl: _ssl.SSLContext | bool | None,
    server_hostname: str | None,
    ssl_handshake_timeout: float | None,
) -> str | None:
    """asyncio's TLS rules, checked before a port is taken. Returns the name to verify.

    asyncio checks them only after the connection is made, with a bare ValueError (a
    handshake timeout of 0), TypeError (NUL in server_hostname) or UnicodeError.
    """
    check_timeout(ssl_handshake_timeout, "ssl_handshake_timeout")
    if ssl_handshake_timeout == 0:
        raise ConfigurationError(
            "ssl_handshake_timeout must be > 0 seconds or None (asyncio's default, 60 s)"
        )
    if not ssl:
        if server_hostname is not None:
            raise ConfigurationError("server_hostname is only meaningful with ssl")
        if ssl_handshake_timeout is not None:
            raise ConfigurationError("ssl_handshake_timeout is only meaningful with ssl")
        return None
    if not isinstance(ssl, _ssl.SSLContext | bool):
        raise ConfigurationError(f"ssl must be an ssl.SSLContext, True or None, not {_shown(ssl)}")
    if server_hostname is None:
        name = host  # a literal needs no check, a name gets one before it is resolved
    elif isinstance(server_hostname, str):
        name = server_hostname
        if name:
            check_name(name, "server_hostname")
    else:
        raise ConfigurationError(f"server_hostname must be a str, not {_shown(server_hostname)}")
    verifies = ssl is True or ssl.check_hostname
    if not name and verifies:
        raise ConfigurationError(
            "ssl checks the host name but server_hostname is empty: pass the name to verify, "
            "or an SSLContext with check_hostname=False"
        )
    return name


def _shown(value: object, most: int = 80) -> str:
    """repr(value) for a message: short, and never raising (str() of an int of more than
    4300 digits raises ValueError; a user's __repr__ may raise anything)."""
    if isinstance(value, int) and value.bit_length() > 200:
        return f"an int of about {int(value.bit_length() * 0.30103)} digits"
    try:
        text = repr(value)
    except Exception:
        return f"a {type(value).__name__}"
    return text if len(text) <= most else f"{text[: most - 5]}...{text[-2:]}"
