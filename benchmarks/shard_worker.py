"""One worker process of several sharing a source IP: `python -m benchmarks.shard_worker`.

Makes a Pool (optionally its shard of the ports), prints "ready", waits for "go" on stdin so
that all workers start together, connects to the destination until the pool says no (or
`--most` connections), prints its figures as JSON, then holds its connections until its
stdin closes and resets them (SO_LINGER 0: no TIME_WAIT left for the next run).
Used by benchmarks/sharding.py and tests/test_shards.py.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import struct
import sys

import bindpool


async def work(args: argparse.Namespace) -> None:
    low, _, high = args.ports.partition("-")
    shard = None
    if args.shard != "none":
        index, _, count = args.shard.partition("/")
        shard = (int(index), int(count))
    pool = bindpool.Pool(
        [args.source],
        ports=range(int(low), int(high) + 1),
        shard=shard,
        strategy=args.strategy,
    )
    host, _, port = args.destination.rpartition(":")
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # "go"
    socks: list[socket.socket] = []
    failures = 0
    while len(socks) < args.most:
        try:
            socks.append(await pool.connect(host, int(port), timeout=5))
        except bindpool.PortsExhausted:
            break
        except OSError:
            failures += 1  # not a clash: counted apart, and the worker carries on
            if failures > 100:
                break
    stats = pool.statistics()
    report = {
        "connects": stats.connects,
        "retries": stats.retries,
        "exhausted": stats.exhausted,
        "failures": failures,
        "ports": sorted({sock.getsockname()[1] for sock in socks}),
    }
    print(json.dumps(report), flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    for sock in socks:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--source", required=True)
    parser.add_argument("--ports", required=True, help="low-high, inclusive")
    parser.add_argument("--shard", default="none", help="index/count, or none")
    parser.add_argument("--strategy", default="table", choices=["table", "kernel"])
    parser.add_argument("--destination", required=True, help="host:port")
    parser.add_argument("--most", type=int, default=100_000)
    asyncio.run(work(parser.parse_args()))


if __name__ == "__main__":
    main()
