"""Another program on the host, for the clash tests: `python -m tests.outsider MODE ...`.

Holds sockets on the given source ports until its stdin closes, after printing "ready":
- `tuples`: binds each port with SO_REUSEADDR and connects it to the destination (4-tuples
  held elsewhere: a pool's bind succeeds, its connect() says EADDRNOTAVAIL);
- `bound`: binds each port without SO_REUSEADDR and connects it (the pool's bind() says
  EADDRINUSE);
- `listen`: listens on each port (bind() says EADDRINUSE).
"""

from __future__ import annotations

import argparse
import socket
import sys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["tuples", "bound", "listen"])
    parser.add_argument("--source", required=True)
    parser.add_argument("--destination", default="")
    parser.add_argument("ports", type=int, nargs="+")
    args = parser.parse_args()
    held = []
    for port in args.ports:
        sock = socket.socket()
        held.append(sock)
        if args.mode == "tuples":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((args.source, port))
        if args.mode == "listen":
            sock.listen(8)
        else:
            host, _, number = args.destination.rpartition(":")
            sock.connect((host, int(number)))
    print("ready", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    for sock in held:
        sock.close()


if __name__ == "__main__":
    main()
