"""Several processes sharing one source IP and a small range: with `shard=(index, count)`
each takes its own slice, and together they fill the range without a single clash."""

from __future__ import annotations

from typing import Literal

import pytest

from benchmarks.sharding import run_workers
from tests.conftest import PoolMaker

WORKERS = 4
SIZE = 40


@pytest.mark.parametrize("strategy", ["table", "kernel"])
def test_four_sharded_processes_fill_the_range_without_clashing(
    strategy: Literal["table", "kernel"],
) -> None:
    ports = PoolMaker(strategy).block(SIZE)
    reports = run_workers(ports, sharded=True, strategy=strategy, source="127.0.0.61")
    slices = [set(report["ports"]) for report in reports]
    assert [report["connects"] for report in reports] == [SIZE // WORKERS] * WORKERS
    assert [report["retries"] for report in reports] == [0] * WORKERS
    assert [report["failures"] for report in reports] == [0] * WORKERS
    assert set().union(*slices) == set(ports)  # together: the whole range
    assert sum(map(len, slices)) == SIZE  # and each port in one slice only


def test_unsharded_tables_race_but_never_share_a_tuple() -> None:
    """Without shards the tables race for the same ports; the kernel refuses each loser's
    4-tuple (a retry, counted: benchmarks/sharding.py measures how many), so no 4-tuple is
    ever used twice."""
    ports = PoolMaker("table").block(SIZE)
    reports = run_workers(ports, sharded=False, source="127.0.0.62")
    used = [port for report in reports for port in report["ports"]]
    assert len(used) == len(set(used))  # one destination: each port once across processes
    assert sum(report["connects"] for report in reports) <= SIZE
    assert all(report["failures"] == 0 for report in reports)
