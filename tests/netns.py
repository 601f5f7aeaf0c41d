"""Running a test's work inside a private network namespace (`unshare -n`, as root), the
only place a test may change sysctls or add and delete addresses. Elsewhere it skips."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parent.parent


def inside(module: str, *args: str, why: str, timeout: float = 120) -> Any:
    """Run `python -m module args...` in a fresh network namespace; its stdout as JSON.

    `why` says what the namespace is needed for, in the skip message.
    """
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {why} only inside a private network namespace")
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.skip("needs unshare (util-linux) and ip (iproute2)")
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )
    if done.returncode and "unshare" in done.stderr:
        pytest.skip(f"cannot make a network namespace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
