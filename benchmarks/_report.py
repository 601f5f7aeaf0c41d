"""What a run says: the figures reported beside each target, and `docs/benchmarks.md`.

Everything here reads the JSON payloads the benchmarks saved (`benchmarks._common.save`):
`{"benchmark", "machine", "data", "targets"}`; nothing is measured here.
"""

from __future__ import annotations

from typing import Any

from benchmarks import waiting
from benchmarks._common import Target

__all__ = ["beside", "markdown", "targets"]

Payload = dict[str, Any]
TITLES = {
    "capacity": "Capacity",
    "occupancy": "Connect cost as the range fills",
    "throughput": "Throughput",
    "instructions": "Instructions per connection",
    "table": "The port table",
    "sharding": "Several processes on one source",
    "soak": "The soak",
    "waiting": "Waiting for a port instead of failing",
    "scale": "A million connections from one source IP",
}


def targets(payload: Payload) -> list[Target]:
    return [Target.from_json(item) for item in payload["targets"]]


def beside(name: str, data: dict[str, Any]) -> list[str]:
    """Figures printed next to a benchmark's targets: the methods without a target."""
    if name == "capacity":
        return [
            f"{method}: {row['held']} held ({row['ratio']:.1%} of R x D)"
            for method, row in data["methods"].items()
        ]
    if name == "occupancy":
        return [
            f"{method}: median 99%/0% {row['median_ratio']:.2f}, p99 99%/0% "
            f"{row['p99_ratio']:.2f} ({row['median_us'][0]:.0f} -> {row['median_us'][-1]:.0f} us)"
            for method, row in data["methods"].items()
        ] + (
            [
                f"pool.connect (table), {data['big']['range']} ports: median 99%/0% "
                f"{data['big']['median_ratio']:.2f}"
            ]
            if "big" in data
            else []
        )
    if name == "throughput":
        return [
            f"{label}: plain ÷ bindpool {_ratio(row['plain_over_bindpool'])}"
            + (
                f", plain ÷ floor {_ratio(row['plain_over_floor'])}, floor ÷ bindpool "
                f"{_ratio(row['floor_over_bindpool'])}"
                if "floor" in row
                else " (A/A control)"
            )
            for label, row in data["comparisons"].items()
        ]
    if name == "instructions":
        return instructions_summary(data)
    if name == "scale":
        return [scale_summary(data)]
    if name == "table":
        memory = data["memory_bytes"]
        return [
            *(
                f"in situ, {loop}: {row['us_per_connection']:.2f} us inside the table per "
                "connection in a real run"
                for loop, row in data.get("in_situ", {}).items()
            ),
            f"memory per idle destination: {memory['per_idle_destination_cooling']:.0f} B while "
            f"its 4-tuple cools, {memory['per_idle_destination_after_cooldown']:.1f} B after",
            *(
                f"footprint {label}: p95 {row['p95']:.3f}, max {row['max']:.3f}"
                for label, row in data["footprint"].items()
            ),
        ]
    if name == "sharding":
        return [
            f"{label}: {row['connects']} connects, {row['retries']} retries "
            f"({row['retry_rate']:.2%})"
            for label, row in data.items()
            if isinstance(row, dict)
        ]
    if name == "waiting":
        return waiting.summary(data)
    if name == "soak":
        resident = data["resident_kib"]
        return [
            f"{data['connects']} connects ({data['faults']} faults) in {data['seconds']:.1f} s; "
            f"resident {resident['warm']} -> {resident['end']} KiB; table empty after: "
            f"{data['statistics']['in_use'] == 0}"
        ]
    return []


# -- docs/benchmarks.md ----------------------------------------------------------------------


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _header(*cells: str, align: str = "") -> list[str]:
    """A table's header; `align` has an "l" or "r" per column (default: text, then figures)."""
    align = align or "l" + "r" * (len(cells) - 1)
    return [_row(*cells), _row(*("---" if a == "l" else "---:" for a in align))]


def _verdict(target: Target) -> str:
    return "holds" if target.holds else "**missed**"


def _target_rows(results: dict[str, Payload]) -> list[str]:
    lines = _header("benchmark", "target", "measured", "bound", "verdict", align="llrrl")
    for name, payload in results.items():
        for target in targets(payload):
            sign = "≤" if target.at_most else "≥"
            lines.append(
                _row(
                    name,
                    target.name,
                    f"{target.measured:.3g}{target.unit}",
                    f"{sign} {target.bound:g}{target.unit}",
                    _verdict(target),
                )
            )
    return lines


