"""`bindpool probe`: what this host offers bindpool, and how to set it up.

Reads sysctls and limits and tries the socket options; changes nothing. Advice that changes a
sysctl says it needs root and, where there is one, gives the way without root.
"""

from __future__ import annotations

import platform
import resource
import socket
import textwrap
from dataclasses import dataclass

from bindpool import _host

__all__ = ["HostReport", "advice", "probe", "render"]


@dataclass(frozen=True)
class HostReport:
    kernel: str
    bind_address_no_port: bool  # IP_BIND_ADDRESS_NO_PORT (Linux >= 4.2)
    local_port_range_option: bool  # per-socket IP_LOCAL_PORT_RANGE (Linux >= 6.3)
    ephemeral: range
    reserved: list[int]
    tcp_timestamps: str | None
    tcp_tw_reuse: str | None
    tcp_fin_timeout: str | None
    somaxconn: str | None
    open_files: tuple[int, int]  # soft, hard
    unprivileged_port_start: int = 1024  # net.ipv4.ip_unprivileged_port_start


# What the kernel's numbers mean (Documentation/networking/ip-sysctl.rst).
_TIMESTAMPS = {"0": "off", "1": "on", "2": "on, without random offsets"}
_TW_REUSE = {"0": "off", "1": "on", "2": "on loopback only"}


def probe() -> HostReport:
    ephemeral = _host.ephemeral_range()
    return HostReport(
        kernel=platform.release(),
        bind_address_no_port=_host.has_option(socket.SOL_IP, _host.IP_BIND_ADDRESS_NO_PORT, 1),
        local_port_range_option=_host.has_option(
            socket.SOL_IP,
            _host.IP_LOCAL_PORT_RANGE,
            _host.local_port_range(ephemeral.start, ephemeral.stop - 1),
        ),
        ephemeral=ephemeral,
        reserved=_host.reserved_ports(),
        tcp_timestamps=_host.sysctl("net.ipv4.tcp_timestamps"),
        tcp_tw_reuse=_host.sysctl("net.ipv4.tcp_tw_reuse"),
        tcp_fin_timeout=_host.sysctl("net.ipv4.tcp_fin_timeout"),
        somaxconn=_host.sysctl("net.core.somaxconn"),
        open_files=resource.getrlimit(resource.RLIMIT_NOFILE),
        unprivileged_port_start=int(_host.sysctl("net.ipv4.ip_unprivileged_port_start") or 1024),
    )


def below_ephemeral(report: HostReport, size: int = 10_000) -> range | None:
    """A block of up to `size` ports just below the ephemeral range that any user may bind,
    or None when there is no room for 1,000 there.

    The kernel's automatic pick never goes below the ephemeral range, so such a block costs
    other programs nothing without being reserved: the no-root alternative to reserving one.
    """
    floor = max(report.unprivileged_port_start, 1024)
    start = max(floor, report.ephemeral.start - size)
    if report.ephemeral.start - start < 1000:
        return None
    return range(start, report.ephemeral.start)


def advice(report: HostReport) -> list[str]:
    """Concrete steps, most useful first."""
    tips = []
    low, high = report.ephemeral.start, report.ephemeral.stop - 1
    if report.reserved:
        spans = _host.format_port_list(report.reserved)
        tips.append(
            f"Pool() uses the {len(report.reserved)} reserved ports ({spans}) "
            "by default: other programs' automatic port pick never takes them, so bindpool's "
            "explicit binds cost them nothing."
        )
    else:
        size = min(10_000, len(report.ephemeral) // 3)
        block = f"{high - size + 1}-{high}"
        tips.append(
            f"No reserved ports: Pool() will use the whole ephemeral range {low}-{high}, and "
            "every port it binds disappears from other programs' automatic pick while bound. "
            "Reserve a block for bindpool instead (needs root): `sudo sysctl -w "
            f"net.ipv4.ip_local_reserved_ports={block}` (persist it in /etc/sysctl.d/); "
            "Pool() then uses it by default."
        )
        outside = below_ephemeral(report)
        if outside is not None:
            tips.append(
                "Without root: give the pool a block below the ephemeral range, where the "
                "kernel's automatic pick never goes, e.g. "
                f"Pool(..., ports=range({outside.start}, {outside.stop})). A server "
                "listening on one of those ports only makes bindpool skip that port."
            )
    if report.tcp_timestamps == "0":
        tips.append(
            "TCP timestamps are off: a 4-tuple in TIME_WAIT cannot be reused for 60 s, so keep "
            "cooldown at 60 (the default) or more (no root needed), or turn them on (needs "
            "root): `sudo sysctl -w net.ipv4.tcp_timestamps=1`."
        )
    soft, hard = (_limit(n) for n in report.open_files)
    raising = (
        f"`ulimit -n {hard}` raises it to the hard limit without root; beyond that needs root"
        if report.open_files[0] != report.open_files[1]
        else "The soft limit is already the hard one: raising it needs root"
    )
    tips.append(
        f"Each connection is a file descriptor: this process may open {soft} (hard limit "
        f"{hard}), and N connections need N plus a margin. {raising} "
        "(/etc/security/limits.conf, systemd LimitNOFILE=)."
    )
    if not report.local_port_range_option:
        tips.append(
            "This kernel lacks the per-socket IP_LOCAL_PORT_RANGE option (Linux >= 6.3): "
            "`bindpool demo` cannot show the wall without root, and strategy='kernel' searches "
            "the whole ephemeral range."
        )
    if not report.bind_address_no_port:
        tips.append(
            "IP_BIND_ADDRESS_NO_PORT is missing (Linux >= 4.2): strategy='kernel' cannot run."
        )
    tips.append(
        "Several worker processes sharing a source IP: give each its own slice, "
        "Pool(..., shard=(index, count)), so they never pick the same port."
    )
    return tips


def _limit(value: int) -> str:
    return "unlimited" if value == resource.RLIM_INFINITY else str(value)


def _gloss(value: str | None, meanings: dict[str, str]) -> str:
    """A sysctl's raw value and, when known, what it means: "2 (on loopback only)"."""
    if value is None:
        return "? (unreadable)"
    meaning = meanings.get(value)
    return f"{value} ({meaning})" if meaning else value


def render(report: HostReport) -> str:
    yes = {True: "yes", False: "no"}
    rows = [
        ("kernel", report.kernel),
        ("IP_BIND_ADDRESS_NO_PORT", yes[report.bind_address_no_port]),
        ("IP_LOCAL_PORT_RANGE (per socket)", yes[report.local_port_range_option]),
        (
            "ephemeral range",
            f"{report.ephemeral.start}-{report.ephemeral.stop - 1} ({len(report.ephemeral)} ports)",
        ),
        (
            "reserved ports",
            f"{_host.format_port_list(report.reserved)} ({len(report.reserved)})"
            if report.reserved
            else "none",
        ),
        ("tcp_timestamps", _gloss(report.tcp_timestamps, _TIMESTAMPS)),
        ("tcp_tw_reuse", _gloss(report.tcp_tw_reuse, _TW_REUSE)),
        ("tcp_fin_timeout", f"{report.tcp_fin_timeout or '?'} s"),
        ("somaxconn", report.somaxconn or "?"),
        ("open files (soft/hard)", "/".join(_limit(n) for n in report.open_files)),
        ("lowest port without root", str(report.unprivileged_port_start)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["This host"] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += ["", "Advice"]
    for tip in advice(report):
        lines += textwrap.wrap(tip, 96, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines)
