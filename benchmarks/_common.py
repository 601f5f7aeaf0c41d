"""What every benchmark shares: targets that say whether they hold, and JSON results.

Targets are never adjusted to pass: a miss is printed as a miss, with the figure.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping, Sequence

RESULTS = Path(__file__).parent / "results"
SIZES = ("full", "quick", "tiny")  # tiny: the smoke tests' size, seconds at most


@dataclass(frozen=True)
class Target:
    """A figure and the bound it must meet: `at_most` or `at_least`."""

    name: str
    measured: float
    bound: float
    at_most: bool
    unit: str = ""

    @property
    def holds(self) -> bool:
        return self.measured <= self.bound if self.at_most else self.measured >= self.bound

    def line(self) -> str:
        mark = "PASS" if self.holds else "MISS"
        sign = "<=" if self.at_most else ">="
        return (
            f"  [{mark}] {self.name}: {_figure(self.measured)}{self.unit} "
            f"(target {sign} {_figure(self.bound)}{self.unit})"
        )

    @classmethod
    def from_json(cls, item: Mapping[str, Any]) -> Target:
        """The Target a results file recorded (its "holds" is recomputed, not trusted)."""
        return cls(**{field.name: item[field.name] for field in fields(cls)})


def _figure(value: float) -> str:
    """3 significant digits; a count (a whole number from 10,000) in full, with commas."""
    if float(value).is_integer() and abs(value) >= 10_000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or "unknown"


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "load_average": os.getloadavg()[0],  # the machine is often shared: a noise hint
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(
    name: str, data: dict[str, Any], targets: list[Target], directory: Path | None = None
) -> Path:
    """Write `benchmarks/results/<name>.json` (or `directory/<name>.json`), print targets."""
    directory = RESULTS if directory is None else directory
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    payload = {
        "benchmark": name,
        "machine": machine(),
        "data": data,
        "targets": [asdict(t) | {"holds": t.holds} for t in targets],
    }
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"{name}: results in {path}")
    for target in targets:
        print(target.line())
    return path


@contextlib.contextmanager
def peer(host: str = "127.0.0.1") -> Iterator[int]:
    """Run `benchmarks.peer` in its own process; yield its port; stop it afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.peer", "--host", host],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).parent.parent,
    )
    try:
        assert process.stdout is not None
        yield int(process.stdout.readline())
    finally:
        stop(process)


def stop(process: subprocess.Popen[str], seconds: float = 10) -> None:
    """End a helper process that runs until its stdin closes: close it, wait (bounded), and
    kill the process if it does not end by itself."""
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    if process.stdout is not None:
        process.stdout.close()


def arguments(
    doc: str | None, argv: list[str] | None, *, modes: Sequence[str] = ()
) -> argparse.Namespace:
    """The options every benchmark takes: its size, where results go; `--mode` if `modes`."""
    parser = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="the bench-quick sizes")
    parser.add_argument("--size", choices=SIZES, help="full (default), quick or tiny")
    parser.add_argument("--results", type=Path, help="directory for the JSON results")
    if modes:
        parser.add_argument(
            "--mode",
            choices=("auto", *modes),
            default="auto",
            help="namespace: run in a private network namespace (root); auto: there when "
            "root may make one",
        )
    args = parser.parse_args(argv)
    args.size = args.size or ("quick" if args.quick else "full")
    return args


def deadline(seconds: int) -> None:
    """A hard bound: SIGALRM's default action ends the process, even inside a syscall."""
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    signal.alarm(seconds)
