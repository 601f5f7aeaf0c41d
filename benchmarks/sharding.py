"""Several processes sharing one source IP: the retry rate with and without sharding.

Four worker processes (`benchmarks/shard_worker.py`) use the same source and port range to
connect to one destination, all at once, until their pools say no. Without `shard`, each
table picks ports on its own, and picks that another process made first clash (the kernel
says EADDRNOTAVAIL): retries. With `shard=(index, 4)` each process has its own contiguous
slice: no clash can happen. strategy="kernel" without sharding is shown too: the kernel's
pick is atomic across processes. Target: with sharding, retries < 1% of connects.

    python -m benchmarks.sharding [--quick]
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks._common import Target, arguments, save, stop
from bindpool import _host

SOURCE = "127.0.0.60"
WORKERS = 4


def run_workers(
    ports: range,
    *,
    sharded: bool,
    strategy: str = "table",
    source: str = SOURCE,
    workers: int = WORKERS,
) -> list[dict[str, Any]]:
    """Start `workers` processes together; each connects to one listener until its pool says
    no. Returns their reports (connects, retries, exhausted, failures, ports)."""
    with socket.socket() as listener:  # never accepts: the queue holds every connection
        listener.bind(("127.0.0.1", 0))
        listener.listen(4096)
        destination = f"127.0.0.1:{listener.getsockname()[1]}"
        processes = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "benchmarks.shard_worker",
                    "--source",
                    source,
                    "--ports",
                    f"{ports.start}-{ports.stop - 1}",
                    "--shard",
                    f"{index}/{workers}" if sharded else "none",
                    "--strategy",
                    strategy,
                    "--destination",
                    destination,
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).parent.parent,
            )
            for index in range(workers)
        ]
        try:
            for process in processes:
                assert process.stdout is not None
                assert process.stdout.readline().strip() == "ready", "a worker failed to start"
            for process in processes:  # all at once
                assert process.stdin is not None
                process.stdin.write("go\n")
                process.stdin.flush()
            reports = []
            for process in processes:
                assert process.stdout is not None
                line = process.stdout.readline()
                assert line, "a worker died"
                reports.append(json.loads(line))
            return reports
        finally:
            for process in processes:
                stop(process, seconds=30)


def rate(reports: list[dict[str, Any]]) -> tuple[int, int, float]:
    connects = sum(r["connects"] for r in reports)
    retries = sum(r["retries"] for r in reports)
    return connects, retries, retries / max(1, connects)


SIZES = {"full": 2000, "quick": 400, "tiny": 40}


def run(size_name: str) -> tuple[dict[str, Any], list[Target]]:
    """The three runs at one of the sizes: their figures and the target."""
    size = SIZES[size_name]
    ephemeral = _host.ephemeral_range()
    table_ports = range(22000, 22000 + size)  # below the ephemeral range
    kernel_ports = range(ephemeral.stop - size, ephemeral.stop)
    data: dict[str, Any] = {"workers": WORKERS, "ports": size}
    runs = {
        "table, no shard": run_workers(table_ports, sharded=False),
        "table, shard=(i, 4)": run_workers(table_ports, sharded=True),
        "kernel, no shard": run_workers(kernel_ports, sharded=False, strategy="kernel"),
    }
    for label, reports in runs.items():
        connects, retries, fraction = rate(reports)
        data[label] = {"connects": connects, "retries": retries, "retry_rate": fraction}
        print(f"{label}: {connects} connects, {retries} retries ({fraction:.2%})")
    targets = [
        Target(
            "retry rate with sharding (table)",
            data["table, shard=(i, 4)"]["retry_rate"] * 100,
            1.0,
            True,
            "%",
        )
    ]
    return data, targets


def main(argv: list[str] | None = None) -> None:
    args = arguments(__doc__, argv)
    save("sharding", *run(args.size), args.results)


if __name__ == "__main__":
    main()