def _capacity(data: dict[str, Any]) -> list[str]:
    r, d = data["range"], data["destinations"]
    lines = [
        f"One source IP ({data['source']}) opens connections to each of D = {d} listeners in "
        f"turn until the method fails for that destination, and keeps them all open; the "
        f"figure is how many it held at once. The wall: {data['wall']}. The listeners never "
        "`accept()`: connections wait in their accept queue. Between methods every socket is "
        "closed with an RST (SO_LINGER 0) and the listeners are new. Correctness is checked "
        "outside the count: every socket on the source and the block, each 4-tuple once, the "
        "pool's leases all back after the close.",
        "",
        *_header("method", "held", "of R × D", "per destination", "stopped by", align="lrrll"),
    ]
    for method, row in data["methods"].items():
        lines.append(
            _row(
                method,
                row["held"],
                f"{row['ratio']:.1%}",
                ", ".join(str(n) for n in row["per_destination"]),
                ", ".join(sorted(set(row["stopped_by"]))),
            )
        )
    lines += ["", f"R × D = {r} × {d} = {r * d}.", "", "![capacity](img/capacity.png)"]
    return lines


def _occupancy(data: dict[str, Any]) -> list[str]:
    levels = [f"{level}%" for level in data["levels"]]
    lines = [
        f"Connections from {data['source']} to one listener fill X% of an R = {data['range']}"
        "-port range (opened by the method itself, as a program using it would have them); "
        "then new connections to the same destination are timed, each socket + options + bind "
        "+ connect + close (RST). "
        f"{data['samples_per_level']} samples per point, over {data['rounds']} passes that "
        "alternate the methods; garbage collector off while timing. The raw methods use "
        "blocking sockets; bindpool's figure is `await pool.connect()` + close on asyncio's "
        "loop, with `ports` = the same block and the default 60 s cool-down, so it includes an "
        "event-loop wait for the connect: compare ratios across methods, not absolute "
        f"figures. The wall: {data['wall']}.",
        "",
        "Median, µs:",
        "",
        *_header("method", *levels, "99% ÷ 0%"),
    ]
    for method, row in data["methods"].items():
        cells = [f"{v:.1f}" for v in row["median_us"]]
        lines.append(_row(method, *cells, f"{row['median_ratio']:.2f}×"))
    lines += ["", "99th percentile, µs:", "", *_header("method", *levels, "99% ÷ 0%")]
    for method, row in data["methods"].items():
        cells = [f"{v:.1f}" for v in row["p99_us"]]
        lines.append(_row(method, *cells, f"{row['p99_ratio']:.2f}×"))
    if "big" in data:
        big = data["big"]
        if "cpu_us" in big:
            lines += [
                "",
                f"The target's measure: `pool.connect` (strategy table) on a "
                f"{big['range']:,}-port block, one pool holding 99% of it and one holding "
                f"nothing, {big['rounds']} interleaved rounds of {big['samples'] // big['rounds']}"
                f" connections on each: client CPU {big['cpu_us'][0]:.1f} µs per connection at "
                f"0%, {big['cpu_us'][1]:.1f} µs at 99%; paired 99% ÷ 0% "
                f"**{big['median_ratio']:.3f}** (IQR {big['q1']:.3f}-{big['q3']:.3f}). Wall "
                f"time per connection, median {big['median_us'][0]:.1f} → "
                f"{big['median_us'][1]:.1f} µs, p99 {big['p99_us'][0]:.1f} → "
                f"{big['p99_us'][1]:.1f} µs.",
            ]
        else:  # results from before the interleaved measure
            lines += [
                "",
                f"The target's sweep: `pool.connect` (strategy table) on a {big['range']:,}-port "
                f"block, {big['samples']} samples per level: median {big['median_us'][0]:.1f} µs "
                f"at 0%, {big['median_us'][1]:.1f} µs at 99% (**{big['median_ratio']:.2f}×**); "
                f"p99 {big['p99_us'][0]:.1f} → {big['p99_us'][1]:.1f} µs.",
            ]
    lines += ["", "![connect cost vs occupancy](img/occupancy.png)", ""]
    if data["mode"] == "namespace":
        lines += [
            "In the namespace the pool's block is the namespace's whole ephemeral range, so "
            "strategy `kernel` sets no `IP_LOCAL_PORT_RANGE` (nothing to narrow) and connect() "
            "searches the range as plain NO_PORT does: ports of one parity first, two at a "
            "time; from 50% full on those are all taken, and every connect walks past them "
            "before it tries the others. The row `NO_PORT + IP_LOCAL_PORT_RANGE` sets the "
            "option to that same whole range: with a per-socket range the kernel searches one "
            "port at a time with no parity preference (Linux ≥ 6.3, `__inet_hash_connect`: "
            "`step = local_ports ? 1 : 2`), from where its last pick left off, and the cost "
            "stays flat.",
        ]
    else:
        lines += [
            "Without a namespace every raw socket carries `IP_LOCAL_PORT_RANGE`, which also "
            "changes how connect() searches (one port at a time, no parity preference, from "
            "where its last pick left off), so NO_PORT stays flat here; in a namespace, with "
            "the sysctl alone, it does not (ports of one parity first: from 50% full on, "
            "every connect walks past all of them).",
        ]
    return lines


