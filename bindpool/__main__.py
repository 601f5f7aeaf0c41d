"""`python -m bindpool` (also the `bindpool` console script): `demo` and `probe`.

Progress bars and tables come from rich (the `bindpool[cli]` extra) when it is installed;
without it the output is plain text.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from bindpool import _config, _demo, _probe
from bindpool._errors import ConfigurationError

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


def verdict(result: _demo.DemoResult) -> str:
    pooled = result.bindpool.opened
    if result.local_addr is None:
        return f"local_addr: not shown (see above) · bindpool: {pooled} connections"
    plain = result.local_addr.opened
    ratio = f" ({pooled / plain:.1f}×)" if plain else ""
    return f"local_addr: {plain} connections · bindpool: {pooled} connections{ratio}"


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


def demo(args: argparse.Namespace) -> int:
    problems = _demo.check(args.ports, args.destinations)
    try:
        _config.check_sources([args.source])
    except ConfigurationError as exc:
        problems.append(str(exc))
    try:
        chosen = _demo.block(args.ports, args.source)
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"bindpool demo: {problem}", file=sys.stderr)
        return 2
    print(
        f"bindpool demo: from {args.source} to {args.destinations} listeners on loopback, "
        f"ports {chosen.start}-{chosen.stop - 1} ({len(chosen)}); "
        f"the most TCP allows is {len(chosen) * args.destinations}."
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="bindpool", description="Outbound connections from chosen source IPs."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser(
        "demo", help="show the source-port wall and bindpool removing it, on loopback"
    )
    run_demo.add_argument("--ports", type=int, default=1000, help="size of the port range")
    run_demo.add_argument("--destinations", type=int, default=4, help="listeners to connect to")
    run_demo.add_argument("--source", default="127.0.0.2", help="source IP (loopback)")
    run_demo.set_defaults(run=demo)
    run_probe = commands.add_parser("probe", help="what this host offers, and how to set it up")
    run_probe.set_defaults(run=probe)
    args = parser.parse_args(argv)
    code: int = args.run(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
