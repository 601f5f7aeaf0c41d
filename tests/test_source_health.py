"""A source address that leaves the host and comes back, in a private network namespace
(PRODUCT.md: "A source whose address leaves the host is marked down, skipped, and tried
again"; `SourceUnavailable`). The work happens in tests.source_health_inside.py; root only."""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns import inside

pytestmark = pytest.mark.namespace


@pytest.fixture(scope="module")
def results() -> dict[str, Any]:
    parsed: dict[str, Any] = inside(
        "tests.source_health_inside", "--calls", "120", why="addresses come and go"
    )
    return parsed


CASES = [
    f"{loop} {strategy} {call}"
    for loop in ("asyncio", "uvloop")
    for strategy in ("table", "kernel")
    for call in ("connect", "open_connection")
]


@pytest.mark.parametrize("case", CASES)
def test_one_of_two_sources_removed_fails_no_call(results: dict[str, Any], case: str) -> None:
    two = results[case]["two"]
    assert two["failed"] == 0, two["errors"]
    assert two["state"] == "down"


@pytest.mark.parametrize("case", CASES)
def test_the_only_source_removed_is_source_unavailable_naming_it(
    results: dict[str, Any], case: str
) -> None:
    assert results[case]["one"] == {"error": "SourceUnavailable", "sources": ["127.0.0.4"]}


@pytest.mark.parametrize("case", CASES)
def test_a_restored_address_is_back_within_two_seconds(results: dict[str, Any], case: str) -> None:
    # A behaviour bound, not a speed figure: down sources are retried at least every second.
    assert results[case]["back"] is not None
    assert results[case]["back"] < 2.0
    assert results[case]["in_use"] == 0


@pytest.mark.parametrize("case", CASES)
def test_going_down_is_a_warning_and_coming_back_a_debug_record(
    results: dict[str, Any], case: str
) -> None:
    """Logger "bindpool": one WARNING each time a source goes down (not at every retry)."""
    warnings = results[case]["warnings"]
    assert [w.split()[1] for w in warnings] == ["127.0.0.3", "127.0.0.4"]
    assert all("is down: bind() says the address is not on this host" in w for w in warnings)
    assert any("127.0.0.4 is up again" in m for m in results[case]["ups"])
