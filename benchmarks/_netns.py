"""A private network namespace for the benchmarks that must meet the kernel's port wall.

`net.ipv4.ip_local_port_range` is per network namespace (FIELD-NOTES.md): inside a fresh one
(`unshare -n`, then `ip link set lo up`) a benchmark may narrow it to a small block, so that
plain `bind((ip, 0))` and `IP_BIND_ADDRESS_NO_PORT` really run out, without touching the
host. That needs root. Without it the benchmarks narrow each socket's pick instead, with the
per-socket IP_LOCAL_PORT_RANGE option, and say so.

A benchmark re-executes itself under `unshare -n` with `ENV` set to the namespace it started
from; inside, `prepare()` writes sysctls only after checking that this process's namespace
is another one.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchmarks._common import arguments, deadline, save
from bindpool._host import sysctl

if TYPE_CHECKING:
    from collections.abc import Callable

    from benchmarks._common import Target

__all__ = [
    "ENV",
    "NAMESPACE",
    "OPTION",
    "available",
    "choose",
    "inside",
    "prepare",
    "reexec",
    "renew",
]

ENV = "BINDPOOL_BENCH_NETNS"
NAMESPACE = "namespace"  # the wall is the namespace's ip_local_port_range
OPTION = "option"  # the wall is each socket's IP_LOCAL_PORT_RANGE
ROOT = Path(__file__).parent.parent
CLONE_NEWNET = 0x40000000  # <sched.h>


def _namespace_id() -> int | None:
    """This process's network namespace (the inode of /proc/self/ns/net)."""
    try:
        return os.stat("/proc/self/ns/net").st_ino
    except OSError:
        return None


def inside() -> bool:
    """True in a private namespace made by `reexec()`: never in the host's.

    `reexec()` passes the namespace it started from in `ENV`; this one must differ.
    """
    own, started_from = _namespace_id(), os.environ.get(ENV)
    return own is not None and started_from is not None and str(own) != started_from


def available() -> bool:
    """Whether this process may make a private network namespace (root, unshare, ip)."""
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("ip"):
        return False
    try:
        probe = subprocess.run(["unshare", "-n", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def choose(requested: str) -> str:
    """`NAMESPACE` or `OPTION` for a `--mode` of "auto", "namespace" or "option"."""
    if inside():
        return NAMESPACE
    if ENV in os.environ:  # re-executed, yet in the namespace it started from: never loop
        raise SystemExit(f"{ENV} is set but this is not a private network namespace")
    if requested == "auto":
        return NAMESPACE if available() else OPTION
    if requested == NAMESPACE and not available():
        raise SystemExit("--mode namespace needs root and unshare(1): use --mode option")
    return requested


def reexec(module: str, argv: list[str]) -> int:
    """Run `python -m module argv...` in a new network namespace; its exit status."""
    command = ["unshare", "-n", "--", sys.executable, "-m", module, *argv]
    env = os.environ | {ENV: str(_namespace_id())}
    return subprocess.run(command, env=env, cwd=ROOT, check=False).returncode


def _write(name: str, value: str) -> None:
    if not inside():  # the host's settings are never ours to change
        raise RuntimeError(f"refusing to write {name} outside a private network namespace")
    Path("/proc/sys", name.replace(".", "/")).write_text(value)


def prepare(low: int, high: int, backlog: int) -> None:
    """Loopback up; the namespace's ephemeral range [low, high]; somaxconn >= backlog."""
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    _write("net.ipv4.ip_local_port_range", f"{low} {high}")
    if int(sysctl("net.core.somaxconn") or 0) < backlog:
        _write("net.core.somaxconn", str(backlog))
    assert sysctl("net.ipv4.ip_local_port_range") == f"{low}\t{high}"


def renew() -> None:
    """Move this thread into a new, empty network namespace, loopback up.

    For a benchmark whose earlier phase left kernel state behind (TIME_WAIT sockets) that
    would skew the next one. unshare(CLONE_NEWNET) moves the calling thread only: the one
    that makes every socket here. Processes started afterwards inherit the new namespace.
    """
    if not inside():
        raise RuntimeError("renew() only replaces a private namespace, never the host's")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"unshare(CLONE_NEWNET): {os.strerror(code)}")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def namespaced_main(
    module: str,
    doc: str | None,
    argv: list[str] | None,
    run: Callable[[str, str], tuple[dict[str, Any], list[Target]]],
    seconds: int,
) -> int:
    """A wall benchmark's `main()`: into a private namespace if wanted (re-running `module`
    there), a hard deadline, then `run(size, mode)` and its results saved."""
    argv = sys.argv[1:] if argv is None else argv
    args = arguments(doc, argv, modes=(NAMESPACE, OPTION))
    mode = choose(args.mode)
    if mode == NAMESPACE and not inside():
        return reexec(module, argv)
    deadline(seconds)
    save(module.rpartition(".")[2], *run(args.size, mode), args.results)
    return 0