def _ratio(figure: dict[str, float]) -> str:
    return f"{figure['median']:.3f}"


def cpu_ratios(data: dict[str, Any]) -> list[str]:
    """The headline: client CPU per connection, plain ÷ bindpool and the floors."""
    lines = _header(
        "comparison",
        "plain ÷ bindpool",
        "quartiles",
        "min-max",
        "plain ÷ floor",
        "floor ÷ bindpool",
        "target",
        align="lrrrrrl",
    )
    for label, row in data["comparisons"].items():
        figure = row["plain_over_bindpool"]
        floor = "floor" in row
        lines.append(
            _row(
                label,
                f"**{_ratio(figure)}**" if floor else _ratio(figure),
                f"{figure['q1']:.3f}-{figure['q3']:.3f}",
                f"{figure['min']:.3f}-{figure['max']:.3f}",
                _ratio(row["plain_over_floor"]) if floor else "—",
                _ratio(row["floor_over_bindpool"]) if floor else "—",
                (
                    f"≥ {row['bound']:g}: "
                    + ("holds" if figure["median"] >= row["bound"] else "**missed**")
                )
                if floor
                else "A/A control: its spread is the instrument's",
            )
        )
    return lines


def _throughput(data: dict[str, Any]) -> list[str]:
    lines = [
        "Client CPU per connection (`time.process_time()` in the client process around a "
        f"batch of {data['connections']} connections opened and closed, concurrency "
        f"{data['concurrency']}), against `benchmarks/peer.py`, a bare uvloop server in its "
        f"own process ({data['network']}). Every method runs one batch per round, "
        f"{data['rounds']} rounds, in an order that rotates each round; a ratio is taken per "
        "round (the batches of one round are paired) and the figure is the median over the "
        "rounds, with quartiles and min-max. Ratios read as in issue 10: plain ÷ bindpool "
        "above 1 means bindpool costs less CPU than plain (`asyncio.open_connection`, no "
        "source binding). Each bindpool path has a floor, the same path with no pool "
        "(`benchmarks/throughput.py` lists them); floor ÷ bindpool is how close bindpool is "
        "to it. The A/A control runs plain against itself.",
        "",
        *cpu_ratios(data),
        "",
        "Each method, median over the rounds:",
        "",
        *_header("loop", "method", "CPU µs per connection", "connections/s", align="llrr"),
    ]
    for loop, methods in data["methods"].items():
        for name, row in methods.items():
            lines.append(
                _row(loop, name, f"{row['cpu_us']['median']:.1f}", f"{row['rate']['median']:.0f}")
            )
    lines += ["", "![client CPU per connection](img/throughput.png)"]
    return lines


def instructions_summary(data: dict[str, Any]) -> list[str]:
    """Per comparison: bindpool's count, its own share, and the ratios (or why none)."""
    if "skipped" in data:
        return [f"skipped: {data['skipped']}"]
    return [
        f"{label}: bindpool "
        f"{data['methods'][row['loop']][row['bindpool']]['median'] / 1000:.1f}k instructions "
        f"per connection, its own {row['bindpool_own'] / 1000:.1f}k; plain ÷ bindpool "
        f"{row['plain_over_bindpool']:.3f}, floor ÷ bindpool {row['floor_over_bindpool']:.3f}"
        for label, row in data["comparisons"].items()
    ]


