"""PNG plots of the results (matplotlib, no display): one function per benchmark.

Each takes the `data` a benchmark saved and the path to write, and returns that path.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed or wanted

import matplotlib.pyplot as plt  # after the backend is chosen
import matplotlib.ticker

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

__all__ = ["capacity", "occupancy", "scale", "table", "throughput"]

# One colour per method, the same in every plot.
COLOURS = {
    "bind(ip, 0)": "#d62728",
    "IP_BIND_ADDRESS_NO_PORT": "#ff7f0e",
    "NO_PORT + IP_LOCAL_PORT_RANGE": "#bcbd22",
    "bindpool table": "#1f77b4",
    "bindpool kernel": "#2ca02c",
    "local_addr": "#d62728",
    "plain": "#7f7f7f",
}
MARKERS = {"bindpool table": "o", "bindpool kernel": "s"}


def _finish(fig: Any, path: Path, *, layout: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_bars(ax: Axes, bars: Any, fmt: str, *, inside: bool = False) -> None:
    """Each bar's value over it, or just inside its top (`inside`: clear of lines above)
    when the bar is tall enough to hold it."""
    low, high = ax.get_ylim()
    for bar in bars:
        height = bar.get_height()
        within = inside and height - low > 0.12 * (high - low)
        ax.annotate(
            fmt.format(height),
            (bar.get_x() + bar.get_width() / 2, height),
            xytext=(0, -3 if within else 3),
            textcoords="offset points",
            ha="center",
            va="top" if within else "bottom",
            fontsize=8,
            color="white" if within else "black",
            fontweight="bold" if within else "normal",
        )


def occupancy(data: dict[str, Any], path: Path) -> Path:
    """Connect cost (median and p99, us) against how full the destination's range is."""
    levels = data["levels"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 5.2), sharex=True)
    for ax, key, title in (
        (axes[0], "median_us", "median"),
        (axes[1], "p99_us", "99th percentile"),
    ):
        for method, row in data["methods"].items():
            ax.plot(
                range(len(levels)),
                row[key],
                marker=MARKERS.get(method, "^"),
                linewidth=2.4 if method.startswith("bindpool") else 1.6,
                color=COLOURS.get(method),
                label=(
                    f"{method} (99% ÷ 0%: median {row['median_ratio']:.2f}×, "
                    f"p99 {row['p99_ratio']:.2f}×)"
                ),
            )
        ax.set_xticks(range(len(levels)), [f"{level}%" for level in levels])
        ax.set_xlabel(f"destination's range already in use (R = {data['range']} ports)")
        ax.set_ylabel("socket + bind + connect + close (µs)")
        ax.set_title(f"{title}, {data['samples_per_level']} connections per point", fontsize=10)
        ax.set_ylim(bottom=0)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    where = (
        "a private network namespace's ip_local_port_range"
        if data["mode"] == "namespace"
        else "IP_LOCAL_PORT_RANGE on each socket"
    )
    fig.suptitle(f"Connect cost as a destination's port range fills (the wall: {where})")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return _finish(fig, path, layout=False)


def capacity(data: dict[str, Any], path: Path) -> Path:
    """Connections held at once, per method, against R and R x D."""
    r, d = data["range"], data["destinations"]
    methods = list(data["methods"])
    held = [data["methods"][m]["held"] for m in methods]
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    bars = ax.bar(
        range(len(methods)),
        held,
        color=[COLOURS.get(m, "#999999") for m in methods],
        width=0.6,
    )
    _label_bars(ax, bars, "{:.0f}")
    ax.axhline(r * d, color="black", linestyle="--", linewidth=1, label=f"R × D = {r * d}")
    ax.axhline(r, color="black", linestyle=":", linewidth=1, label=f"R = {r}")
    ax.set_xticks(range(len(methods)), [m.replace(" + ", "\n+ ") for m in methods], fontsize=8)
    ax.set_ylabel("connections held at once (count)")
    ax.set_ylim(0, r * d * 1.15)
    ax.set_title(f"One source IP, {d} destinations, a range of R = {r} ports", fontsize=11)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    return _finish(fig, path)


