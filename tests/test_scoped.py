"""Scoped IPv6 destinations ("fe80::1%eth0") keep their scope id on every path.

A link-local address means nothing without its interface: connect() to it with scope id 0
fails with EINVAL. uvloop's getaddrinfo drops the scope id, and its native connect takes
only (host, port); the pool parses a scoped literal itself and sends it through the
`sock=` path. Only a private network namespace may get a link-local address on lo, so the
calls run in one (`unshare -n`, as root; tests/scoped_inside.py); elsewhere this skips.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns import inside

pytestmark = pytest.mark.namespace


def inside_a_namespace() -> dict[str, Any]:
    report: dict[str, Any] = inside(
        "tests.scoped_inside", why="a link-local address may be added", timeout=60
    )
    return report


def test_scoped_ipv6_keeps_its_scope_on_every_path() -> None:
    report = inside_a_namespace()
    peer = ["fe80::1", report["port"], 0, report["scope"]]
    for loop, results in report["results"].items():
        for delay in ("None", "0.05"):
            for call in ("connect", "open_connection", "create_connection"):
                assert results[f"{call} {delay}"] == peer, (loop, call, delay)
            # Not uvloop's native path, which would drop the scope id: the sock= path,
            # where the transport's protocol is the caller's own, not the lease wrapper.
            assert results[f"handed over {delay}"] is True, (loop, delay)
        assert results["in_use"] == 0, loop