def _instructions(data: dict[str, Any]) -> list[str]:
    if "skipped" in data:
        return [f"Not measured: {data['skipped']}."]
    small, large = data["counts"]
    spread = max(row["spread"] for rows in data["methods"].values() for row in rows.values())
    lines = [
        "User-space instructions per connection, counted by valgrind "
        f"(`{data['valgrind']}`, cachegrind without cache simulation) in a client process "
        f"that opens and closes connections, concurrency {data['concurrency']}, against "
        f"`benchmarks/peer.py` in its own process, not under valgrind ({data['network']}). "
        f"The figure is (instructions of a {large}-connection run - those of a "
        f"{small}-connection run) ÷ {large - small}, which cancels start-up and imports; "
        + (
            f"median of {data['repeats']} repeats, which differed by at most {spread:.2%}. "
            if data["repeats"] > 1
            else "one run of each. "
        )
        + "The methods are the throughput section's (`benchmarks/instructions.py`). The count is "
        "deterministic, so it tells changes the CPU figures' spread hides; but it leaves the "
        "kernel out (system time is not counted): where two paths make the same syscalls, as "
        "bindpool's uvloop native path and its floor do, their difference is bindpool's own "
        "code. Ratios above 1 mean bindpool runs fewer instructions. An instrument: no target.",
        "",
        *_header(
            "comparison",
            "plain ÷ bindpool",
            "floor ÷ bindpool",
            "plain ÷ floor",
            "bindpool's own, per connection",
        ),
    ]
    for label, row in data["comparisons"].items():
        lines.append(
            _row(
                label,
                f"{row['plain_over_bindpool']:.3f}",
                f"**{row['floor_over_bindpool']:.3f}**",
                f"{row['plain_over_floor']:.3f}",
                f"{row['bindpool_own'] / 1000:.1f}k",
            )
        )
    lines += [
        "",
        "Instructions per connection:",
        "",
        *_header("loop", "method", "median", "min-max", "spread", align="llrrr"),
    ]
    for loop, methods in data["methods"].items():
        for name, row in methods.items():
            lines.append(
                _row(
                    loop,
                    name,
                    f"{row['median'] / 1000:.1f}k",
                    f"{row['min'] / 1000:.1f}k-{row['max'] / 1000:.1f}k",
                    f"{row['spread']:.2%}",
                )
            )
    if data.get("layers"):
        lines += [
            "",
            "uvloop's native path (`pool.open_connection`) from its floor, one layer of "
            "bindpool added at each step: `leased` makes the connection on "
            "`LeasedStreamProtocol`, the lease's carrier there; `tabled` also takes each port "
            "from a `PortTable` and gives it back on close; `bindpool` adds the pool and its "
            "dialer (argument checks, the literal cache, the retry loop, the release hook). "
            "See [Performance](performance.md) for what was tried on each.",
            "",
            *_header("step", "instructions per connection", "adds", align="lrr"),
        ]
        for row in data["layers"]:
            lines.append(
                _row(
                    row["layer"],
                    f"{row['instructions'] / 1000:.1f}k",
                    f"+{row['adds'] / 1000:.1f}k",
                )
            )
    return lines


def scale_summary(data: dict[str, Any]) -> str:
    pooled, bind0 = data["bindpool"], data["bind0"]
    return (
        f"{pooled['held']:,} connections held at once from one source IP "
        f"({data['listeners']} listeners × {data['ports']:,} ports), opened in "
        f"{pooled['opened_s']:.0f} s ({pooled['rate']:,.0f}/s) by {pooled['workers']} "
        f"sharded worker processes; `bind((ip, 0))` reached {bind0['held']:,} "
        f"(stopped by {', '.join(bind0['stopped_by'])})."
    )


