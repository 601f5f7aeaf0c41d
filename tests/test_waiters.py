"""The line of connects waiting for a 4-tuple (`_waiters.py`), with fake take/resting: order,
hand-overs, and the corners where a waiter is woken twice or leaves while woken."""

from __future__ import annotations

import asyncio

import pytest

from bindpool._waiters import Waiters

KEY = ("127.0.0.1", 80)


class Shelf:
    """What `take()` hands out: nothing until something is put on it."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def take(self) -> str | None:
        return self.items.pop(0) if self.items else None


async def test_first_come_first_served() -> None:
    waiters, shelf = Waiters(), Shelf()
    tasks = [asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None)) for _ in range(3)]
    await asyncio.sleep(0)
    for item in "abc":
        shelf.items.append(item)
        waiters.wake(KEY)
    assert await asyncio.gather(*tasks) == ["a", "b", "c"]
    assert waiters.queues == {}


async def test_timer_woken_waiter_dropped_by_a_wake_still_takes() -> None:
    """The head's rest timer fires, and before it resumes a release's wake() goes past it
    (it is done) to the next: the head must not look for itself in the line."""
    waiters, shelf = Waiters(), Shelf()
    head = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: 60.0))
    second = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None))
    await asyncio.sleep(0)
    line = waiters.queues[KEY]
    line[0].set_result(False)  # what the head's rest timer does
    shelf.items += ["x", "y"]
    waiters.wake(KEY)  # a release: drops the done head, wakes the second
    assert sorted(await asyncio.gather(head, second)) == ["x", "y"]
    assert waiters.queues == {}


async def test_a_woken_waiter_cancelled_before_it_resumes_passes_the_wake_on() -> None:
    waiters, shelf = Waiters(), Shelf()
    first = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None))
    second = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None))
    await asyncio.sleep(0)
    shelf.items.append("x")
    waiters.wake(KEY)  # wakes `first` ...
    first.cancel()  # ... which is cancelled before it runs
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 5) == "x"
    assert waiters.queues == {}


async def test_timeout_leaves_the_line_and_nothing_taken() -> None:
    waiters, shelf = Waiters(), Shelf()
    with pytest.raises(TimeoutError):
        await waiters.wait(KEY, 0.01, shelf.take, lambda: None)
    assert waiters.queues == {}


async def test_the_head_retries_when_a_rest_ends() -> None:
    waiters, shelf = Waiters(), Shelf()
    task = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: 0.01))
    await asyncio.sleep(0)
    shelf.items.append("rested")  # free again without any release: only the timer tells
    assert await asyncio.wait_for(task, 5) == "rested"


async def test_beaten_to_it_keeps_the_head_of_the_line() -> None:
    waiters, shelf = Waiters(), Shelf()
    first = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None))
    await asyncio.sleep(0)
    second = asyncio.create_task(waiters.wait(KEY, 5, shelf.take, lambda: None))
    await asyncio.sleep(0)
    waiters.wake(KEY)  # a wake, but nothing to take: the first goes back to the head
    await asyncio.sleep(0)
    assert not first.done()
    shelf.items.append("a")
    waiters.wake(KEY)
    assert await asyncio.wait_for(first, 5) == "a"
    shelf.items.append("b")
    waiters.wake(KEY)
    assert await asyncio.wait_for(second, 5) == "b"
