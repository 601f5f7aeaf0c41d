"""TIME_WAIT without TCP timestamps: the cool-down keeps reconnect loops clear of it.

With timestamps off, a 4-tuple the client closed first cannot be reused for 60 s: connect()
says EADDRNOTAVAIL (FIELD-NOTES.md). The run happens in a private network namespace, the only
place a test may change that sysctl: `unshare -n`, as root. Elsewhere it is skipped.
"""

from __future__ import annotations

import pytest

from tests.netns import inside

pytestmark = pytest.mark.namespace


def inside_a_namespace() -> dict[str, dict[str, int]]:
    results: dict[str, dict[str, int]] = inside(
        "tests.time_wait_inside", why="sysctls change", timeout=60
    )
    return results


def test_cooldown_keeps_reconnects_off_time_wait() -> None:
    results = inside_a_namespace()
    cooled, eager, kernel = results["cooldown 60"], results["cooldown 0"], results["kernel"]
    # Every reconnect succeeded, and with the cool-down none met a TIME_WAIT 4-tuple.
    assert cooled == {"connects": 60, "retries": 0, "exhausted": 0}
    # Without it the table hands recently closed ports straight back: the storm it avoids.
    assert eager["connects"] == 60
    assert eager["retries"] >= 10
    # The kernel's own pick skips TIME_WAIT 4-tuples itself.
    assert kernel == {"connects": 60, "retries": 0, "exhausted": 0}
