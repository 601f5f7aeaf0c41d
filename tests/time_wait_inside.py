"""Run inside a fresh network namespace by tests/test_time_wait.py (root only).

Turns TCP timestamps off there (never on the host), then opens and closes connections to
one destination in a loop, through pools with and without a cool-down, and prints their
statistics as JSON. The server closes after the client, so each client 4-tuple ends in
TIME_WAIT, which without timestamps cannot be reused for 60 s.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import bindpool
from bindpool import _host

LOOPS = 60


async def sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass
    writer.close()


async def churn(pool: bindpool.Pool, port: int) -> dict[str, int]:
    for _ in range(LOOPS):
        sock = await pool.connect("127.0.0.1", port, timeout=5)
        sock.close()
        await asyncio.sleep(0.005)  # the server closes too: the 4-tuple enters TIME_WAIT
    stats = pool.statistics()
    return {"connects": stats.connects, "retries": stats.retries, "exhausted": stats.exhausted}


async def main() -> None:
    server = await asyncio.start_server(sink, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ephemeral = _host.ephemeral_range()  # this namespace's own
    results = {
        "cooldown 60": await churn(bindpool.Pool(["127.0.0.1"], ports=range(20000, 20100)), port),
        "cooldown 0": await churn(
            bindpool.Pool(["127.0.0.1"], ports=range(21000, 21100), cooldown=0), port
        ),
        "kernel": await churn(
            bindpool.Pool(
                ["127.0.0.1"],
                ports=range(ephemeral.start, ephemeral.start + 100),
                strategy="kernel",
            ),
            port,
        ),
    }
    server.close()
    print(json.dumps(results))


if __name__ == "__main__":
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    Path("/proc/sys/net/ipv4/tcp_timestamps").write_text("0\n")
    asyncio.run(main())
