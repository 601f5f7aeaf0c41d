"""The benchmarks at tiny sizes: each runs, its results are well formed, the report renders.

No timing is asserted: figures depend on the machine. What is asserted is the shape of each
results file, the counts a benchmark promises, and the Target logic every verdict rests on.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import _netns, _report, capacity, occupancy, run, sharding, soak, table, throughput
from benchmarks._common import Target, save

ROOT = Path(__file__).parent.parent


# -- Target ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("measured", "bound", "at_most", "holds"),
    [
        (1.0, 1.2, True, True),
        (1.2, 1.2, True, True),  # the bound itself holds
        (1.21, 1.2, True, False),
        (0.96, 0.95, False, True),
        (0.95, 0.95, False, True),
        (0.94, 0.95, False, False),
    ],
)
def test_target_holds_on_its_side_of_the_bound(
    measured: float, bound: float, at_most: bool, holds: bool
) -> None:
    target = Target("ratio", measured, bound, at_most)
    assert target.holds is holds
    line = target.line()
    assert ("holds" in line) is holds
    assert ("MISSED" in line) is not holds
    assert ("<=" if at_most else ">=") in line
    assert f"{bound:g}" in line


def test_target_line_shows_figure_and_unit() -> None:
    line = Target("acquire+release", 2.5, 2.0, True, " us").line()
    assert line == "  [MISSED] acquire+release: 2.5 us (target <= 2 us)"


def test_target_round_trips_through_json_and_recomputes_its_verdict(tmp_path: Path) -> None:
    targets = [Target("a", 1.0, 2.0, True, " B"), Target("b", 0.5, 0.9, False)]
    path = save("roundtrip", {"x": 1}, targets, tmp_path)
    payload = json.loads(path.read_text())
    assert [item["holds"] for item in payload["targets"]] == [True, False]
    payload["targets"][1]["holds"] = True  # a file cannot overrule the figure
    assert _report.targets(payload) == targets
    assert not _report.targets(payload)[1].holds


# -- each benchmark, tiny --------------------------------------------------------------------


def _finite(value: float) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value >= 0


def _payload(name: str, data: dict[str, Any], targets: list[Target], where: Path) -> Any:
    return json.loads(save(name, data, targets, where).read_text())


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every benchmark once at its tiny size, in this process (no namespace), saved."""
    where = tmp_path_factory.mktemp("results")
    return {
        "capacity": _payload("capacity", *capacity.run("tiny", _netns.OPTION), where),
        "occupancy": _payload("occupancy", *occupancy.run("tiny", _netns.OPTION), where),
        "throughput": _payload("throughput", *throughput.run("tiny"), where),
        "table": _payload("table", *table.run("tiny"), where),
        "sharding": _payload("sharding", *sharding.run("tiny"), where),
        "soak": _payload("soak", *soak.run("tiny"), where),
    }


def test_every_results_file_is_well_formed(results: dict[str, Any]) -> None:
    for name, payload in results.items():
        assert payload["benchmark"] == name
        assert {"python", "kernel", "cpus", "when"} <= payload["machine"].keys()
        assert payload["targets"], name
        for item in payload["targets"]:
            assert item["holds"] == Target.from_json(item).holds
            assert _finite(item["measured"]), item


def test_capacity_counts_each_method(results: dict[str, Any]) -> None:
    data = results["capacity"]["data"]
    r, d = capacity.SIZES["tiny"].range, capacity.SIZES["tiny"].destinations
    assert data["mode"] == "option"
    assert list(data["methods"]) == [
        "bind(ip, 0)",
        "IP_BIND_ADDRESS_NO_PORT",
        "bindpool table",
        "bindpool kernel",
    ]
    for method, row in data["methods"].items():
        assert 0 < row["held"] <= r * d, method
        assert sum(row["per_destination"]) == row["held"]
        assert len(row["stopped_by"]) == d  # every destination ran until the method failed
        assert row["ratio"] == row["held"] / (r * d)
    # The wall itself: bind((ip, 0)) shares R ports among all destinations.
    assert data["methods"]["bind(ip, 0)"]["held"] <= r


def test_occupancy_times_every_level(results: dict[str, Any]) -> None:
    data = results["occupancy"]["data"]
    sizes = occupancy.SIZES["tiny"]
    assert data["levels"] == [0, 50, 90, 99]
    assert data["samples_per_level"] == sizes.rounds * sizes.samples
    assert "bindpool table" in data["methods"]
    assert "bindpool kernel" in data["methods"]
    for row in data["methods"].values():
        assert row["samples"] == sizes.rounds * sizes.samples
        assert len(row["median_us"]) == len(row["p99_us"]) == 4
        assert all(_finite(v) and v > 0 for v in row["median_us"] + row["p99_us"])
        assert row["median_ratio"] == row["median_us"][-1] / row["median_us"][0]


