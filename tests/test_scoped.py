"""Scoped IPv6 destinations ("fe80::1%eth0") keep their scope id on every path.

A link-local address means nothing without its interface: connect() to it with scope id 0
fails with EINVAL. uvloop's getaddrinfo drops the scope id, and its native connect takes
only (host, port); the pool parses a scoped literal itself and sends it through the
`sock=` path. Only a private network namespace may get a link-local address on lo, so the
calls run in one (`unshare -n`, as root; tests/scoped_inside.py); elsewhere this skips.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.namespace


def inside_a_namespace() -> dict[str, Any]:
    if os.geteuid() != 0:
        pytest.skip("needs root: a link-local address may only be added in a private namespace")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.scoped_inside"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
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
