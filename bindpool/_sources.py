"""An allocator's sources as a living set: added and retired while the pool runs.

Pure bookkeeping shared by the port table and the kernel strategy's ledger. A source is
*active* (new connections may use it: it is in `families`), or *draining* (retired by
`Pool.remove_source`: no new connection uses it, its live leases work on and release as
usual), until its last lease ends and the allocator forgets it, memory and all. Adding a
draining source back makes it active again, with the state it kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from bindpool._health import State

__all__ = ["SourceSet"]


class _Source(Protocol):
    @property
    def address(self) -> str: ...
    @property
    def family(self) -> int: ...


_S = TypeVar("_S", bound=_Source)


class SourceSet(Generic[_S]):
    """Sources by address; the active ones by family, in the order they were added.

    Attributes:
        all: every source the allocator keeps, active or draining.
        families: family -> the active sources of that family (no empty lists).
        draining: addresses retired but with leases still live.
        on_drained: called with an address when a draining source's last lease ends.
    """

    __slots__ = ("all", "draining", "families", "on_drained")

    def __init__(self, sources: Iterable[_S]) -> None:
        self.all: dict[str, _S] = {}
        self.families: dict[int, list[_S]] = {}
        self.draining: set[str] = set()
        self.on_drained: Callable[[str], object] | None = None
        for source in sources:
            self.add(source)

    def add(self, source: _S) -> None:
        """A new source, active now."""
        self.all[source.address] = source
        self.families.setdefault(source.family, []).append(source)

    def revive(self, address: str) -> bool:
        """Make a draining source active again; False if there is none by that address."""
        if address not in self.draining:
            return False
        self.draining.discard(address)
        source = self.all[address]
        self.families.setdefault(source.family, []).append(source)
        return True

    def retire(self, address: str, live: int) -> None:
        """No new connection uses `address`; forget it now if `live` is 0, else at drain."""
        source = self.all[address]
        family = self.families[source.family]
        family.remove(source)
        if not family:
            del self.families[source.family]
        if live:
            self.draining.add(address)
        else:
            del self.all[address]

    def ended(self, address: str, live: int) -> bool:
        """A lease ended on `address`, `live` are left. True if that drained it: it is
        forgotten now (the caller frees the rest)."""
        if live or address not in self.draining:
            return False
        self.draining.discard(address)
        del self.all[address]
        if self.on_drained is not None:
            self.on_drained(address)
        return True

    def state(self, address: str, health: State) -> State:
        return "draining" if address in self.draining else health
