"""Prometheus metrics: a `Collector` that reads `Pool.statistics()` at every scrape.

    async def main() -> None:
        pool = bindpool.Pool(["192.0.2.7"])
        bindpool.prometheus.Collector(pool)  # in the coroutine that uses the pool
        prometheus_client.start_http_server(9100)

Theory of operation
-------------------
- A custom collector, as prometheus_client describes them: nothing is kept between scrapes.
  Each `collect()` takes one `statistics()` snapshot and turns it into metric families, so
  the figures of one scrape are of one instant, and a source added or removed since the last
  scrape appears or vanishes with it (Prometheus marks a vanished series stale).
- `describe()` names the families without reading the pool: registering costs no snapshot,
  and a second collector with the same prefix in one registry is refused by prometheus_client
  itself (its "Duplicated timeseries" `ValueError`). Every family is described, even those
  that have no sample yet.
- Threads. A pool is not thread-safe (`_table.py`: one pool, one thread), and `statistics()`
  writes as well as reads: it first expires whatever rest is over. prometheus_client's
  `start_http_server` scrapes in a thread of its own. So the collector notes the thread and
  the running loop it is made in. A scrape in that thread reads the pool at once; a scrape
  from any other thread has the loop read it (`call_soon_threadsafe`) and waits for the
  snapshot at most `_LOOP_TIMEOUT` (5) seconds. A loop stuck longer fails the scrape with
  `TimeoutError` (Prometheus then records a failed scrape, `up == 0`, rather than figures
  read while the loop was changing them). A collector made where no loop runs has no loop
  to ask, so a scrape from another thread fails with `RuntimeError` saying where to make it.
"""

from __future__ import annotations

try:
    from prometheus_client import REGISTRY
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import Collector as _Collector
except ImportError as exc:
    raise ImportError(
        "bindpool.prometheus needs prometheus_client >= 0.20: pip install 'bindpool[prometheus]'"
    ) from exc

import asyncio
import concurrent.futures
import re
import threading
from typing import TYPE_CHECKING, NamedTuple

from bindpool._errors import ConfigurationError
from bindpool._pool import Pool

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

    from bindpool._types import PoolStatistics, SourceStatistics

__all__ = ["Collector"]

_LOOP_TIMEOUT = 5.0  # seconds a scrape from another thread waits for the pool's loop

# A metric name is [a-zA-Z_:][a-zA-Z0-9_:]*; colons are for recording rules, not exporters,
# and names starting with "__" are Prometheus' own (prometheus.io, "Metric names and labels").
_PREFIX = re.compile(r"(?!__)[A-Za-z_][A-Za-z0-9_]*")


def _source_up(figures: SourceStatistics) -> int:
    """1 while a source is "up"; 0 while it is "down" or "draining": new connections avoid it."""
    return 1 if figures.state == "up" else 0


class _PerSource(NamedTuple):
    name: str
    help: str
    value: Callable[[SourceStatistics], int]


# The contract's three gauges first, then the rest of `SourceStatistics`, then `source_up`.
_GAUGES = (
    _PerSource("in_use", "Live leases (connections open or being opened).", lambda s: s.in_use),
    _PerSource(
        "footprint",
        "Distinct ports bound by live leases: what the host's automatic port pick loses.",
        lambda s: s.footprint,
    ),
    _PerSource("cooling", "Released (port, destination) pairs still resting.", lambda s: s.cooling),
    _PerSource(
        "held",
        "(port, destination) pairs resting after the kernel said another socket has them.",
        lambda s: s.held,
    ),
    _PerSource(
        "closing",
        "(port, destination) pairs of the pool's own, refused while still closing.",
        lambda s: s.closing,
    ),
    _PerSource("blocked", "Ports unusable for a while (EADDRINUSE at bind).", lambda s: s.blocked),
    _PerSource("ports", "Ports this source may use (its range, or its shard).", lambda s: s.ports),
    _PerSource(
        "destinations", "Destinations this source keeps any state for.", lambda s: s.destinations
    ),
    _PerSource(
        "source_up", "1 while the source is up; 0 while it is down or draining.", _source_up
    ),
)


class _Counter(NamedTuple):
    name: str
    help: str
    value: Callable[[PoolStatistics], int]


_COUNTERS = (
    _Counter("connects", "Connections opened.", lambda p: p.connects),
    _Counter(
        "retries",
        "Attempts that met EADDRINUSE or EADDRNOTAVAIL and moved on to another port.",
        lambda p: p.retries,
    ),
    _Counter("exhausted", "PortsExhausted errors raised.", lambda p: p.exhausted),
)


