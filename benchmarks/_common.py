"""What every benchmark shares: targets that say whether they hold, and JSON results.

Targets are never adjusted to pass: a miss is printed as a miss, with the figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterator

RESULTS = Path(__file__).parent / "results"


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
        mark = "holds" if self.holds else "MISSED"
        sign = "<=" if self.at_most else ">="
        return (
            f"  [{mark:>6}] {self.name}: {self.measured:.3g}{self.unit} "
            f"(target {sign} {self.bound:g}{self.unit})"
        )


def median(values: list[float]) -> float:
    return statistics.median(values)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def machine() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def save(name: str, data: dict[str, Any], targets: list[Target]) -> Path:
    """Write `benchmarks/results/<name>.json` and print the targets."""
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
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
        assert process.stdin is not None
        process.stdin.close()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