def _scale(data: dict[str, Any]) -> list[str]:
    time_ = data["time"]
    lines = [
        f"One source IP ({data['source']}) against {data['listeners']} listeners that never "
        f"accept, with the default {data['ports']:,}-port ephemeral range "
        f"({data['range'][0]}-{data['range'][1]}), in a private network namespace "
        "(`benchmarks/scale.py`). A process may hold 20,000 files here, so the connections "
        "live in worker processes forked from the benchmark, each "
        "`Pool([source], shard=(i, n))` connecting to every listener until its pool says "
        f"`PortsExhausted`; {data['concurrent']} connect at a time, {data['tasks']} connects "
        f"in flight each (`pool.connect`, on {data.get('loop', 'asyncio')}'s loop). Three "
        "phases, each with fresh listeners and torn down before the next: `bind((ip, 0))` "
        "(what asyncio's and aiohttp's `local_addr` do) until the kernel refuses; the kernel's "
        "own connect (blocking socket + SO_REUSEADDR + bind(explicit port) + connect, no "
        "pool) to the same count, through as many workers holding the same slices; bindpool.",
        "",
        scale_summary(data),
        "",
        *_header(
            "phase",
            "held",
            "opened in",
            "per second",
            "workers",
            "kernel Slab per conn.",
            "workers RSS (PSS)",
            align="lrrrrrr",
        ),
    ]
    for label, key in (
        ("bind((ip, 0))", "bind0"),
        ("kernel's own connect, no pool", "kernel"),
        ("bindpool", "bindpool"),
    ):
        row = data[key]
        lines.append(
            _row(
                label,
                f"{row['held']:,}",
                f"{row['opened_s']:.1f} s",
                f"{row['rate']:,.0f}",
                row["workers"],
                f"{row['slab_bytes'] / max(1, row['held']):,.0f} B",
                f"{row['process_bytes']['rss'] / 2**30:.2f} GiB "
                f"({row['process_bytes']['pss'] / 2**30:.2f})",
            )
        )
    pooled = data["bindpool"]
    per_connection = pooled["slab_bytes"] / max(1, pooled["held"])
    lines += [
        "",
        f"Kernel memory: /proc/meminfo's Slab grew by {pooled['slab_bytes'] / 2**30:.2f} GiB "
        f"while bindpool's connections were held ({per_connection:,.0f} "
        f"B per connection, both ends); /proc/net/sockstat counted "
        f"{pooled['sockstat'].get('inuse', 0):,} TCP sockets in use. Tear-down (listeners "
        f"closed, workers ended): {pooled['teardown_s']:.0f} s.",
        "",
        "Where the time went (bindpool phase), CPU per connection in µs:",
        "",
        *_header("", "user (Python)", "system (kernel)", align="lrr"),
        _row("bindpool workers", f"{time_['user_us']:.1f}", f"{time_['system_us']:.1f}"),
        _row(
            "the kernel's own connect, no pool",
            f"{time_['kernel_user_us']:.1f}",
            f"{time_['kernel_system_us']:.1f}",
        ),
        "",
        f"Worker start-up (fork to a made pool): {time_['startup_s']:.2f} s in all; the "
        f"parent (sampling, memory guard): {time_['parent_cpu_s']:.1f} s of CPU. The workers "
        f"and the parent used {time_['busy']:.0%} of the CPU time the wall offered to "
        f"{min(time_['cores'], data['concurrent'])} workers at once; other work on the host "
        "had the rest.",
        "",
        "![connections held over time](img/scale.png)",
    ]
    return lines


