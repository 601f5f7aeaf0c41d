"""Run inside a fresh network namespace by tests/test_prometheus.py (root only).

A pool of two sources with a `bindpool.prometheus.Collector`; one source's address is
deleted (`ip addr del`, as in tests.source_health_inside.py) until the pool marks it down, then
restored until it is up again. For each strategy it prints, as JSON, `<prefix>_source_up`
per source as a scrape reads it: before, while down, and after, with the state
`statistics()` gave at each point.
Usage: python -m tests.prometheus_inside
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import prometheus_client

import bindpool
import bindpool.prometheus
from tests.source_health_inside import GONE, KEPT, ip, loopback_of_single_addresses, once, serve

SOURCES = (KEPT, GONE)


def scrape(registry: prometheus_client.CollectorRegistry) -> dict[str, float | None]:
    return {
        source: registry.get_sample_value("bindpool_source_up", {"source": source})
        for source in SOURCES
    }


async def scenario(strategy: str, ports: range) -> dict[str, object]:
    pool = bindpool.Pool(list(SOURCES), ports=ports, strategy=strategy)  # type: ignore[arg-type]
    registry = prometheus_client.CollectorRegistry()
    bindpool.prometheus.Collector(pool, registry=registry)
    await once(pool, "connect")
    before = scrape(registry), pool.statistics().sources[GONE].state

    ip("addr", "del", f"{GONE}/32", "dev", "lo")
    for _ in range(50):  # bounded: the pool tries each source within a few calls
        await once(pool, "connect")
        if pool.statistics().sources[GONE].state == "down":
            break
    down = scrape(registry), pool.statistics().sources[GONE].state

    ip("addr", "add", f"{GONE}/32", "dev", "lo")
    restored = time.monotonic()
    while time.monotonic() - restored < 5:  # bounded: down sources are retried every second
        await once(pool, "connect")
        if pool.statistics().sources[GONE].state == "up":
            break
        await asyncio.sleep(0.02)
    after = scrape(registry), pool.statistics().sources[GONE].state
    await asyncio.sleep(0.2)  # let closing transports finish
    return {"before": before, "down": down, "after": after}


def main() -> None:
    logging.getLogger("bindpool").setLevel(logging.ERROR)  # its WARNING is not the subject
    loopback_of_single_addresses()
    listener = serve()
    blocks = {"table": range(20000, 20200), "kernel": range(40000, 40200)}
    results = {
        strategy: asyncio.run(scenario(strategy, ports)) for strategy, ports in blocks.items()
    }
    listener.close()
    print(json.dumps(results))


if __name__ == "__main__":
    main()
