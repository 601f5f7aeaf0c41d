"""Every benchmark in one run: capacity, occupancy, throughput, instructions, table,
sharding, soak, waiting, scale.

Each runs in its own process (`python -m benchmarks.<name>`), the way it runs alone, and
saves `benchmarks/results/<name>.json`; this runner then prints every target with its figure
and verdict, and the figures beside them. A full run also writes `docs/benchmarks.md` and
the plots in `docs/img/`. The exit status is 0 when every benchmark ran, missed targets or
not (this is a report); 1 when a benchmark itself failed.

    python -m benchmarks.run            # full sizes; writes the docs (make bench)
    python -m benchmarks.run --quick    # under two minutes; prints only (make bench-quick)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import _netns, _plots, _report
from benchmarks._common import RESULTS

ROOT = Path(__file__).parent.parent
DOCS = ROOT / "docs"
BENCHMARKS = (
    "capacity",
    "occupancy",
    "throughput",
    "instructions",
    "table",
    "sharding",
    "soak",
    "waiting",
    "scale",
)
# Only in a private network namespace (root): they set sysctls no benchmark sets on the host.
NAMESPACED = ("scale",)
PLOTS = {
    "capacity": _plots.capacity,
    "occupancy": _plots.occupancy,
    "throughput": _plots.throughput,
    "table": _plots.table,
    "scale": _plots.scale,
}


def run_one(name: str, size: str, results: Path) -> tuple[bool, float]:
    """Run one benchmark in its own process, output straight through; (ran, seconds)."""
    (results / f"{name}.json").unlink(missing_ok=True)  # never report an older run's file
    start = time.perf_counter()
    command = [sys.executable, "-m", f"benchmarks.{name}", "--size", size]
    command += ["--results", str(results)]
    print(f"\n== {name} ({size}) ==", flush=True)
    code = subprocess.run(command, cwd=ROOT, check=False).returncode
    seconds = time.perf_counter() - start
    ran = code == 0 and (results / f"{name}.json").exists()
    if not ran:
        print(f"!! {name} FAILED (exit status {code})", flush=True)
    return ran, seconds


def summary(results: dict[str, dict[str, Any]], failed: list[str], seconds: float) -> str:
    lines = [f"\n== targets ({seconds:.0f} s in all) =="]
    held = total = 0
    for name, payload in results.items():
        lines.append(f"{name}:")
        for target in _report.targets(payload):
            lines.append(target.line())
            held += target.holds
            total += 1
        lines += [f"    beside: {line}" for line in _report.beside(name, payload["data"])]
    lines.append(
        f"{held} of {total} targets hold" + (f"; {total - held} MISSED" if held < total else "")
    )
    for name in failed:
        lines.append(f"{name}: FAILED, no figures")
    return "\n".join(lines)


def write_docs(results: dict[str, dict[str, Any]], run: dict[str, Any], docs: Path) -> list[Path]:
    written = [
        PLOTS[name](payload["data"], docs / "img" / f"{name}.png")
        for name, payload in results.items()
        if name in PLOTS
    ]
    page = docs / "benchmarks.md"
    page.write_text(_report.markdown(results, run))
    return [page, *written]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, under two minutes")
    parser.add_argument("--size", choices=("full", "quick", "tiny"), help="overrides --quick")
    parser.add_argument("--only", nargs="+", choices=BENCHMARKS, help="run only these")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSON results directory")
    parser.add_argument(
        "--docs",
        type=Path,
        help="write benchmarks.md and img/*.png here (default: docs/, on a full run of all)",
    )
    args = parser.parse_args(argv)
    size = args.size or ("quick" if args.quick else "full")
    # The page shows one complete full run: never a quick one, nor a part of one.
    whole = size == "full" and not args.only
    docs = args.docs if args.docs is not None else (DOCS if whole else None)
    args.results.mkdir(parents=True, exist_ok=True)

    run: dict[str, Any] = {
        "size": size,
        "load_average": os.getloadavg()[0],
        "uvloop": metadata.version("uvloop"),
        "durations": {},
    }
    start = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for name in args.only or BENCHMARKS:
        if name in NAMESPACED and not _netns.available():
            print(f"\n== {name}: skipped, it needs root and unshare(1) (a private namespace)")
            continue
        ran, seconds = run_one(name, size, args.results)
        run["durations"][name] = seconds
        if ran:
            results[name] = json.loads((args.results / f"{name}.json").read_text())
        else:
            failed.append(name)
    run["seconds"] = time.perf_counter() - start
    run["failed"] = failed
    (args.results / "run.json").write_text(json.dumps(run, indent=2) + "\n")

    print(summary(results, failed, run["seconds"]))
    if docs is not None and failed:
        print(f"{docs / 'benchmarks.md'} left as it was: a benchmark failed")
    elif docs is not None:
        for path in write_docs(results, run, docs):
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
