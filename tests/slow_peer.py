"""A peer that is sometimes slow to close, in its own process, for
tests/test_kernel_answers.py: `python -m tests.slow_peer SECONDS EVERY` prints its port, then
serves until stdin closes. Each connection is read to EOF and closed; every EVERY-th is
closed SECONDS late (a distant or busy peer). Until the peer closes, the client's side of
the 4-tuple waits in FIN_WAIT2 and the kernel refuses to connect it again."""

from __future__ import annotations

import asyncio
import itertools
import sys

import uvloop


async def serve(delay: float, every: int) -> None:
    count = itertools.count(1)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        slow = next(count) % every == 0
        try:
            while await reader.read(65536):
                pass
            if slow:
                await asyncio.sleep(delay)
        except (ConnectionError, asyncio.CancelledError):
            pass  # the client reset it, or the server is stopping
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()


if __name__ == "__main__":
    uvloop.run(serve(float(sys.argv[1]), int(sys.argv[2])))
