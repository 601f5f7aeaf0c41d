"""`python -m bindpool` (also the `bindpool` console script): `demo`, `probe`, `--version`.

Progress bars come from rich (the `bindpool[cli]` extra) when it is installed; without it
the output is plain text. Ctrl-C ends any command with one line on stderr and exit code 130
(128 + SIGINT, what a shell reports for a process that SIGINT ended).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import bindpool
from bindpool import _demo, _probe

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["main"]


class _PlainProgress:
    """Progress as a line per phase, for terminals without rich."""

    def start(self, label: str, total: int) -> None:
        self._label, self._total, self._done = label, total, 0

    def advance(self) -> None:
        self._done += 1

    def stop(self) -> None:
        print(f"  {self._label}: {self._done} of {self._total}")


class _RichProgress:
    def __init__(self) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn())
        self._progress_type = Progress

    def start(self, label: str, total: int) -> None:
        self._progress = self._progress_type(*self._columns, transient=False)
        self._task = self._progress.add_task(label, total=total)
        self._progress.start()

    def advance(self) -> None:
        self._progress.advance(self._task)

    def stop(self) -> None:
        self._progress.stop()


def _progress() -> _demo.Progress:
    try:
        return _RichProgress()
    except ImportError:
        return _PlainProgress()


def plural(count: int, noun: str) -> str:
    """`1 connection`, `2 connections`."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def verdict(result: _demo.DemoResult) -> str:
    pooled = plural(result.bindpool.opened, "connection")
    if result.local_addr is None:
        return f"local_addr: not shown (see above) · bindpool: {pooled}"
    plain = result.local_addr.opened
    ratio = f" ({result.bindpool.opened / plain:.1f}×)" if plain else ""
    return f"local_addr: {plural(plain, 'connection')} · bindpool: {pooled}{ratio}"


def _ports(chosen: range) -> str:
    if len(chosen) == 1:
        return f"port {chosen.start}"
    return f"ports {chosen.start}-{chosen.stop - 1} ({len(chosen)})"


def _table(result: _demo.DemoResult) -> str:
    phases = [p for p in (result.local_addr, result.bindpool) if p is not None]
    rows = [("method", "connections", "stopped by")] + [
        (p.name, str(p.opened), p.stopped_by) for p in phases
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _refuse(problems: list[str]) -> int:
    for problem in problems:
        print(f"bindpool demo: {problem}", file=sys.stderr)
    return 2


def demo(args: argparse.Namespace) -> int:
    problems = _demo.check(args.ports, args.destinations) + _demo.check_source(args.source)
    if problems:
        # The block search binds the source once per port: only a valid size and a
        # numeric local source may reach it (a host name would be resolved each time).
        return _refuse(problems)
    try:
        chosen = _demo.block(args.ports, args.source)
    except ValueError as exc:
        return _refuse([str(exc)])
    print(
        f"bindpool demo: from {args.source} to {plural(args.destinations, 'listener')} on "
        f"loopback, {_ports(chosen)}; the most TCP allows is {len(chosen) * args.destinations}.",
        flush=True,  # before the progress bars, even when stdout is a pipe
    )
    result = _demo.run(args.source, chosen, args.destinations, _progress())
    if result.note:
        print(result.note)
    print()
    print(_table(result))
    print()
    print(verdict(result))
    return 0 if result.ok else 1


def probe(args: argparse.Namespace) -> int:
    print(_probe.render(_probe.probe()))
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="bindpool", description="Outbound connections from chosen source IPs."
    )
    top.add_argument("--version", action="version", version=f"bindpool {bindpool.__version__}")
    commands = top.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo",
        help="show the source-port wall and bindpool removing it, on loopback",
        description="Open connections from one source IP to local listeners on a small port "
        "block, first as local_addr does (bind((ip, 0)), then connect), then through a "
        "bindpool Pool, and compare. Loopback only; no root, no set-up. Exits 0 when "
        "bindpool reached ports x destinations.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    run_demo.add_argument(
        "--ports",
        type=int,
        default=1000,
        metavar="N",
        help="size of the port block (from the ephemeral range)",
    )
    run_demo.add_argument(
        "--destinations", type=int, default=4, metavar="D", help="listeners to connect to"
    )
    run_demo.add_argument(
        "--source",
        default="127.0.0.2",
        metavar="IP",
        help="source IP: any 127.x.y.z, or ::1 for IPv6",
    )
    run_demo.set_defaults(run=demo)
    run_probe = commands.add_parser(
        "probe",
        help="what this host offers, and how to set it up",
        description="Read this host's port ranges, TCP settings and limits, try the socket "
        "options bindpool uses, and advise. Changes nothing; needs no root.",
    )
    run_probe.set_defaults(run=probe)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        # Each command cleans up on the way out (finally blocks, asyncio.run cancelling its
        # task); what is left to say is one line, not the traceback of where it stopped.
        print(f"bindpool {args.command}: interrupted", file=sys.stderr)
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
