"""Which source a connection tries first: the pool's `select=` policy.

Pure: the allocators (the port table, the kernel strategy's ledger) hand it the usable
sources of the destination's family (up, not draining, not being avoided) and try them in
the order it returns, skipping any that has no room for the destination.

- "room" (the default): most room for the destination first; equal room in turn, so ties
  rotate (HAProxy's `balance leastconn`, per destination).
- "round_robin": each new connection starts at the next source (nginx `split_clients`,
  HAProxy `balance roundrobin`).
- "sticky": rendezvous (highest random weight) hashing of the destination over the sources
  (nginx `hash $host consistent`): a destination keeps its source while that source is up
  and has room; adding a source moves only the destinations that now score highest on it,
  removing one moves only its own. The hash is stable across processes and restarts.
- a callable `(destination, sources) -> sources`: the caller's order; sources it leaves out
  are not tried.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

from bindpool._errors import ConfigurationError

if TYPE_CHECKING:
    from bindpool._claim import Destination

__all__ = ["POLICIES", "Policy", "Selector", "check"]

Policy = (
    Literal["room", "round_robin", "sticky"]
    | Callable[[tuple[str, int], Sequence[str]], Sequence[str]]
)
POLICIES = ("room", "round_robin", "sticky")


class _HasAddress(Protocol):
    @property
    def address(self) -> str: ...


_S = TypeVar("_S", bound=_HasAddress)


def check(select: object) -> Policy:
    """The policy, or ConfigurationError saying what `select` may be."""
    if select in POLICIES or (callable(select) and not isinstance(select, str)):
        return select  # type: ignore[return-value]  # one of the literals, or a callable
    raise ConfigurationError(
        f"select must be 'room', 'round_robin', 'sticky' or a callable(destination, sources) "
        f"returning the sources to try in order, not {select!r}"
    )


def _weight(destination: Destination, source: str) -> bytes:
    """Rendezvous weight: the same for the same pair in every process."""
    key = f"{destination[0]}|{destination[1]}|{source}".encode()
    return hashlib.blake2b(key, digest_size=8).digest()


class Selector:
    """Orders the usable sources for one connection, by policy."""

    __slots__ = ("_policy", "_turn")

    def __init__(self, policy: Policy) -> None:
        self._policy = policy
        self._turn = 0

    def order(
        self, destination: Destination, sources: list[_S], room: Callable[[_S], int]
    ) -> list[_S]:
        """`sources` (two or more) in the order to try for `destination`."""
        policy = self._policy
        if policy == "room":
            start = self._turn = (self._turn + 1) % len(sources)
            rotated = sources[start:] + sources[:start]
            return sorted(rotated, key=room, reverse=True)  # stable: ties keep rotated order
        if policy == "round_robin":
            start = self._turn = (self._turn + 1) % len(sources)
            return sources[start:] + sources[:start]
        if policy == "sticky":
            return sorted(sources, key=lambda s: _weight(destination, s.address), reverse=True)
        assert callable(policy)
        by_address = {source.address: source for source in sources}
        chosen = policy(destination, tuple(by_address))
        try:
            return [by_address[address] for address in chosen]
        except (KeyError, TypeError):
            raise ConfigurationError(
                f"the select callable returned {chosen!r} for {destination}: it must return "
                f"a sequence drawn from the sources it was given, {tuple(by_address)}"
            ) from None