def throughput(data: dict[str, Any], path: Path) -> Path:
    """Client CPU per connection: plain ÷ bindpool per comparison (median, quartiles,
    min-max over the rounds), with plain ÷ floor and the target beside each."""
    rows = list(data["comparisons"].items())
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [3, 2]})
    labelled = False
    for i, (_, row) in enumerate(rows):
        figure = row["plain_over_bindpool"]
        control = "floor" not in row
        colour = COLOURS["plain"] if control else COLOURS["bindpool table"]
        left.bar(i, figure["median"], 0.6, color=colour, alpha=0.85)
        left.errorbar(
            i,
            figure["median"],
            yerr=[[figure["median"] - figure["q1"]], [figure["q3"] - figure["median"]]],
            fmt="none",
            ecolor="black",
            elinewidth=3,
            capsize=0,
        )
        left.vlines(i, figure["min"], figure["max"], colors="black", linewidth=0.8)
        left.annotate(
            f"{figure['median']:.2f}",
            (i, 0),
            xytext=(0, 4),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            color="white",
            fontweight="bold",
        )
        if not control:
            left.hlines(
                row["plain_over_floor"]["median"],
                i - 0.35,
                i + 0.35,
                colors="#9467bd",
                linestyles=":",
                linewidth=2,
                label=None if labelled else "floor: same path, no pool",
            )
            left.hlines(
                row["bound"],
                i - 0.35,
                i + 0.35,
                colors="black",
                linestyles="--",
                label=None if labelled else "target",
            )
            labelled = True
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xticks(range(len(rows)), [textwrap.fill(label, 14) for label, _ in rows], fontsize=7)
    top = max(row["plain_over_bindpool"]["max"] for _, row in rows)
    left.set_ylim(0, max(1.3, top * 1.05))
    left.set_ylabel("plain ÷ bindpool (> 1: bindpool cheaper)")
    left.set_title(
        "Median of per-round ratios; thick: quartiles, thin: min-max; grey: A/A control",
        fontsize=9,
    )
    left.legend(fontsize=8, loc="upper left")
    left.grid(axis="y", alpha=0.3)

    loops = list(data["methods"])
    for j, loop in enumerate(loops):
        methods = data["methods"][loop]
        names = list(methods)
        ys = [j * (len(names) + 1) + k for k in range(len(names))]
        values = [methods[name]["cpu_us"]["median"] for name in names]
        colours = [
            COLOURS["plain"]
            if name.startswith("plain")
            else "#9467bd"
            if name.startswith("floor")
            else COLOURS["bindpool table"]
            for name in names
        ]
        bars = right.barh(ys, values, color=colours, alpha=0.85)
        for bar, name in zip(bars, names, strict=True):
            right.annotate(
                f"{loop} {name} {bar.get_width():.0f}",
                (0, bar.get_y() + bar.get_height() / 2),
                xytext=(3, 0),
                textcoords="offset points",
                va="center",
                fontsize=7,
                color="white",
                fontweight="bold",
            )
    right.set_yticks([])
    right.invert_yaxis()
    right.set_xlabel("client CPU per connection, median (µs)")
    right.set_title("Each method (grey plain, purple floor, blue bindpool)", fontsize=9)
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(
        f"Client CPU per connection: {data['connections']} connections per method per round, "
        f"{data['rounds']} rotating rounds, concurrency {data['concurrency']}"
    )
    return _finish(fig, path)


def scale(data: dict[str, Any], path: Path) -> Path:
    """Connections held over time from one source IP: bindpool against bind((ip, 0))."""
    fig, ax = plt.subplots(figsize=(10, 5.2))
    pooled = data["bindpool"]["samples"]
    bind0 = data["bind0"]["samples"]
    end = max(pooled[-1][0], bind0[-1][0])
    ax.plot(
        [t for t, _ in pooled],
        [n for _, n in pooled],
        color=COLOURS["bindpool table"],
        linewidth=2.4,
        label=f"bindpool (table), {data['bindpool']['workers']} sharded workers: "
        f"{data['bindpool']['held']:,} in {data['bindpool']['opened_s']:.0f} s",
    )
    ax.plot(
        [t for t, _ in bind0],
        [n for _, n in bind0],
        color=COLOURS["bind(ip, 0)"],
        linewidth=2.4,
        label=f"bind((ip, 0)), as asyncio's local_addr: {data['bind0']['held']:,} "
        f"(stopped by {', '.join(data['bind0']['stopped_by'])})",
    )
    ax.hlines(bind0[-1][1], bind0[-1][0], end, colors=COLOURS["bind(ip, 0)"], linestyles=":")
    ax.axhline(data["expected"], color="black", linestyle="--", linewidth=1)
    ax.annotate(
        f"{data['listeners']} listeners × {data['ports']:,} ports = {data['expected']:,}",
        (0, data["expected"]),
        xytext=(4, -12),
        textcoords="offset points",
        fontsize=8,
    )
    ax.set_xlim(0, end * 1.02)
    ax.set_ylim(0, data["expected"] * 1.08)
    ax.yaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}"))
    ax.set_xlabel("seconds since the phase began")
    ax.set_ylabel("connections held at once")
    ax.set_title(
        f"Connections from one source IP ({data['source']}), each phase in the same run",
        fontsize=10,
    )
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def table(data: dict[str, Any], path: Path) -> Path:
    """The port table alone: acquire+release cost, and footprint per load."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
    rows = data["acquire_release_us"]
    width = 0.35
    for index, (label, row) in enumerate(rows.items()):
        xs = [i + (index - 0.5) * width for i in range(len(row))]
        bars = left.bar(xs, list(row.values()), width, label=label, alpha=0.85)
        _label_bars(left, bars, "{:.2f}", inside=True)
        left.set_xticks(range(len(row)), [f"{k} held" for k in row])
    left.axhline(2.0, color="black", linestyle="--", linewidth=1, label="target ≤ 2 µs")
    left.set_ylabel("acquire + release, median (µs per pair)")
    left.set_xlabel(f"one destination's range in use ({data['range']} ports)")
    left.set_title("Port table: cost per acquire + release", fontsize=10)
    left.legend(fontsize=8, loc="lower right")
    left.grid(axis="y", alpha=0.3)

    loads = data["footprint"]
    labels = list(loads)
    right.set_ylim(0, 1.7)
    bars = right.bar(range(len(labels)), [loads[k]["mean"] for k in labels], 0.5, alpha=0.85)
    _label_bars(right, bars, "{:.3f}", inside=True)
    right.errorbar(
        range(len(labels)),
        [loads[k]["mean"] for k in labels],
        yerr=[
            [0.0] * len(labels),
            [loads[k]["max"] - loads[k]["mean"] for k in labels],
        ],
        fmt="none",
        ecolor="black",
        capsize=4,
        label="up to the max sample",
    )
    right.axhline(1.34, color="black", linestyle="--", linewidth=1, label="target ≤ 1.34")
    right.set_xticks(range(len(labels)), [k.replace(", ", ",\n") for k in labels], fontsize=8)
    right.set_ylabel("ports bound ÷ busiest destination's live connections")
    right.set_title("Footprint, 50 destinations, Zipf load (mean of samples)", fontsize=10)
    right.legend(fontsize=8, loc="upper left")
    right.grid(axis="y", alpha=0.3)
    return _finish(fig, path)
