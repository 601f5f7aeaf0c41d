"""Fakes shared by the tests: a clock that moves only when told to."""

from __future__ import annotations


class FakeClock:
    """Monotonic seconds that advance only through `advance()`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
