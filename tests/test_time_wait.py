"""TIME_WAIT without TCP timestamps: the cool-down keeps reconnect loops clear of it.

With timestamps off, a 4-tuple the client closed first cannot be reused for 60 s: connect()
says EADDRNOTAVAIL (FIELD-NOTES.md). The run happens in a private network namespace, the only
place a test may change that sysctl: `unshare -n`, as root. Elsewhere it is skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.namespace


def inside_a_namespace() -> dict[str, dict[str, int]]:
    if os.geteuid() != 0:
        pytest.skip("needs root: sysctls change only inside a private network namespace")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", "tests.time_wait_inside"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    results: dict[str, dict[str, int]] = json.loads(done.stdout)
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
