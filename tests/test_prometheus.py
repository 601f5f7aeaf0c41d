"""`bindpool.prometheus.Collector`: each scrape says what `statistics()` says, under the
contract's names (PRODUCT.md, "Metrics"), read safely from prometheus_client's threads.

Every test registers into a fresh `CollectorRegistry` (the default one only where that is
the point) and reads it back as prometheus_client does: `registry.collect()` and
`generate_latest()`. A real "down" source needs an address to leave the host, so that case
runs in a private network namespace (tests/prometheus_inside.py; root only).
"""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import bindpool
import bindpool.prometheus
from bindpool.prometheus import Collector, _source_up
from tests.conftest import SOURCE, PoolMaker
from tests.netns import inside

OTHER = "127.0.0.3"

Scraped = dict[tuple[str, str | None], float]


def scraped(registry: CollectorRegistry) -> Scraped:
    """Every sample of one scrape: (sample name, its `source` label or None) -> value."""
    return {
        (sample.name, sample.labels.get("source")): sample.value
        for family in registry.collect()
        for sample in family.samples
    }


def expected(stats: bindpool.PoolStatistics, prefix: str = "bindpool") -> Scraped:
    """What the contract says a scrape holds for `stats`; every source here is up."""
    figures: Scraped = {
        (f"{prefix}_connects_total", None): stats.connects,
        (f"{prefix}_retries_total", None): stats.retries,
        (f"{prefix}_exhausted_total", None): stats.exhausted,
    }
    for address, source in stats.sources.items():
        assert source.state == "up"
        figures |= {
            (f"{prefix}_in_use", address): source.in_use,
            (f"{prefix}_footprint", address): source.footprint,
            (f"{prefix}_cooling", address): source.cooling,
            (f"{prefix}_held", address): source.held,
            (f"{prefix}_closing", address): source.closing,
            (f"{prefix}_blocked", address): source.blocked,
            (f"{prefix}_ports", address): source.ports,
            (f"{prefix}_destinations", address): source.destinations,
            (f"{prefix}_source_up", address): 1,
        }
    return figures


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def outsiders() -> Iterator[list[socket.socket]]:
    """Sockets standing for other programs (as in test_clash.py); closed after the test."""
    held: list[socket.socket] = []
    yield held
    for sock in held:
        sock.close()


# -- the figures -------------------------------------------------------------------------------


async def test_each_metric_is_the_statistics_figure(
    make_pool: PoolMaker, echo_server: tuple[str, int], registry: CollectorRegistry
) -> None:
    pool = make_pool(8)
    Collector(pool, registry=registry)
    streams = [await pool.open_connection(*echo_server, timeout=5) for _ in range(3)]
    for reader, writer in streams:
        writer.write(b"ping")
        assert await reader.readexactly(4) == b"ping"
    _, writer = streams.pop()
    writer.close()
    await writer.wait_closed()

    values = scraped(registry)
    assert values == expected(pool.statistics())
    assert values[("bindpool_in_use", SOURCE)] == 2
    assert values[("bindpool_footprint", SOURCE)] == 2  # one destination: a port each
    assert values[("bindpool_cooling", SOURCE)] == (1 if make_pool.strategy == "table" else 0)
    assert values[("bindpool_ports", SOURCE)] == 8
    assert values[("bindpool_connects_total", None)] == 3
    for _, writer in streams:
        writer.close()
        await writer.wait_closed()
    assert scraped(registry)[("bindpool_in_use", SOURCE)] == 0


async def test_two_sources_each_have_their_samples(
    make_pool: PoolMaker,
    listeners: Callable[[int], list[tuple[str, int]]],
    registry: CollectorRegistry,
) -> None:
    pool = make_pool(4, sources=(SOURCE, OTHER))
    Collector(pool, registry=registry)
    (destination,) = listeners(1)
    socks = [await pool.connect(*destination, timeout=5) for _ in range(6)]
    values = scraped(registry)
    assert values == expected(pool.statistics())
    in_use = {label: v for (name, label), v in values.items() if name == "bindpool_in_use"}
    assert set(in_use) == {SOURCE, OTHER}
    assert sum(in_use.values()) == 6
    assert min(in_use.values()) >= 2  # 4 ports a source: 6 connections need both
    for sock in socks:
        sock.close()


async def test_exhaustion_is_counted(
    make_pool: PoolMaker,
    listeners: Callable[[int], list[tuple[str, int]]],
    registry: CollectorRegistry,
) -> None:
    pool = make_pool(2)
    Collector(pool, registry=registry)
    (destination,) = listeners(1)
    socks = [await pool.connect(*destination, timeout=5) for _ in range(2)]
    with pytest.raises(bindpool.PortsExhausted):
        await pool.connect(*destination, timeout=5)
    values = scraped(registry)
    assert values == expected(pool.statistics())
    assert values[("bindpool_exhausted_total", None)] == 1
    assert values[("bindpool_connects_total", None)] == 2
    assert values[("bindpool_in_use", SOURCE)] == 2
    for sock in socks:
        sock.close()


