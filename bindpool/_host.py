"""What this host offers: its port ranges and socket options, read once, off the hot path.

Everything here may make syscalls or read /proc; the pool calls it at construction only.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import struct
import sys
from pathlib import Path

__all__ = [
    "IP_BIND_ADDRESS_NO_PORT",
    "IP_LOCAL_PORT_RANGE",
    "default_ports",
    "ephemeral_range",
    "format_port_list",
    "effective_capabilities",
    "has_option",
    "is_broadcast",
    "is_local",
    "local_port_range",
    "lowest_bindable_port",
    "parse_port_list",
    "reserved_ports",
    "set_local_port_range",
    "sysctl",
]

# Linux socket options (SOL_IP). NO_PORT: defer the port pick from bind() to connect(), when
# the kernel knows the destination. LOCAL_PORT_RANGE (Linux >= 6.3, no Python constant yet):
# narrow this socket's automatic pick to [lo, hi], given as lo | hi << 16.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
IP_LOCAL_PORT_RANGE = 51

_PROC_SYS = Path("/proc/sys")
_PROC_STATUS = Path("/proc/self/status")
# capability(7): binding a port below net.ipv4.ip_unprivileged_port_start needs this one.
CAP_NET_BIND_SERVICE = 10
# What Linux ships when /proc/sys cannot be read (e.g. a sandbox without it).
_LINUX_DEFAULT_EPHEMERAL = range(32768, 61000)


def sysctl(name: str) -> str | None:
    """The text of a sysctl such as "net.ipv4.tcp_timestamps", or None if unreadable."""
    try:
        return (_PROC_SYS / name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def parse_port_list(text: str) -> list[int]:
    """Ports from the kernel's list syntax, "1000-1002,2000" -> [1000, 1001, 1002, 2000]."""
    ports: list[int] = []
    for item in text.replace(" ", "").split(","):
        if not item:
            continue
        low, _, high = item.partition("-")
        ports.extend(range(int(low), int(high or low) + 1))
    return ports


def format_port_list(ports: list[int]) -> str:
    """The kernel's list syntax for ports: [1, 2, 3, 7] -> "1-3,7"."""
    spans: list[str] = []
    for port in sorted(set(ports)):
        if spans and port == int(spans[-1].rpartition("-")[2]) + 1:
            spans[-1] = f"{spans[-1].partition('-')[0]}-{port}"
        else:
            spans.append(str(port))
    return ",".join(spans)


def ephemeral_range() -> range:
    """`net.ipv4.ip_local_port_range` (IPv6 uses the same one), as a range."""
    text = sysctl("net.ipv4.ip_local_port_range")
    if text is None:
        return _LINUX_DEFAULT_EPHEMERAL
    low, high = (int(part) for part in text.split())
    return range(low, high + 1)


def reserved_ports() -> list[int]:
    """`net.ipv4.ip_local_reserved_ports`: ports the kernel's automatic pick never takes."""
    text = sysctl("net.ipv4.ip_local_reserved_ports")
    return parse_port_list(text) if text else []


def default_ports() -> list[int] | range:
    """The host's reserved ports when it has any, else its ephemeral range.

    A reserved block is the kind choice: ports bound explicitly vanish from other programs'
    automatic pick, and reserved ports were never in it.
    """
    return reserved_ports() or ephemeral_range()


def is_local(address: str, family: int) -> bool:
    """Whether `address` can be bound here (a local address), without taking a port.

    IP_BIND_ADDRESS_NO_PORT makes bind() check the address but defer the port to connect().
    """
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # Not on Linux: a bind to port 0 takes a port for a moment, no more.
        with contextlib.suppress(OSError):
            probe.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        try:
            probe.bind((address, 0))
        except OSError:
            return False
    return True


def is_broadcast(address: str) -> bool:
    """Whether the IPv4 `address` is a broadcast address here, as the kernel routes it.

    Linux lets a TCP socket bind a broadcast address (`is_local` says yes), then sends from
    another address (FIELD-NOTES.md). Its routing table knows better: the local table holds a
    BROADCAST route for every subnet broadcast (`brd` in `ip addr`, and prefix|~mask of each
    address with a prefix shorter than /31, lo's 127.255.255.255 included). Connecting a UDP
    socket looks that route up and, for a broadcast route without SO_BROADCAST, fails with
    EACCES (ip4_datagram_connect); nothing is sent. One lookup per source, so a host with a
    full routing table costs no more than one without (/proc/net/fib_trie would be read whole).
    255.255.255.255 is checked by value: where no interface could send it, the lookup says
    ENETUNREACH instead.
    """
    if address == "255.255.255.255":
        return True
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((address, 9))
        except OSError as exc:
            if exc.errno != errno.EACCES:
                return False  # unroutable: `is_local` has its own say
        else:
            return False
        # EACCES could also come from a security module: a broadcast route is the one that
        # SO_BROADCAST lets through.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        try:
            probe.connect((address, 9))
        except OSError:
            return False
    return True


def effective_capabilities(status: str) -> int | None:
    """The effective capability set from /proc/self/status text (its `CapEff:` line)."""
    for line in status.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def lowest_bindable_port() -> int:
    """The lowest port this process may bind() explicitly (1 when it may bind any).

    Below net.ipv4.ip_unprivileged_port_start (1024 unless lowered; it is per network
    namespace and applies to IPv6 too), bind() needs CAP_NET_BIND_SERVICE in the effective
    set, whatever the user id: root without it is refused, a user granted it is not.
    """
    if sys.platform != "linux":
        return 1  # not checked: other systems have other rules, and bind() reports them
    text = sysctl("net.ipv4.ip_unprivileged_port_start")
    start = int(text) if text else 1024  # before Linux 4.11, fixed at 1024 (PROT_SOCK)
    try:
        capabilities = effective_capabilities(_PROC_STATUS.read_text())
    except OSError:
        capabilities = None
    if capabilities is None:  # no /proc: only root is likely to hold it
        privileged = os.geteuid() == 0
    else:
        privileged = bool(capabilities >> CAP_NET_BIND_SERVICE & 1)
    return 1 if privileged else max(start, 1)


def local_port_range(low: int, high: int) -> bytes:
    """The IP_LOCAL_PORT_RANGE value for [low, high]: a u32, low | high << 16."""
    return struct.pack("I", low | high << 16)


def set_local_port_range(sock: socket.socket, low: int, high: int) -> None:
    """Narrow `sock`'s automatic port pick to [low, high] (IP_LOCAL_PORT_RANGE)."""
    sock.setsockopt(socket.SOL_IP, IP_LOCAL_PORT_RANGE, local_port_range(low, high))


def has_option(level: int, name: int, value: int | bytes) -> bool:
    """Whether this kernel accepts a socket option (tried on a throw-away TCP socket)."""
    with socket.socket() as sock:
        try:
            sock.setsockopt(level, name, value)
        except OSError:
            return False
    return True
