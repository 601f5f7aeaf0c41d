"""PNG plots of the results (matplotlib, no display): one function per benchmark.

Each takes the `data` a benchmark saved and the path to write, and returns that path.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only; no display needed or wanted

import matplotlib.pyplot as plt  # after the backend is chosen

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axes import Axes

__all__ = ["capacity", "occupancy", "table", "throughput"]

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


THROUGHPUT_ROWS = (
    ("bindpool", "ratio", "bindpool table"),
    ("bindpool_kernel", "kernel_ratio", "bindpool kernel"),
    ("local_addr", "local_addr_ratio", "local_addr"),
)
THROUGHPUT_BOUNDS = {"asyncio": 0.95, "uvloop": 0.85}


def throughput(data: dict[str, Any], path: Path) -> Path:
    """Connections per second relative to plain open_connection, on each loop; and rates."""
    loops = [loop for loop in THROUGHPUT_BOUNDS if loop in data]
    rows = [row for row in THROUGHPUT_ROWS if all(row[0] in data[loop] for loop in loops)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 5.0))
    width = 0.25
    left.set_ylim(0, 1.35)  # before the labels, which place themselves by it
    for index, (_, key, label) in enumerate(rows):
        xs = [i + (index - 1) * width for i in range(len(loops))]
        bars = left.bar(
            xs,
            [data[loop][key] for loop in loops],
            width,
            color=COLOURS[label],
            hatch="//" if label == "local_addr" else None,
            alpha=0.85,
        )
        _label_bars(left, bars, "{:.2f}", inside=True)
    for i, loop in enumerate(loops):
        bound = THROUGHPUT_BOUNDS[loop]
        left.hlines(
            bound,
            i - 1.6 * width,
            i + 1.6 * width,
            colors="black",
            linestyles="--",
            label="target for bindpool table" if i == 0 else None,
        )
        left.annotate(
            f"≥ {bound}",
            (i + 1.6 * width, bound),
            xytext=(2, 0),
            textcoords="offset points",
            fontsize=8,
            va="center",
            ha="left",
        )
    for i, loop in enumerate(loops):
        if "explicit_port_ratio" in data[loop]:
            left.hlines(
                data[loop]["explicit_port_ratio"],
                i - 1.6 * width,
                i + 1.6 * width,
                colors="#9467bd",
                linestyles=":",
                linewidth=2,
                label="libuv, explicit port, no pool",
            )
    left.axhline(1.0, color="grey", linewidth=0.8)
    left.set_xticks(range(len(loops)), [f"{loop} loop" for loop in loops])
    left.set_xlim(-0.6, len(loops) - 0.25)
    left.set_ylabel("connections per second ÷ plain open_connection")
    left.legend(fontsize=8, loc="upper right")
    left.set_title("Relative to plain asyncio.open_connection (no bind)", fontsize=10)
    left.grid(axis="y", alpha=0.3)

    names = [("plain", "plain"), *((name, label) for name, _, label in rows)]
    step = 0.8 / len(names)
    for index, (name, label) in enumerate(names):
        xs = [i + (index - (len(names) - 1) / 2) * step for i in range(len(loops))]
        bars = right.bar(
            xs,
            [data[loop][name] / 1000 for loop in loops],
            step,
            label={
                "plain": "plain open_connection (no bind)",
                "local_addr": "open_connection(local_addr=(ip, 0)), own phase",
            }.get(label, f"{label} (pool.open_connection)"),
            color=COLOURS[label],
            hatch="//" if label == "local_addr" else None,
            alpha=0.85,
        )
        _label_bars(right, bars, "{:.1f}")
    right.set_xticks(range(len(loops)), [f"{loop} loop" for loop in loops])
    right.set_ylabel("thousand connections per second")
    right.set_title(
        f"Open + close, {data['connections']} per round, concurrency {data['concurrency']}",
        fontsize=10,
    )
    right.grid(axis="y", alpha=0.3)
    top = max(data[loop][name] for loop in loops for name, _ in names)
    right.set_ylim(0, top / 1000 * 1.15)
    handles, labels = right.get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(names), fontsize=8, frameon=False)
    fig.suptitle(f"Connection throughput, median of {data['rounds']} alternating rounds")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return _finish(fig, path, layout=False)


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