class Collector(_Collector):
    """Exposes a pool's `statistics()` to Prometheus, read afresh at every scrape.

    Gauges, one sample per source IP (label `source`): `<prefix>_in_use`,
    `<prefix>_footprint`, `<prefix>_cooling`, `<prefix>_held`, `<prefix>_closing`,
    `<prefix>_blocked`, `<prefix>_ports`, `<prefix>_destinations` (the fields of
    `SourceStatistics`), and `<prefix>_source_up`: 1 while the source is "up", 0 while it is
    "down" (its address is not on this host) and also while it is "draining" (being removed:
    it takes no new connections, though its live ones still count in `<prefix>_in_use`).
    Counters for the whole pool: `<prefix>_connects_total`, `<prefix>_retries_total`,
    `<prefix>_exhausted_total`. A source added or removed shows up or disappears at the next
    scrape.

    Make it in the thread (better: the coroutine) that uses the pool. A scrape from another
    thread, such as `prometheus_client.start_http_server`'s, then reads the pool on that
    thread's running loop, since a pool is not thread-safe; it fails with `TimeoutError` if
    the loop does not get to it within 5 seconds, and with `RuntimeError` if no loop was
    running where the collector was made.

    Args:
        pool: the pool to report on.
        registry: where to register; None: prometheus_client's default `REGISTRY`.
        prefix: the start of every metric name: letters, digits and underscores, not
            starting with a digit or "__". Each pool in one registry needs its own.

    Raises:
        ConfigurationError: `pool` is not a `bindpool.Pool`, or `prefix` is not a valid
            start of a metric name.
        ValueError: the registry already has these names (prometheus_client's own
            "Duplicated timeseries" error): another collector with this prefix.
    """

    def __init__(
        self,
        pool: Pool,
        *,
        registry: CollectorRegistry | None = None,
        prefix: str = "bindpool",
    ) -> None:
        if not isinstance(pool, Pool):
            raise ConfigurationError(f"pool must be a bindpool.Pool, not {pool!r}")
        if not isinstance(prefix, str) or _PREFIX.fullmatch(prefix) is None:
            raise ConfigurationError(
                f"prefix must start a Prometheus metric name: letters, digits and "
                f"underscores, not starting with a digit or '__'; got {prefix!r}"
            )
        self._pool = pool
        self._prefix = prefix
        self._thread = threading.get_ident()
        try:
            self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        (REGISTRY if registry is None else registry).register(self)

    def describe(self) -> Iterator[Metric]:
        """The metric families, without samples: their names, for the registry."""
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        """The metric families of one `statistics()` snapshot, taken now."""
        return self._families(self._snapshot())

    def _families(self, figures: PoolStatistics | None) -> Iterator[Metric]:
        sources = figures.sources if figures is not None else {}
        for gauge in _GAUGES:
            family = GaugeMetricFamily(
                f"{self._prefix}_{gauge.name}", gauge.help, labels=["source"]
            )
            for address, source in sources.items():
                family.add_metric([address], gauge.value(source))
            yield family
        for counter in _COUNTERS:
            value = counter.value(figures) if figures is not None else None
            yield CounterMetricFamily(f"{self._prefix}_{counter.name}", counter.help, value)

    def _snapshot(self) -> PoolStatistics:
        """`pool.statistics()`, read in the pool's thread."""
        if threading.get_ident() == self._thread:
            return self._pool.statistics()
        loop = self._loop
        if loop is None:
            raise RuntimeError(
                "this bindpool.prometheus.Collector was made where no event loop was running, "
                "so a scrape from another thread cannot read the pool safely (a pool is not "
                "thread-safe): make the Collector in the coroutine that uses the pool"
            )
        snapshot: concurrent.futures.Future[PoolStatistics] = concurrent.futures.Future()

        def read() -> None:
            if snapshot.set_running_or_notify_cancel():  # False: the scrape gave up already
                try:
                    snapshot.set_result(self._pool.statistics())
                except Exception as exc:
                    snapshot.set_exception(exc)

        loop.call_soon_threadsafe(read)  # RuntimeError if the loop is closed
        try:
            return snapshot.result(timeout=_LOOP_TIMEOUT)
        except TimeoutError:
            snapshot.cancel()
            raise TimeoutError(
                f"the pool's event loop did not read its statistics within {_LOOP_TIMEOUT} s"
            ) from None

    def __repr__(self) -> str:
        return f"<bindpool.prometheus.Collector prefix={self._prefix!r} pool={self._pool!r}>"
