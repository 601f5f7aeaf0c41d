"""The error family: one base, split by meaning.

"You misused it" (`ConfigurationError`, `PoolClosed`) is kept apart from "the world
failed" (`PortsExhausted`); network errors other than a 4-tuple clash are not wrapped at all
and reach the caller as the usual `OSError` / `TimeoutError`.
"""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = [
    "BindPoolError",
    "ConfigurationError",
    "PoolClosed",
    "PortsExhausted",
    "SourceUnavailable",
    "combined",
    "no_source_for",
]


class BindPoolError(Exception):
    """Base of every error bindpool raises itself."""


class ConfigurationError(BindPoolError, ValueError):
    """A bad argument: the message says which one and what to do instead."""


class PoolClosed(BindPoolError, RuntimeError):
    """`connect()` (or a helper built on it) was called after `aclose()`."""


class PortsExhausted(BindPoolError, OSError):
    """No 4-tuple is free for this destination, or `max_attempts` clashes came in a row.

    An `OSError` with errno `EADDRNOTAVAIL`, as the kernel would give for a full range, so
    code that already handles "Cannot assign requested address" keeps working. When clashes
    used up the attempts, `__cause__` is the last clash the kernel reported.

    Attributes:
        destination: the `(ip, port)` the connection was for.
        sources: the source IPs that were tried.
        attempts: bind/connect attempts made before giving up (0 when the table had no port).
        reason: why, in words (the end of the message).
    """

    destination: tuple[str, int]
    sources: tuple[str, ...]
    attempts: int
    reason: str

    def __init__(
        self,
        destination: tuple[str, int],
        sources: Sequence[str],
        attempts: int,
        reason: str | None = None,
    ) -> None:
        ip, port = destination
        where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        if reason is None:
            if attempts:
                reason = f"{attempts} attempts in a row were refused by the kernel"
            else:
                reason = "every port is live, resting or unusable for it"
        message = f"no free source port for {where} on {', '.join(sources)}: {reason}"
        super().__init__(errno.EADDRNOTAVAIL, message)
        self.destination = destination
        self.sources = tuple(sources)
        self.attempts = attempts
        self.reason = reason

    def __reduce__(
        self,
    ) -> tuple[type[PortsExhausted], tuple[tuple[str, int], tuple[str, ...], int, str]]:
        return (type(self), (self.destination, self.sources, self.attempts, self.reason))


class SourceUnavailable(BindPoolError, OSError):
    """Every source of the destination's family is down: its address is not on this host.

    An `OSError` with errno `EADDRNOTAVAIL`, what `bind()` said. Down sources are tried
    again (at most every second while traffic continues) and are up as soon as the address
    is back. With several sources, one that goes down is skipped, not failed on.

    Attributes:
        destination: the `(ip, port)` the connection was for.
        sources: the sources that are down.
    """

    destination: tuple[str, int]
    sources: tuple[str, ...]

    def __init__(self, destination: tuple[str, int], sources: Sequence[str]) -> None:
        ip, port = destination
        where = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        names = ", ".join(sources)
        message = (
            f"no source for {where}: {names} "
            f"{'is' if len(sources) == 1 else 'are'} down (bind() says the address is not on "
            "this host: EADDRNOTAVAIL); put it back (`ip addr add`), or give the pool another "
            "source"
        )
        super().__init__(errno.EADDRNOTAVAIL, message)
        self.destination = destination
        self.sources = tuple(sources)

    def __reduce__(
        self,
    ) -> tuple[type[SourceUnavailable], tuple[tuple[str, int], tuple[str, ...]]]:
        return (type(self), (self.destination, self.sources))


def combined(errors: Sequence[OSError]) -> OSError:
    """One error for a destination whose every address failed, as asyncio reports them.

    The same error everywhere is raised as it is; so is the first `PortsExhausted` when the
    pool was out of ports for every address, so callers can still catch it. Otherwise one
    `OSError` lists them all, keeping the errno they share if they share one.
    """
    first = errors[0]
    if all(str(error) == str(first) for error in errors):
        return first
    if all(isinstance(error, PortsExhausted) for error in errors):
        return first
    message = f"Multiple exceptions: {', '.join(str(error) for error in errors)}"
    if all(error.errno == first.errno for error in errors):
        return OSError(first.errno, message)
    return OSError(message)


_FAMILY_NAMES: dict[int, str] = {socket.AF_INET: "IPv4", socket.AF_INET6: "IPv6"}


def no_source_for(host: str, families: Iterable[int], sources: Sequence[str]) -> ConfigurationError:
    """The error for a destination whose addresses are all of families no source has."""
    names = sorted({_FAMILY_NAMES.get(family, str(family)) for family in families})
    return ConfigurationError(
        f"{host} has {' and '.join(names) or 'no'} addresses only, but the pool's sources are "
        f"{', '.join(sources)}: add a source of that family"
    )
