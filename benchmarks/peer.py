"""A loopback server for the macro benchmarks, run in its own process so its work does not
count against the client: `python -m benchmarks.peer [--host H]` prints its port, then
serves until stdin closes. Each connection's data is dropped; at EOF it is closed.

A bare protocol on uvloop, not streams: the server must be faster than the client it
serves, or the client waits on it and its own cost per connection hides behind the wait
(benchmarks/throughput.py measures the client's CPU per connection).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop


class _Sink(asyncio.Protocol):
    """Drops what arrives; returning None from `eof_received` makes the transport close."""

    def data_received(self, data: bytes) -> None:
        pass

    def eof_received(self) -> None:
        return None


async def _serve(host: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(_Sink, host, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    uvloop.run(_serve(parser.parse_args().host))


if __name__ == "__main__":
    main()