def _table(data: dict[str, Any]) -> list[str]:
    cost = data["acquire_release_us"]
    occupancies = list(next(iter(cost.values())))
    memory = data["memory_bytes"]
    lines = [
        f"The port table alone, no sockets, over a {data['range']}-port range "
        "(`benchmarks/table.py` explains each measurement). acquire+release pairs are timed in "
        "batches at 0/50/99% of one destination's range held; the figure is the median "
        "batch's time per pair. Memory is measured with tracemalloc. Footprint is the ports "
        "bound ÷ the busiest destination's live connections under a Zipf load over 50 "
        "destinations, the mean of samples after a warm-up.",
        "",
        "acquire + release, median µs per pair:",
        "",
        *_header("cool-down", *[f"{o} held" for o in occupancies]),
    ]
    for label, row in cost.items():
        lines.append(_row(label, *(f"{v:.2f}" for v in row.values())))
    if "in_situ" in data:
        lines += [
            "",
            "In situ: the time inside the table per connection (acquire + release) in a real "
            "run of `pool.open_connection` against a server, timed by a proxy around the "
            "pool's table less the proxy's own overhead, median over batches "
            "(`benchmarks/table.py`, item 4). A real run interleaves each call with a "
            "connect and a transport, so the table meets cold caches:",
            "",
            *_header("loop", "µs per connection in a real run", "tight loop, 0%, 60 s"),
            *(
                _row(
                    loop,
                    f"{row['us_per_connection']:.2f}",
                    f"{cost['cooldown 60s']['0%']:.2f}",
                )
                for loop, row in data["in_situ"].items()
            ),
        ]
    lines += [
        "",
        *_header("memory", "bytes"),
        _row("per live lease, 1 destination", f"{memory['per_lease_1_destination']:.0f}"),
        _row(
            f"per live lease, {memory['spread_destinations']} destinations x 20",
            f"{memory['per_lease_spread']:.0f}",
        ),
        _row(
            "per idle destination, while its 4-tuple cools",
            f"{memory['per_idle_destination_cooling']:.0f}",
        ),
        _row(
            "per idle destination, after the cool-down",
            f"{memory['per_idle_destination_after_cooldown']:.1f}",
        ),
        "",
        *_header("footprint load", "mean", "p95", "max", "samples"),
    ]
    for label, row in data["footprint"].items():
        lines.append(
            _row(
                label,
                f"{row['mean']:.3f}",
                f"{row['p95']:.3f}",
                f"{row['max']:.3f}",
                row["samples"],
            )
        )
    lines += [
        "",
        "Under churn with a cool-down the footprint cannot reach 1.0 (`benchmarks/table.py`): "
        "when another destination shares a port of the busiest and the busiest's connection "
        "ends first, the cool-down keeps the busiest off that port while the other still "
        "holds it.",
        "",
        "![port table](img/table.png)",
    ]
    return lines


def _sharding(data: dict[str, Any]) -> list[str]:
    lines = [
        f"{data['workers']} worker processes share one source IP and a {data['ports']}-port "
        "range, all connecting to one destination at once until their pools say no "
        "(`benchmarks/sharding.py`). Without `shard`, each table picks ports on its own and "
        "the kernel refuses the losers' 4-tuples: retries. With `shard=(i, 4)` each process "
        "has its own contiguous slice. The kernel strategy's pick is atomic across processes.",
        "",
        *_header("run", "connects", "retries", "retries / connects"),
    ]
    lines += [
        _row(label, row["connects"], row["retries"], f"{row['retry_rate']:.2%}")
        for label, row in data.items()
        if isinstance(row, dict)
    ]
    return lines


def _soak(data: dict[str, Any]) -> list[str]:
    traced, resident = data["traced_bytes"], data["resident_kib"]
    return [
        f"{data['connects']:,} connects through one pool by 50 workers, one attempt in 20 a "
        "fault (refused, a timeout against a full accept queue, cancelled), with a 1 s "
        "cool-down so that resting state comes and goes all through the run "
        f"(`benchmarks/soak.py`): {data['seconds']:.1f} s, {data['released']:,} leases "
        "released, each once. Memory is sampled after a tenth of the run and at its end; a "
        "cool-down later the table holds no lease, nothing cooling, no destination.",
        "",
        *_header("memory", "after a tenth", "at the end", "table emptied"),
        _row(
            "traced by tracemalloc (KiB)",
            f"{traced['warm'] / 1024:.0f}",
            f"{traced['end'] / 1024:.0f}",
            f"{traced['empty'] / 1024:.0f}",
        ),
        _row("resident (KiB)", resident["warm"], resident["end"], resident["empty"]),
    ]


def _waiting(data: dict[str, Any]) -> list[str]:
    return [
        f"{data['workers']:,} workers each make {data['requests']} requests (connect, hold "
        f"the connection {waiting.HOLD * 1000:.0f} ms, close) to one destination through a "
        f"{data['ports']:,}-port block: twice as many workers as ports "
        "(`benchmarks/waiting.py`). Without waiting the excess fails at once with "
        "`PortsExhausted`; with `wait=30` it waits in line for a release. Both modes "
        f"interleaved over {data['rounds']} rounds.",
        "",
        *_header("mode", "completed", "failed", "completed/s (median)"),
        *(
            _row(
                mode,
                f"{data[mode]['completed']:,}",
                f"{data[mode]['failed']:,}",
                f"{data[mode]['rate']:,.0f}",
            )
            for mode in ("wait", "no wait")
        ),
        "",
        f"Completed per second with `wait` ÷ without: {data['rate_ratio']:.3f}.",
    ]


