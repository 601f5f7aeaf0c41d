"""Happy eyeballs (RFC 8305): the addresses of one host, raced through the pool.

Theory of operation
-------------------
A host with several addresses, one of which drops SYNs (a broken IPv6 path, one A record of
several down), makes a sequential connect wait for that address's connect timeout. Racing
starts the first attempt at once and each next one `delay` seconds after the previous, or
at once when an attempt fails; the first attempt to connect wins. This is asyncio's
`happy_eyeballs_delay` / `interleave` (base_events.py, `_interleave_addrinfos` and
`staggered.staggered_race`), aiohappyeyeballs' `start_connection`, and anyio's
`connect_tcp`.

Why not `asyncio.staggered.staggered_race`: in 3.11 it asserts when two attempts succeed in
the same loop turn and then drops the second one's result, and it does not wait for the
losers it cancels. A loser here holds a lease (a port of the pool): it must be cancelled
(the retry loop gives the lease back) or, if it connected anyway, closed (closing a
`PooledSocket` gives it back), and both must have happened before the call returns, also
when the caller is cancelled in the middle of the race. `race()` owns every attempt it
started until then.

What the attempts raise decides the rest, as in a sequential connect: an `OSError` is that
address's answer (kept, in the order of the addresses, and the next attempt starts at once);
anything else (a misuse such as `PoolClosed`) ends the race and propagates.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING, NamedTuple, TypeVar

from bindpool._config import check_timeout
from bindpool._errors import ConfigurationError, combined

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterable, Sequence

__all__ = ["Eyeballs", "check", "order", "race"]

_T = TypeVar("_T")
_S = TypeVar("_S")


class Eyeballs(NamedTuple):
    """How to connect to a host with several addresses, in asyncio's words."""

    delay: float | None  # happy_eyeballs_delay: None tries the addresses one after another
    interleave: int | None  # addresses of the first family before alternating families


def check(happy_eyeballs_delay: object, interleave: object) -> Eyeballs | None:
    """Validate the two arguments; None when both are None (the sequential default)."""
    check_timeout(happy_eyeballs_delay, "happy_eyeballs_delay")
    if interleave is not None and (
        isinstance(interleave, bool) or not isinstance(interleave, int) or interleave < 0
    ):
        raise ConfigurationError(f"interleave must be an int >= 0 or None, not {interleave!r}")
    if happy_eyeballs_delay is None and interleave is None:
        return None
    return Eyeballs(happy_eyeballs_delay, interleave)  # type: ignore[arg-type]  # checked


def order(items: Sequence[_T], family: Callable[[_T], int], eyeballs: Eyeballs) -> list[_T]:
    """The order to try `items` in, as asyncio's `create_connection` does.

    With a delay and no `interleave`, interleave is 1 (RFC 8305's "First Address Family
    Count"); `interleave` 0 or None keeps the resolver's order. Otherwise `interleave - 1`
    addresses of the first family come first, then the families alternate.
    """
    count = eyeballs.interleave
    if count is None and eyeballs.delay is not None:
        count = 1
    if not count or len(items) < 2:
        return list(items)
    groups: dict[int, list[_T]] = {}
    for item in items:
        groups.setdefault(family(item), []).append(item)
    lists = list(groups.values())
    ordered = lists[0][: count - 1]
    del lists[0][: count - 1]
    gap = object()
    for row in itertools.zip_longest(*lists, fillvalue=gap):
        ordered.extend(item for item in row if item is not gap)  # type: ignore[misc]
    return ordered


async def race(
    attempts: Iterable[Callable[[], Awaitable[_S]]],
    delay: float,
    discard: Callable[[_S], object],
) -> _S:
    """Start `attempts` staggered by `delay`; the first to succeed wins.

    Every other attempt is cancelled, and any that succeeded anyway is given to `discard`
    (which closes it), before this returns or raises; the caller's cancellation cancels
    every attempt and waits for them.

    Raises:
        OSError: every attempt failed; one error for all, as asyncio reports them.
        Exception: an attempt raised something that is not an `OSError`.
    """
    running: dict[asyncio.Task[_S], int] = {}
    try:
        winner = await _first(attempts, delay, running)
    except BaseException:
        await _settle(running, discard)
        raise
    try:
        await _settle(running, discard)
    except BaseException:  # cancelled while the losers were stopping: the winner goes too
        discard(winner)
        raise
    return winner


async def _first(
    attempts: Iterable[Callable[[], Awaitable[_S]]],
    delay: float,
    running: dict[asyncio.Task[_S], int],
) -> _S:
    """The race itself; `running` holds the attempts under way when it ends, for `_settle`."""
    loop = asyncio.get_running_loop()
    errors: dict[int, OSError] = {}
    upcoming = enumerate(attempts)
    following = next(upcoming, None)
    while following is not None or running:
        if following is not None:
            index, attempt = following
            running[loop.create_task(_call(attempt))] = index
            following = next(upcoming, None)
        done, _ = await asyncio.wait(
            set(running),
            timeout=delay if following is not None else None,
            return_when=asyncio.FIRST_COMPLETED,
        )
        # Several may end in one loop turn: the earliest address's answer counts first.
        for task in sorted(done, key=running.__getitem__):
            index = running.pop(task)
            if task.cancelled():  # not by us: we cancel only in `_settle`
                raise asyncio.CancelledError
            error = task.exception()
            if error is None:
                return task.result()
            if not isinstance(error, OSError):
                raise error
            errors[index] = error
        # A timeout (nothing done) or failures (the next starts at once): go on.
    raise combined([errors[index] for index in sorted(errors)])


async def _call(attempt: Callable[[], Awaitable[_S]]) -> _S:
    return await attempt()


async def _settle(running: dict[asyncio.Task[_S], int], discard: Callable[[_S], object]) -> None:
    """Cancel every attempt still running and wait until each has ended; close any that
    connected anyway. A cancellation of the caller meanwhile is held until then."""
    if not running:
        return
    for task in running:
        task.cancel()
    interrupted: asyncio.CancelledError | None = None
    while not all(task.done() for task in running):
        try:
            await asyncio.wait(set(running))
        except asyncio.CancelledError as exc:  # the leases first, then the cancellation
            interrupted = exc
    for task in running:
        if not task.cancelled() and task.exception() is None:
            discard(task.result())  # it won the same loop turn as the winner, or ignored us
    running.clear()
    if interrupted is not None:
        raise interrupted
