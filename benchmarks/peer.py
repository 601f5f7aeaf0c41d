"""A loopback server for the macro benchmarks, run in its own process so its work does not
count against the client: `python -m benchmarks.peer [--host H]` prints its port, then
serves until stdin closes. Each connection is read until EOF, then closed."""

from __future__ import annotations

import argparse
import asyncio
import sys

import uvloop


async def _sink(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while await reader.read(65536):
            pass
    except ConnectionError:
        pass
    finally:
        writer.close()


async def _serve(host: str) -> None:
    server = await asyncio.start_server(_sink, host, 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
    server.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    uvloop.run(_serve(parser.parse_args().host))


if __name__ == "__main__":
    main()
