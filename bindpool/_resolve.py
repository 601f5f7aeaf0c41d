"""Destinations: from (host, port) to the addresses to try, each with its table key.

An IP literal is parsed once and cached: no getaddrinfo, no thread, no allocation on a hit
(uvloop would otherwise send even numeric hosts to its resolver thread pool). A name goes to
the running loop's `getaddrinfo`, which never blocks the loop, on every call, as asyncio does,
after `check_name`: only names pay for that check, literals never reach it.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
from typing import TYPE_CHECKING

from bindpool._config import check_name

if TYPE_CHECKING:
    import asyncio

__all__ = ["Address", "Target", "literal", "resolve"]

# What connect() takes: (ip, port), or for IPv6 from getaddrinfo (ip, port, flowinfo, scope).
Address = tuple[str, int] | tuple[str, int, int, int]
# (family, address to connect to, table key: the canonical (ip, port))
Target = tuple[int, Address, tuple[str, int]]


def literal(host: str, port: int) -> tuple[Target, ...] | None:
    """The target for an IP literal; None for a name. No I/O.

    A scoped IPv6 literal ("fe80::1%eth0", "fe80::1%2") carries its zone as the scope id,
    as getaddrinfo would give it (uvloop's getaddrinfo loses it): it is not cached, for an
    interface's index changes when the interface is made again.
    """
    if "%" in host:
        return _scoped(host, port)
    return _unscoped(host, port)


@functools.lru_cache(maxsize=4096)
def _unscoped(host: str, port: int) -> tuple[Target, ...] | None:
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    key = (str(ip), port)
    if ip.version == 6:
        # The address as getaddrinfo gives it (flowinfo, scope id), so that error messages
        # read as asyncio's: "Connect call failed ('::1', 80, 0, 0)".
        return ((socket.AF_INET6, (*key, 0, 0), key),)
    return ((socket.AF_INET, key, key),)


def _scoped(host: str, port: int) -> tuple[Target, ...] | None:
    address, _, zone = host.partition("%")
    try:
        ip = ipaddress.IPv6Address(address)
        scope = int(zone) if zone.isdigit() else socket.if_nametoindex(zone)
    except (ValueError, OSError):
        return None  # not a literal, or no such interface: getaddrinfo says what is wrong
    key = (str(ip), port)  # as `resolve()` keys it: getaddrinfo's host has no zone
    return ((socket.AF_INET6, (*key, 0, scope), key),)


async def resolve(loop: asyncio.AbstractEventLoop, host: str, port: int) -> tuple[Target, ...]:
    """The addresses for `host` (call `literal()` first), in the resolver's order, once each.

    Raises:
        ConfigurationError: `host` holds NUL or is not valid IDNA (`check_name`); getaddrinfo
            would cut it short at the NUL or raise a bare UnicodeError.
        socket.gaierror: the name does not resolve.
    """
    check_name(host)
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[tuple[str, int], Target] = {}
    for family, _, _, _, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            key = (str(sockaddr[0]), int(sockaddr[1]))
            seen.setdefault(key, (family, sockaddr, key))  # type: ignore[arg-type]
    return tuple(seen.values())