async def test_retries_are_counted(
    port_block: Callable[[int], range],
    listeners: Callable[[int], list[tuple[str, int]]],
    outsiders: list[socket.socket],
    registry: CollectorRegistry,
) -> None:
    """Half the 4-tuples are held by other sockets: each costs the pool one retry, then rests
    as "held" (strategy "table": the kernel strategy asks the kernel, which never clashes)."""
    ports = port_block(4)
    (destination,) = listeners(1)
    for port in ports[::2]:
        outsider = socket.socket()
        outsiders.append(outsider)
        outsider.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        outsider.bind((SOURCE, port))
        outsider.connect(destination)
    pool = bindpool.Pool([SOURCE], ports=ports)
    Collector(pool, registry=registry)
    socks: list[bindpool.PooledSocket] = []
    with pytest.raises(bindpool.PortsExhausted):  # noqa: PT012  # fill until it comes
        while len(socks) <= len(ports):  # bounded: one more than there are ports
            socks.append(await pool.connect(*destination, timeout=5))
    values = scraped(registry)
    assert values == expected(pool.statistics())
    assert len(socks) == 2
    assert values[("bindpool_retries_total", None)] == 2
    assert values[("bindpool_held", SOURCE)] == 2
    assert values[("bindpool_exhausted_total", None)] == 1
    assert values[("bindpool_connects_total", None)] == 2
    for sock in socks:
        sock.close()


