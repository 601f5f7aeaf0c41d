"""Bad input only a changed host can show, run apart from the test process by tests/test_config.py.

`python -m tests.badinput_inside broadcast`: inside a fresh network namespace (`unshare -n`,
root), gives loopback addresses whose subnet and explicit broadcasts differ from the host's,
then reports which sources bind() takes and which the pool takes.

`unprivileged()`: called in a process without CAP_NET_BIND_SERVICE (a child turned into
`nobody`, or root with the capability dropped: `python -m tests.badinput_inside unprivileged`
under setpriv); reports what bind() and the pool say about ports below
net.ipv4.ip_unprivileged_port_start.

Each prints (or returns) a JSON-able dict; the test asserts on it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import sys
from typing import Any

import bindpool
from bindpool import _host

SOURCE = "127.0.0.2"

# address -> what it is once `ip addr` below has run
BROADCAST_CASES = {
    "10.9.8.255": "subnet broadcast of 10.9.8.7/24 (no brd given: the kernel adds it)",
    "10.7.0.100": "explicit brd of 10.7.0.1/24",
    "10.7.0.255": "subnet broadcast of 10.7.0.1/24 (added besides the explicit brd)",
    "10.9.8.7": "unicast: the /24's own address",
    "10.8.1.255": "unicast: a /32 that merely ends in .255",
}


def pool_says(sources: list[str], **kwargs: Any) -> str:
    """ "ok", or the ConfigurationError's message."""
    try:
        bindpool.Pool(sources, **kwargs)
    except bindpool.ConfigurationError as exc:
        return str(exc)
    return "ok"


def binds(address: str, port: int = 0) -> str:
    """ "ok", or the errno name bind() gives for `address`:`port`."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((address, port))
        except OSError as exc:
            return errno.errorcode.get(exc.errno or 0, str(exc))
    return "ok"


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def broadcast() -> dict[str, Any]:
    for command in (
        "ip link set lo up",
        "ip addr add 10.9.8.7/24 dev lo",
        "ip addr add 10.7.0.1/24 brd 10.7.0.100 dev lo",
        "ip addr add 10.8.1.255/32 dev lo",
    ):
        subprocess.run(command.split(), check=True)
    before = open_fds()
    report = {
        address: {"bind": binds(address), "pool": pool_says([address], ports=range(40000, 40010))}
        for address in BROADCAST_CASES
    }
    return {"sources": report, "fds_left": open_fds() - before}


def unprivileged() -> dict[str, Any]:
    start = int(_host.sysctl("net.ipv4.ip_unprivileged_port_start") or 1024)
    before = open_fds()
    report = {
        "euid": os.geteuid(),
        "start": start,
        "lowest_bindable_port": _host.lowest_bindable_port(),
        "bind 80": binds(SOURCE, 80),
        "ports 80-89": pool_says([SOURCE], ports=range(80, 90)),
        "ports 1020-1029": pool_says([SOURCE], ports=range(1020, 1030)),
        "ports 40000-40009": pool_says([SOURCE], ports=range(40000, 40010)),
        "kernel strategy": pool_says([SOURCE], strategy="kernel"),
    }
    report["fds_left"] = open_fds() - before
    return report


if __name__ == "__main__":
    job = {"broadcast": broadcast, "unprivileged": unprivileged}[sys.argv[1]]
    print(json.dumps(job()))