SECTIONS = {
    "capacity": _capacity,
    "occupancy": _occupancy,
    "throughput": _throughput,
    "instructions": _instructions,
    "table": _table,
    "sharding": _sharding,
    "soak": _soak,
    "waiting": _waiting,
    "scale": _scale,
}


def _headline(results: dict[str, Payload]) -> list[str]:
    """Client CPU per connection first (the figure that tells ±5%), then the million."""
    lines = []
    if "throughput" in results:
        lines += [
            "## Headline: client CPU per connection",
            "",
            "plain ÷ bindpool, above 1 = bindpool cheaper than plain (section "
            f"{list(SECTIONS).index('throughput') + 1}):",
            "",
            *cpu_ratios(results["throughput"]["data"]),
            "",
        ]
    if "scale" in results:
        lines += [
            "## Headline: a million connections from one source IP",
            "",
            scale_summary(results["scale"]["data"]),
            "",
        ]
    return lines


def markdown(results: dict[str, Payload], run: dict[str, Any]) -> str:
    """The whole of docs/benchmarks.md for one run."""
    first = next(iter(results.values()))["machine"]
    every = [t for payload in results.values() for t in targets(payload)]
    missed = [t for t in every if not t.holds]
    lines = [
        "# Benchmarks",
        "",
        f"Written by `make bench` (`python -m benchmarks.run`) on {first['when']}: rerun it to "
        "refresh this page and its plots; do not edit it by hand. Every benchmark compares "
        "bindpool with the ways it replaces in the same run, and its figures are kept in "
        "`benchmarks/results/*.json`. The machine was shared with other work during the run: "
        "absolute figures are noisy (±30% between runs); the ratios, measured within one run, "
        "carry over better. A missed target is reported as missed; targets and workloads are "
        "not adjusted to pass.",
        "",
        "## Reproduce",
        "",
        "```sh",
        "make bench        # every benchmark, full size; writes this page and docs/img/*.png",
        "make bench-quick  # smaller sizes, under two minutes; prints each target and verdict",
        "python -m benchmarks.occupancy --quick  # one benchmark on its own",
        "python -m benchmarks.throughput        # client CPU per connection, the headline",
        "python -m benchmarks.scale             # the million (root); --quick: 4 x 2000",
        "```",
        "",
        "`capacity` and `occupancy` re-execute themselves in a private network namespace "
        "(`unshare -n`) when run as root, and narrow that namespace's "
        "`net.ipv4.ip_local_port_range` to the R-port block; otherwise (or with "
        "`--mode option`) they narrow each socket with `IP_LOCAL_PORT_RANGE` instead. "
        "`throughput` runs each loop's rounds in a fresh namespace when it can (loopback "
        "only, no setting changed). `scale` runs only in a private namespace (root): it "
        "raises `somaxconn` and sets the ephemeral range there, needs about 8 GB of memory "
        "at full size (it refuses to start without it) and takes about 3 minutes, one of "
        "them `bind((ip, 0))` crawling to its wall (bounded by `--bind0-seconds`). "
        "`instructions` needs valgrind and takes about 7 minutes.",
        "",
        "## The machine",
        "",
        *_header("what", "value", align="ll"),
        _row("Python", first["python"]),
        _row("kernel", first["kernel"]),
        _row("CPUs", f"{first['cpus']} × {first.get('cpu_model', '?')}"),
        _row("uvloop", run.get("uvloop", "?")),
        _row("load average (1 min) when the run began", f"{run.get('load_average', 0):.2f}"),
        _row("sizes", run["size"]),
        _row(
            "duration",
            f"{run['seconds']:.0f} s ("
            + ", ".join(f"{n} {s:.0f} s" for n, s in run["durations"].items())
            + ")",
        ),
        "",
        *_headline(results),
        "## Targets",
        "",
        *_target_rows(results),
        "",
        f"{len(every) - len(missed)} of {len(every)} targets hold."
        + (
            " Missed: " + "; ".join(f"{t.name} ({t.measured:.3g}{t.unit})" for t in missed) + "."
            if missed
            else ""
        ),
        "",
    ]
    for number, (name, section) in enumerate(SECTIONS.items(), 1):
        if name not in results:
            continue
        lines += [f"## {number}. {TITLES[name]}", "", *section(results[name]["data"]), ""]
    return "\n".join(lines).rstrip() + "\n"