def test_one_snapshot_per_scrape_and_none_to_register(
    make_pool: PoolMaker, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All the figures of a scrape come from one `statistics()` call: one instant."""
    pool = make_pool(4)
    calls: list[bindpool.PoolStatistics] = []
    real = pool.statistics

    def counting() -> bindpool.PoolStatistics:
        calls.append(real())
        return calls[-1]

    monkeypatch.setattr(pool, "statistics", counting)
    Collector(pool, registry=registry)
    assert calls == []
    generate_latest(registry)
    generate_latest(registry)
    assert len(calls) == 2


def test_sources_follow_statistics_from_scrape_to_scrape(
    make_pool: PoolMaker, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing is kept between scrapes: a source that leaves `statistics()` (removed) leaves
    the next scrape, and comes back with it (added). Stands in for add_source/remove_source."""
    pool = make_pool(4, sources=(SOURCE, OTHER))
    Collector(pool, registry=registry)
    real = pool.statistics
    assert {label for _, label in scraped(registry)} == {SOURCE, OTHER, None}

    def without_other() -> bindpool.PoolStatistics:
        stats = real()
        return dataclasses.replace(stats, sources={SOURCE: stats.sources[SOURCE]})

    monkeypatch.setattr(pool, "statistics", without_other)
    assert {label for _, label in scraped(registry)} == {SOURCE, None}
    monkeypatch.setattr(pool, "statistics", real)
    assert {label for _, label in scraped(registry)} == {SOURCE, OTHER, None}


# -- source_up -------------------------------------------------------------------------------


async def test_an_up_source_reports_1(make_pool: PoolMaker, registry: CollectorRegistry) -> None:
    pool = make_pool(4, sources=(SOURCE, OTHER))
    Collector(pool, registry=registry)
    assert {s.state for s in pool.statistics().sources.values()} == {"up"}
    assert registry.get_sample_value("bindpool_source_up", {"source": SOURCE}) == 1
    assert registry.get_sample_value("bindpool_source_up", {"source": OTHER}) == 1


@pytest.mark.parametrize(("state", "up"), [("up", 1), ("down", 0), ("draining", 0)])
def test_source_up_follows_the_state(state: Any, up: int) -> None:
    figures = bindpool.SourceStatistics(
        ports=8, in_use=0, footprint=0, cooling=0, held=0, blocked=0, destinations=0, state=state
    )
    assert _source_up(figures) == up


@pytest.mark.namespace
def test_a_source_down_reports_0_and_1_again_when_back() -> None:
    """A real "down": the source's address deleted inside a private network namespace."""
    results = inside("tests.prometheus_inside", why="addresses come and go")
    assert set(results) == {"table", "kernel"}
    for strategy, phases in results.items():
        kept, gone = "127.0.0.2", "127.0.0.3"  # tests.source_health_inside.py's KEPT and GONE
        assert phases["before"] == [{kept: 1, gone: 1}, "up"], strategy
        assert phases["down"] == [{kept: 1, gone: 0}, "down"], strategy
        assert phases["after"] == [{kept: 1, gone: 1}, "up"], strategy


# -- names, registries, arguments --------------------------------------------------------------


async def test_the_text_exposition_has_the_contract_names(
    make_pool: PoolMaker, registry: CollectorRegistry
) -> None:
    pool = make_pool(4)
    Collector(pool, registry=registry)
    Collector(pool, registry=registry, prefix="edge")
    text = generate_latest(registry).decode()
    for prefix in ("bindpool", "edge"):
        for gauge in ("in_use", "footprint", "cooling", "source_up"):
            assert f"# TYPE {prefix}_{gauge} gauge" in text
            assert f'{prefix}_{gauge}{{source="{SOURCE}"}} ' in text
        for counter in ("connects", "retries", "exhausted"):
            assert f"# TYPE {prefix}_{counter}_total counter" in text
            assert f"\n{prefix}_{counter}_total 0.0\n" in text
        assert f'{prefix}_ports{{source="{SOURCE}"}} 4.0' in text


def test_registering_a_prefix_twice_is_prometheus_clients_error(
    make_pool: PoolMaker, registry: CollectorRegistry
) -> None:
    pool = make_pool(4)
    Collector(pool, registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries") as info:
        Collector(pool, registry=registry)
    assert not isinstance(info.value, bindpool.BindPoolError)
    Collector(pool, registry=registry, prefix="other")  # another prefix is another metric
    Collector(pool, registry=CollectorRegistry())  # and another registry has its own names


def test_the_default_registry(make_pool: PoolMaker) -> None:
    pool = make_pool(4)
    collector = Collector(pool)
    try:
        assert REGISTRY.get_sample_value("bindpool_ports", {"source": SOURCE}) == 4
    finally:
        REGISTRY.unregister(collector)


@pytest.mark.parametrize("prefix", ["", "9lives", "a-b", "a:b", "__meta", "bind pool", "ü", 7])
def test_a_bad_prefix_is_a_configuration_error(make_pool: PoolMaker, prefix: Any) -> None:
    pool = make_pool(4)
    registry = CollectorRegistry()
    with pytest.raises(bindpool.ConfigurationError, match="prefix") as info:
        Collector(pool, registry=registry, prefix=prefix)
    assert repr(prefix) in str(info.value)
    assert list(registry.collect()) == []  # nothing registered


@pytest.mark.parametrize("prefix", ["x", "_x", "edge_2", "Bind_Pool"])
def test_good_prefixes(make_pool: PoolMaker, registry: CollectorRegistry, prefix: str) -> None:
    Collector(make_pool(4), registry=registry, prefix=prefix)
    assert registry.get_sample_value(f"{prefix}_ports", {"source": SOURCE}) == 4


def test_the_pool_must_be_a_pool(registry: CollectorRegistry) -> None:
    with pytest.raises(bindpool.ConfigurationError, match=r"bindpool\.Pool"):
        Collector(object(), registry=registry)  # type: ignore[arg-type]


def test_import_names_the_extra() -> None:
    code = """
import sys
sys.modules["prometheus_client"] = None
try:
    import bindpool.prometheus
except ImportError as exc:
    print(exc)
"""
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        cwd=Path(__file__).parent.parent,
    )
    assert result.stdout.strip() == (
        "bindpool.prometheus needs prometheus_client >= 0.20: pip install 'bindpool[prometheus]'"
    )


# -- threads ---------------------------------------------------------------------------------


async def test_a_scrape_from_another_thread_reads_the_pool_on_its_loop(
    make_pool: PoolMaker, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As `start_http_server` scrapes: in its own thread, while the loop runs."""
    pool = make_pool(4)
    Collector(pool, registry=registry)
    readers: list[int] = []
    real = pool.statistics

    def recording() -> bindpool.PoolStatistics:
        readers.append(threading.get_ident())
        return real()

    monkeypatch.setattr(pool, "statistics", recording)
    text = (await asyncio.to_thread(generate_latest, registry)).decode()
    assert readers == [threading.get_ident()]  # this, the loop's thread
    assert f'bindpool_ports{{source="{SOURCE}"}} 4.0' in text


async def test_a_scrape_waits_for_a_stuck_loop_a_bounded_time(
    make_pool: PoolMaker, registry: CollectorRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bindpool.prometheus, "_LOOP_TIMEOUT", 0.05)
    Collector(make_pool(4), registry=registry)
    failures: list[BaseException] = []
    finished = threading.Event()

    def scrape() -> None:
        try:
            generate_latest(registry)
        except BaseException as exc:
            failures.append(exc)
        finally:
            finished.set()

    scraper = threading.Thread(target=scrape)
    scraper.start()
    # The loop is stuck right here, so it cannot read for the scrape until that gives up.
    assert finished.wait(timeout=30)
    scraper.join(timeout=30)
    assert len(failures) == 1
    assert isinstance(failures[0], TimeoutError)
    assert "did not read its statistics within 0.05 s" in str(failures[0])
    await asyncio.sleep(0)  # the read the scrape gave up on runs now, and does nothing
    assert registry.get_sample_value("bindpool_ports", {"source": SOURCE}) == 4


def test_made_without_a_loop_it_refuses_other_threads(
    make_pool: PoolMaker, registry: CollectorRegistry
) -> None:
    Collector(make_pool(4), registry=registry)
    assert registry.get_sample_value("bindpool_ports", {"source": SOURCE}) == 4  # its thread
    with ThreadPoolExecutor(1) as executor:
        scrape = executor.submit(generate_latest, registry)
        with pytest.raises(RuntimeError, match="make the Collector in the coroutine"):
            scrape.result(timeout=30)
