"""Run inside a fresh network namespace by tests/test_source_health.py (root only).

There, loopback carries single addresses (127.0.0.1/32 and a few more) instead of the
whole 127.0.0.0/8, so deleting one (`ip addr del`) really takes it off the host: bind()
then says EADDRNOTAVAIL. For each loop, strategy and call it measures, as JSON:
- "two": of CALLS connects through a pool of two sources, one deleted after a quarter of
  them: how many failed, and the deleted source's state at the end;
- "one": a pool whose only source is deleted: the error and the sources it names;
- "back": that address restored: seconds until a connect worked again.
Usage: python -m tests.source_health_inside [--calls N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import uvloop

import bindpool

SERVER = ("127.0.0.1", 9000)
# (getattr: the script also measures the library as it was before, for comparison)
UNAVAILABLE: type[OSError] = getattr(bindpool, "SourceUnavailable", OSError)
KEPT, GONE, ONLY = "127.0.0.2", "127.0.0.3", "127.0.0.4"


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def loopback_of_single_addresses() -> None:
    ip("link", "set", "lo", "up")
    ip("addr", "del", "127.0.0.1/8", "dev", "lo")
    for address in ("127.0.0.1", KEPT, GONE, ONLY):
        ip("addr", "add", f"{address}/32", "dev", "lo")


class Records(logging.Handler):
    """The pool's log records, as (level, message)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.seen: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.levelname, record.getMessage()))


def serve() -> socket.socket:
    """A listener that accepts and closes each connection, on a thread of its own."""
    listener = socket.create_server(SERVER, backlog=4096)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    return listener


async def once(pool: bindpool.Pool, call: str) -> None:
    if call == "connect":
        (await pool.connect(*SERVER, timeout=5)).close()
    else:
        _, writer = await pool.open_connection(*SERVER, timeout=5)
        writer.close()
        await writer.wait_closed()


async def scenario(strategy: str, call: str, calls: int, ports: range) -> dict[str, object]:
    records = Records()
    logger = logging.getLogger("bindpool")
    logger.addHandler(records)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    two = bindpool.Pool([KEPT, GONE], ports=ports, strategy=strategy)  # type: ignore[arg-type]
    failed: list[str] = []
    for number in range(calls):
        if number == calls // 4:
            ip("addr", "del", f"{GONE}/32", "dev", "lo")
        try:
            await once(two, call)
        except OSError as exc:
            failed.append(repr(exc))
    state = getattr(two.statistics().sources[GONE], "state", "?")  # "?": before states
    ip("addr", "add", f"{GONE}/32", "dev", "lo")

    one = bindpool.Pool([ONLY], ports=ports, strategy=strategy)  # type: ignore[arg-type]
    await once(one, call)
    ip("addr", "del", f"{ONLY}/32", "dev", "lo")
    try:
        await once(one, call)
        error, named = "none", []
    except OSError as exc:
        error, named = type(exc).__name__, list(getattr(exc, "sources", []))
    ip("addr", "add", f"{ONLY}/32", "dev", "lo")
    restored = time.monotonic()
    back = None
    while time.monotonic() - restored < 5:  # bounded: the pool promises within 2 s
        try:
            await once(one, call)
        except UNAVAILABLE:
            await asyncio.sleep(0.02)
            continue
        back = time.monotonic() - restored
        break
    await asyncio.sleep(0.2)  # let closing transports finish
    logger.removeHandler(records)
    return {
        "two": {"calls": calls, "failed": len(failed), "errors": failed[:3], "state": state},
        "one": {"error": error, "sources": named},
        "back": back,
        "in_use": two.statistics().in_use + one.statistics().in_use,
        "warnings": [m for level, m in records.seen if level == "WARNING"],
        "ups": [m for level, m in records.seen if level == "DEBUG" and "up again" in m],
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200)
    calls = parser.parse_args().calls
    loopback_of_single_addresses()
    listener = serve()
    results: dict[str, object] = {}
    loops: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
        "asyncio": asyncio.new_event_loop,
        "uvloop": uvloop.new_event_loop,
    }
    # A fresh block for each run: the 4-tuples a run closed wait out TIME_WAIT, which the
    # kernel's own pick (strategy "kernel") reuses only after a second.
    starts = {"table": 20000, "kernel": 40000}
    for number, (loop_name, factory) in enumerate(loops.items()):
        for strategy, start in starts.items():
            for offset, call in enumerate(("connect", "open_connection")):
                first = start + (number * 2 + offset) * 300
                with asyncio.Runner(loop_factory=factory) as runner:
                    results[f"{loop_name} {strategy} {call}"] = runner.run(
                        scenario(strategy, call, calls, range(first, first + 300))
                    )
    listener.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
