"""The benchmarks at tiny sizes: each runs, its results are well formed, the report renders.

No timing is asserted: figures depend on the machine. What is asserted is the shape of each
results file, the counts a benchmark promises, and the Target logic every verdict rests on.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import (
    _netns,
    _plots,
    _report,
    capacity,
    instructions,
    occupancy,
    run,
    scale,
    sharding,
    soak,
    table,
    throughput,
    waiting,
)
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
    assert ("[PASS]" in line) is holds
    assert ("[MISS]" in line) is not holds
    assert ("<=" if at_most else ">=") in line
    assert f"{bound:g}" in line


def test_target_line_shows_figure_and_unit() -> None:
    line = Target("acquire+release", 2.5, 2.0, True, " us").line()
    assert line == "  [MISS] acquire+release: 2.5 us (target <= 2 us)"
    count = Target("connections held", 1_016_352, 1_000_000, False).line()
    assert count == "  [PASS] connections held: 1,016,352 (target >= 1,000,000)"


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
        "waiting": _payload("waiting", *waiting.run("tiny"), where),
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
    big = data["big"]  # the target's own measure: 0% and 99% of the big block, paired
    assert (big["range"], big["levels"]) == (sizes.big, [0, 99])
    assert (big["rounds"], big["samples"]) == (sizes.big_rounds, sizes.big_rounds * sizes.samples)
    assert len(big["ratios"]) == sizes.big_rounds
    assert all(_finite(v) and v > 0 for v in big["ratios"] + big["cpu_us"] + big["median_us"])
    assert big["median_ratio"] == statistics.median(big["ratios"])
    assert big["q1"] <= big["median_ratio"] <= big["q3"]
    (target,) = results["occupancy"]["targets"]
    assert target["measured"] == big["median_ratio"]
    assert (target["bound"], target["at_most"]) == (1.1, True)


def test_throughput_pairs_every_comparison_with_plain_and_its_floor(
    results: dict[str, Any],
) -> None:
    data = results["throughput"]["data"]
    sizes = throughput.SIZES["tiny"]
    assert data["rounds"] == sizes.rounds
    for loop in ("asyncio", "uvloop"):
        methods = data["methods"][loop]
        assert list(methods) == throughput.methods(loop)
        for row in methods.values():
            for figure in (row["cpu_us"], row["rate"]):
                assert 0 < figure["min"] <= figure["q1"] <= figure["median"]
                assert figure["median"] <= figure["q3"] <= figure["max"]
    comparisons = data["comparisons"]
    assert {"asyncio A/A control (plain ÷ plain)", "uvloop A/A control (plain ÷ plain)"} < set(
        comparisons
    )
    expected = {c.label: c for c in throughput.COMPARISONS}
    assert set(expected) < set(comparisons)
    for label, comparison in expected.items():
        row = comparisons[label]
        assert (row["bindpool"], row["floor"], row["bound"]) == (
            comparison.pooled,
            comparison.floor,
            comparison.bound,
        )
        # The median of per-round ratios lies within the ratios' own range.
        for key in ("plain_over_bindpool", "plain_over_floor", "floor_over_bindpool"):
            figure = row[key]
            assert 0 < figure["min"] <= figure["median"] <= figure["max"]
    names = [t["name"] for t in results["throughput"]["targets"]]
    assert sorted(names) == sorted(f"CPU per connection, plain ÷ bindpool: {c}" for c in expected)


def test_throughput_ratio_is_the_median_of_paired_rounds() -> None:
    plain, pooled = [10.0, 20.0, 30.0], [5.0, 40.0, 30.0]  # per-round ratios 2, 0.5, 1
    figure = throughput.paired(plain, pooled)
    assert (figure["median"], figure["min"], figure["max"]) == (1.0, 0.5, 2.0)
    assert figure["q1"] == 0.75
    assert figure["q3"] == 1.5


def test_throughput_rotates_the_order_each_round() -> None:
    names = throughput.methods("uvloop")
    assert names[:2] == ["plain", throughput.CONTROL]
    assert len(names) == len(set(names)) == 8


def test_table_reports_speed_memory_footprint(results: dict[str, Any]) -> None:
    data = results["table"]["data"]
    assert set(data["in_situ"]) == {"asyncio", "uvloop"}
    for row in data["in_situ"].values():
        assert _finite(row["raw_us_per_connection"])
        assert row["raw_us_per_connection"] > 0
        assert row["us_per_connection"] == pytest.approx(
            row["raw_us_per_connection"] - 2 * row["proxy_overhead_us_per_call"]
        )
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
    for name, title in _report.TITLES.items():
        assert (title in page) is (name in results), name  # scale runs in a namespace only
    assert page.index("## Headline: client CPU per connection") < page.index("## Targets")
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


def _in_namespace(module: str, where: Path, timeout: float = 60) -> dict[str, Any]:
    if not _netns.available():
        pytest.skip("needs root and unshare(1) to make a private network namespace")
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *("--size", "tiny"), "--results", where],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
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
def test_throughput_runs_in_a_fresh_namespace_per_loop(tmp_path: Path) -> None:
    data = _in_namespace("throughput", tmp_path)
    assert data["network"].startswith("a fresh private network namespace")
    assert set(data["methods"]) == {"asyncio", "uvloop"}


@pytest.mark.namespace
@pytest.mark.timeout(300)
def test_instructions_counts_every_method_and_compares_with_plain_and_the_floor(
    tmp_path: Path,
) -> None:
    """The tiny run under valgrind: every figure positive, every ratio there, the report."""
    if shutil.which("valgrind") is None:
        pytest.skip("needs valgrind (apt-get install valgrind) to count instructions")
    data = _in_namespace("instructions", tmp_path, timeout=240)
    sizes = instructions.SIZES["tiny"]
    assert data["network"].startswith("a fresh private network namespace")
    assert (data["counts"], data["repeats"]) == (list(sizes.counts), sizes.repeats)
    expected = instructions.comparisons(sizes)
    assert set(data["methods"]) == {c.loop for c in expected}
    for loop, methods in data["methods"].items():
        assert list(methods) == instructions.methods(loop, sizes)
        assert throughput.CONTROL not in methods
        for row in methods.values():
            assert len(row["repeats"]) == sizes.repeats
            assert all(figure > 0 for figure in row["repeats"])
            assert 0 < row["min"] <= row["median"] <= row["max"]
            assert all(len(row["refs"][run]) == sizes.repeats for run in ("small", "large"))
    assert list(data["comparisons"]) == [c.label for c in expected]
    for comparison in expected:
        row = data["comparisons"][comparison.label]
        assert (row["bindpool"], row["floor"]) == (comparison.pooled, comparison.floor)
        for key in ("plain_over_bindpool", "plain_over_floor", "floor_over_bindpool"):
            assert _finite(row[key])
            assert row[key] > 0
        measured = data["methods"][comparison.loop]
        assert row["bindpool_own"] == (
            measured[comparison.pooled]["median"] - measured[comparison.floor]["median"]
        )
    section = "\n".join(_report.SECTIONS["instructions"](data))
    assert "kernel out" in section
    assert len(_report.beside("instructions", data)) == len(expected)


def test_instructions_per_connection_is_the_difference_over_the_counts() -> None:
    stderr = "==7== \n==7== I   refs:      808,566,565\n"
    assert instructions.refs(stderr) == 808_566_565
    with pytest.raises(RuntimeError, match="no 'I refs'"):
        instructions.refs("==7== error\n")
    assert instructions.per_connection(695_382_165, 808_566_565, (200, 1200)) == 113_184.4
    figures = {"plain": 69.0, "bindpool": 115.0, "floor_explicit": 75.0}
    measured = {name: {"median": value * 1000} for name, value in figures.items()}
    row = instructions.compare(measured, throughput.COMPARISONS[0])
    assert row["plain_over_bindpool"] == 69 / 115
    assert row["floor_over_bindpool"] == 75 / 115
    assert row["bindpool_own"] == 40_000


def test_instructions_without_valgrind_says_so_and_measures_nothing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(shutil, "which", lambda name: None)
    data = instructions.run("tiny")
    assert "valgrind is not installed" in data["skipped"]
    payload = _payload("instructions", data, [], tmp_path)
    assert payload["targets"] == []
    assert _report.beside("instructions", payload["data"]) == [f"skipped: {data['skipped']}"]
    assert "valgrind is not installed" in "\n".join(_report.SECTIONS["instructions"](data))


@pytest.mark.namespace
def test_scale_holds_every_4_tuple_and_bind0_meets_its_wall(tmp_path: Path) -> None:
    """The tiny scale run: every (port, listener) pair held through sharded workers;
    bind((ip, 0)) stops at the range; every worker gone afterwards."""
    data = _in_namespace("scale", tmp_path)
    sizes = scale.SIZES["tiny"]
    ports = len(sizes.ports)
    assert data["expected"] == ports * sizes.listeners
    pooled = data["bindpool"]
    assert pooled["held"] == data["expected"]
    assert sum(r["held"] for r in pooled["reports"]) == pooled["held"]
    assert all(r["failures"] == {} and r["retries"] == 0 for r in pooled["reports"])
    assert pooled["samples"][-1][1] == pooled["held"]
    assert data["bind0"]["held"] == ports
    assert data["bind0"]["stopped_by"] == ["EADDRINUSE"]
    assert data["kernel"]["held"] > 0
    for phase in ("bind0", "kernel", "bindpool"):
        assert data[phase]["process_bytes"]["rss"] > 0
    written = _plots.scale(data, tmp_path / "scale.png")
    assert written.read_bytes().startswith(b"\x89PNG")
    section = "\n".join(_report.SECTIONS["scale"](data))
    assert f"{pooled['held']:,} connections held at once" in section
    with pytest.raises(ChildProcessError):  # the run reaped every worker it forked
        os.waitpid(-1, os.WNOHANG)


def test_scale_plans_workers_within_the_open_file_limit() -> None:
    connections, workers, room = scale.plan(scale.SIZES["full"], 36)
    assert connections == 1_016_352
    assert math.ceil(28_232 / workers) * 36 <= room
    assert math.ceil(28_232 / (workers - 1)) * 36 > room  # the fewest that fit


def test_scale_refuses_to_start_without_the_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    real = scale.meminfo
    monkeypatch.setattr(scale, "meminfo", lambda: real() | {"MemAvailable": 2 << 30})
    with pytest.raises(SystemExit, match=r"need about .* GiB .* MemAvailable is 2\.0 GiB"):
        scale.run("full", 2, 8, 36, 1.0)


def test_waiting_completes_every_request_and_reports_both_modes(results: dict[str, Any]) -> None:
    data = results["waiting"]["data"]
    workers, _, requests, rounds = waiting.SIZES["tiny"]
    total = workers * requests * rounds
    assert (data["wait"]["completed"], data["wait"]["failed"]) == (total, 0)
    assert data["no wait"]["completed"] + data["no wait"]["failed"] == total
    assert data["no wait"]["failed"] > 0  # twice as many workers as ports: the excess fails
    assert _finite(data["rate_ratio"])
