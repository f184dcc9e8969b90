"""The serving benchmark's figures as one PNG: throughput, p50 and p99 latency by concurrency,
one line per server."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on a server or in CI

import matplotlib.pyplot as plt
from matplotlib.ticker import FormatStrFormatter


@dataclass(frozen=True)
class Point:
    concurrency: int
    calls_per_s: float
    p50_ms: float
    p99_ms: float


# Fixed colours and markers, so a server looks the same in every run's plot.
STYLES: Mapping[str, tuple[str, str]] = {
    "trivial": ("#7f7f7f", "s"),
    "service": ("#1f77b4", "o"),
    "MLServer, batching off": ("#d62728", "v"),
    "MLServer, adaptive batching": ("#ff7f0e", "^"),
}


def plot(series: Mapping[str, Sequence[Point]], title: str, out: Path) -> None:
    figure, (rate, p50, p99) = plt.subplots(1, 3, figsize=(15, 4.8), layout="constrained")
    panels: tuple[tuple[Any, str, Callable[[Point], float], str], ...] = (
        (rate, "calls/s (higher is better)", attrgetter("calls_per_s"), "linear"),
        (p50, "p50 latency, ms (log; lower is better)", attrgetter("p50_ms"), "log"),
        (p99, "p99 latency, ms (log; lower is better)", attrgetter("p99_ms"), "log"),
    )
    concurrencies = sorted({p.concurrency for points in series.values() for p in points})
    for axes, label, value, scale in panels:
        for name, points in series.items():
            colour, marker = STYLES.get(name, ("#2ca02c", "D"))
            ordered = sorted(points, key=lambda p: p.concurrency)
            axes.plot(
                [p.concurrency for p in ordered],
                [value(p) for p in ordered],
                label=name,
                color=colour,
                marker=marker,
                linewidth=2,
            )
        axes.set_xscale("log", base=2)
        axes.set_xticks(concurrencies, [str(c) for c in concurrencies])
        axes.set_yscale(scale)
        if scale == "log":  # 5, 20, 300 rather than 10^1, 10^2
            axes.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.set_xlabel("concurrent calls (ghz, one connection)")
        axes.set_title(label)
        axes.grid(True, which="both", alpha=0.3)
    rate.set_ylim(bottom=0)
    handles, labels = rate.get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=11)
    figure.suptitle(title)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=100)
    plt.close(figure)
