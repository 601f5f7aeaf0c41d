"""Time to first byte against a host whose first address is dead: stock library vs bindpool.

A made-up name resolves to [dead, live]: "dead" is a listener on 127.0.0.3 whose accept
queue is full (SYNs are dropped, so a connect hangs for minutes), "live" an HTTP server on
127.0.0.1 at the same port. Each client makes one GET with a fresh connection and a total
timeout of 10 s; the time to the first byte of the body is printed per library and loop.
Stock aiohttp and httpx race the addresses (happy eyeballs, 0.25 s); so, now, do their
bindpool adapters. Resolution is faked for both sides alike: aiohttp through a resolver,
httpx (anyio) and the pool through the loop's getaddrinfo.

    python -m benchmarks.eyeballs [--rounds N]

Not a timed test: a table for the record (the figures are noisy; the point is 0.25 s
against a connect timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import time
from typing import TYPE_CHECKING, Any

import aiohttp
import httpx
import uvloop
from aiohttp.abc import AbstractResolver, ResolveResult

import bindpool
import bindpool.aiohttp
import bindpool.httpx

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

NAME = "dead-first.test"
DEAD, LIVE, SOURCE = "127.0.0.3", "127.0.0.1", "127.0.0.2"
TOTAL = 10.0  # seconds: the bound on one request, far above any race
LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


class Resolver(AbstractResolver):
    """aiohttp's view of the name: [dead, live], at the port asked for."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host=ip, port=port, family=socket.AF_INET, proto=0, flags=0
            )
            for ip in (DEAD, LIVE)
        ]

    async def close(self) -> None:
        pass


def patch_getaddrinfo(loop: asyncio.AbstractEventLoop) -> None:
    """The loop's getaddrinfo answers for NAME (anyio and the pool both ask it)."""
    original = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in (NAME, NAME.encode()):  # anyio asks with the IDNA-encoded bytes
            return await original(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (ip, int(port)))
            for ip in (DEAD, LIVE)
        ]

    loop.getaddrinfo = getaddrinfo  # type: ignore[method-assign]


async def serve() -> tuple[asyncio.Server, socket.socket, socket.socket]:
    """The live HTTP server, and the dead listener (plus its queue filler) at its port."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, LIVE, 0)
    port = server.sockets[0].getsockname()[1]
    dead = socket.socket()
    dead.bind((DEAD, port))
    dead.listen(0)
    filler = socket.create_connection((DEAD, port))  # the queue's one place
    return server, dead, filler


async def first_byte_aiohttp(url: str, pool: bindpool.Pool | None) -> float:
    if pool is None:
        connector = aiohttp.TCPConnector(resolver=Resolver(), force_close=True)
    else:
        connector = bindpool.aiohttp.TCPConnector(pool, resolver=Resolver(), force_close=True)
    async with aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=TOTAL)
    ) as session:
        start = time.perf_counter()
        async with session.get(url) as response:
            await response.content.readexactly(1)
            return time.perf_counter() - start


async def first_byte_httpx(url: str, pool: bindpool.Pool | None) -> float:
    transport = None if pool is None else bindpool.httpx.AsyncHTTPTransport(pool)
    async with httpx.AsyncClient(transport=transport, timeout=TOTAL) as client:
        start = time.perf_counter()
        async with client.stream("GET", url) as response:
            async for _ in response.aiter_raw():
                return time.perf_counter() - start
    raise RuntimeError("no body")


CLIENTS: dict[str, Callable[[str, bindpool.Pool | None], Awaitable[float]]] = {
    "aiohttp": first_byte_aiohttp,
    "httpx": first_byte_httpx,
}


async def measure(rounds: int) -> dict[tuple[str, str], list[str]]:
    patch_getaddrinfo(asyncio.get_running_loop())
    server, dead, filler = await serve()
    url = f"http://{NAME}:{server.sockets[0].getsockname()[1]}/"
    figures: dict[tuple[str, str], list[str]] = {}
    try:
        async with bindpool.Pool([SOURCE], ports=range(20000, 20200)) as pool:
            for library, client in CLIENTS.items():
                for side, used in (("stock", None), ("bindpool", pool)):
                    times = []
                    for _ in range(rounds):
                        try:
                            times.append(f"{await client(url, used):.3f} s")
                        except Exception as exc:  # reported, not hidden: it is the figure
                            times.append(type(exc).__name__)
                    figures[(library, side)] = times
    finally:
        filler.close()
        dead.close()
        server.close()
        await server.wait_closed()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="requests per cell")
    rounds = parser.parse_args().rounds
    rows: dict[tuple[str, str], dict[str, list[str]]] = {}
    for loop, factory in LOOPS.items():
        with asyncio.Runner(loop_factory=factory) as runner:
            for key, times in runner.run(measure(rounds)).items():
                rows.setdefault(key, {})[loop] = times
    print(f"time to first byte, {NAME} -> [{DEAD} (SYNs dropped), {LIVE}], {rounds} rounds")
    print(f"| client | {' | '.join(LOOPS)} |")
    print(f"|---|{'---|' * len(LOOPS)}")
    for (library, side), by_loop in rows.items():
        cells = " | ".join(", ".join(by_loop[loop]) for loop in LOOPS)
        print(f"| {side} {library} | {cells} |")


if __name__ == "__main__":
    main()
