"""`bindpool probe`: what this host offers bindpool, and how to set it up.

Reads sysctls and limits and tries the socket options; changes nothing.
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
    )


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
            f"Reserve a block for bindpool instead, e.g. `sysctl -w "
            f"net.ipv4.ip_local_reserved_ports={block}` (persist it in /etc/sysctl.d/); "
            "Pool() then uses it by default."
        )
    if report.tcp_timestamps == "0":
        tips.append(
            "TCP timestamps are off: a 4-tuple in TIME_WAIT cannot be reused for 60 s, so keep "
            "cooldown at 60 (the default) or more, or turn them on: "
            "`sysctl -w net.ipv4.tcp_timestamps=1`."
        )
    soft, hard = report.open_files
    tips.append(
        f"Each connection is a file descriptor: this process may open {soft} (hard limit "
        f"{hard}). For N connections raise it to N plus a margin (`ulimit -n`, systemd "
        "LimitNOFILE=)."
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
        ("tcp_timestamps", report.tcp_timestamps or "?"),
        ("tcp_tw_reuse", report.tcp_tw_reuse or "?"),
        ("tcp_fin_timeout", f"{report.tcp_fin_timeout or '?'} s"),
        ("somaxconn", report.somaxconn or "?"),
        ("open files (soft/hard)", "{}/{}".format(*report.open_files)),
    ]
    width = max(len(name) for name, _ in rows)
    lines = ["This host"] + [f"  {name:<{width}}  {value}" for name, value in rows]
    lines += ["", "Advice"]
    for tip in advice(report):
        lines += textwrap.wrap(tip, 96, initial_indent="  - ", subsequent_indent="    ")
    return "\n".join(lines)