def test_throughput_compares_on_both_loops(results: dict[str, Any]) -> None:
    data = results["throughput"]["data"]
    for loop in ("asyncio", "uvloop"):
        row = data[loop]
        for method in ("plain", "bindpool", "bindpool_kernel"):
            assert _finite(row[method])
            assert row[method] > 0
        assert row["ratio"] == row["bindpool"] / row["plain"]
        assert row["kernel_ratio"] == row["bindpool_kernel"] / row["plain"]
        assert "local_addr" not in row  # never on the host: its TIME_WAIT hides ports
    assert data["uvloop"]["explicit_port_ratio"] == (
        data["uvloop"]["explicit_port"] / data["uvloop"]["plain"]
    )
    names = [t["name"] for t in results["throughput"]["targets"]]
    assert names == ["throughput bindpool/plain on asyncio", "throughput bindpool/plain on uvloop"]


def test_table_reports_speed_memory_footprint(results: dict[str, Any]) -> None:
    data = results["table"]["data"]
    assert set(data["acquire_release_us"]) == {"cooldown 0s", "cooldown 60s"}
    assert set(data["footprint"]) == {
        "build-up, no churn",
        "churn, cooldown 0",
        "churn, cooldown 60s (default)",
    }
    assert all(_finite(v) for v in data["memory_bytes"].values())


def test_report_and_plots_render(results: dict[str, Any], tmp_path: Path) -> None:
    info = {"size": "tiny", "seconds": 1.0, "durations": dict.fromkeys(results, 0.25)}
    written = run.write_docs(results, info | {"uvloop": "x", "load_average": 0.5}, tmp_path)
    page = (tmp_path / "benchmarks.md").read_text()
    for title in _report.TITLES.values():
        assert title in page
    drawn = [name for name in results if name in run.PLOTS]
    for name in drawn:
        assert f"(img/{name}.png)" in page
        assert (tmp_path / "img" / f"{name}.png").read_bytes().startswith(b"\x89PNG")
    assert len(written) == 1 + len(drawn)
    summary = run.summary(results, ["broken"], 1.0)
    assert "broken: FAILED" in summary
    assert summary.count("[") >= sum(len(p["targets"]) for p in results.values())


# -- the processes: runner and namespace -----------------------------------------------------


def test_runner_exits_zero_with_missed_targets_and_nonzero_on_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missed target is a report; a benchmark that fails is an error, reported as such."""
    monkeypatch.setattr(run, "BENCHMARKS", ("table", "no_such_benchmark"))
    assert run.main(["--size", "tiny", "--only", "table", "--results", str(tmp_path)]) == 0
    assert json.loads((tmp_path / "run.json").read_text())["failed"] == []

    assert run.main(["--size", "tiny", "--results", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "no_such_benchmark: FAILED" in out
    assert "== targets" in out  # the others are still reported
    assert json.loads((tmp_path / "run.json").read_text())["failed"] == ["no_such_benchmark"]
    assert not (tmp_path / "benchmarks.md").exists()  # tiny and quick runs leave docs alone


def _in_namespace(module: str, where: Path) -> dict[str, Any]:
    if not _netns.available():
        pytest.skip("needs root and unshare(1) to make a private network namespace")
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *("--size", "tiny"), "--results", where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    data: dict[str, Any] = json.loads((where / f"{module}.json").read_text())["data"]
    return data


@pytest.mark.namespace
def test_capacity_meets_the_wall_in_a_private_namespace(tmp_path: Path) -> None:
    data = _in_namespace("capacity", tmp_path)
    assert data["mode"] == "namespace"
    r = capacity.SIZES["tiny"].range
    assert data["methods"]["bind(ip, 0)"]["held"] == r  # the sysctl wall, really met
    assert "NO_PORT + IP_LOCAL_PORT_RANGE" in data["methods"]


@pytest.mark.namespace
def test_throughput_measures_local_addr_apart_in_a_namespace(tmp_path: Path) -> None:
    data = _in_namespace("throughput", tmp_path)
    assert data["network"].startswith("private network namespaces")
    for loop in ("asyncio", "uvloop"):
        row = data[loop]
        assert row["local_addr_ratio"] == row["local_addr"] / row["local_addr_plain"]
