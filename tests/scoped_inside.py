"""Run inside a fresh network namespace by tests/test_scoped.py (root only).

Gives lo a link-local address (fe80::1), listens on it, and connects to "fe80::1%lo"
through every call of the pool, on both loops, raced and not. A link-local destination
needs its scope id: without it connect() says EINVAL. Prints, as JSON, what each call
connected to (or the error), and on uvloop whether create_connection's transport came from
the `sock=` path (the caller's protocol itself) rather than the native path (a wrapper).
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
from typing import Any

import uvloop

import bindpool


class Mine(asyncio.Protocol):
    """The caller's protocol: the transport shows it unless the native path wrapped it."""


LOOPS = {"asyncio": asyncio.new_event_loop, "uvloop": uvloop.new_event_loop}


async def calls(port: int) -> dict[str, Any]:
    results: dict[str, Any] = {}
    host = "fe80::1%lo"
    async with bindpool.Pool(["::1"], ports=range(20000, 20100)) as pool:
        for delay in (None, 0.05):
            try:
                sock = await pool.connect(host, port, happy_eyeballs_delay=delay)
                results[f"connect {delay}"] = list(sock.getpeername())
                sock.close()
            except OSError as exc:
                results[f"connect {delay}"] = str(exc)
            try:
                _, writer = await pool.open_connection(host, port, happy_eyeballs_delay=delay)
                results[f"open_connection {delay}"] = list(writer.get_extra_info("peername"))
                writer.close()
                await writer.wait_closed()
            except OSError as exc:
                results[f"open_connection {delay}"] = str(exc)
            try:
                transport, protocol = await pool.create_connection(
                    Mine, host, port, happy_eyeballs_delay=delay
                )
                results[f"create_connection {delay}"] = list(transport.get_extra_info("peername"))
                results[f"handed over {delay}"] = transport.get_protocol() is protocol
                transport.close()
            except OSError as exc:
                results[f"create_connection {delay}"] = str(exc)
        for _ in range(100):  # the transports close their sockets a few iterations later
            if pool.statistics().in_use == 0:
                break
            await asyncio.sleep(0.01)
        results["in_use"] = pool.statistics().in_use
    return results


def main() -> None:
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "-6", "addr", "add", "fe80::1/64", "dev", "lo", "nodad"], check=True)
    scope = socket.if_nametoindex("lo")
    with socket.socket(socket.AF_INET6) as listener:
        listener.bind(("fe80::1", 0, 0, scope))
        listener.listen(64)
        port = listener.getsockname()[1]
        results = {}
        for name, factory in LOOPS.items():
            with asyncio.Runner(loop_factory=factory) as runner:
                results[name] = runner.run(calls(port))
    print(json.dumps({"port": port, "scope": scope, "results": results}))


if __name__ == "__main__":
    main()
