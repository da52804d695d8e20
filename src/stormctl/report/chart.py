"""The incident chart: connected clients, rejected connections per second and p99 latency, with
each mitigation marked where it happened (matplotlib, rendered to PNG bytes)."""

from __future__ import annotations

import io
from datetime import datetime, timezone
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates
import matplotlib.pyplot as plt

from stormctl.report.facts import parse_time

PANELS = [
    ("connected_clients", "connected clients", "#1f77b4"),
    ("rejected_per_sec", "rejected conn/s", "#d62728"),
    ("p99_ms", "p99 latency (ms)", "#9467bd"),
]
MARK_COLOURS = ["#2ca02c", "#ff7f0e", "#17becf", "#8c564b", "#e377c2", "#7f7f7f"]
# Results that changed (or, in a dry run, would change) something worth a mark.
MARKED_RESULTS = {"applied", "planned", "unchanged", "failed", "refused"}


def _points(series: Sequence[Sequence[float]]) -> tuple[list[datetime], list[float]]:
    times = [datetime.fromtimestamp(at, timezone.utc) for at, _ in series]
    return times, [value for _, value in series]


def _snapshot_series(timeline: Sequence[Mapping[str, Any]], name: str) -> list[list[float]]:
    """Fallback when Prometheus has no range data: the before/after snapshots of each step."""
    points = []
    for entry in timeline:
        for key in ("metrics_before", "metrics_after"):
            snapshot = entry.get(key) or {}
            at, value = parse_time(snapshot.get("at")), snapshot.get(name)
            if at is not None and isinstance(value, (int, float)):
                points.append([at.timestamp(), float(value)])
    return sorted(points)


def render(report: Mapping[str, Any]) -> bytes:
    """PNG bytes of the chart for a report dict (its `metrics` and `timeline`)."""
    series = (report.get("metrics") or {}).get("series") or {}
    timeline = report.get("timeline") or []
    figure, axes = plt.subplots(len(PANELS), 1, figsize=(10, 7.5), sharex=True, dpi=100)
    try:
        figure.suptitle("Incident %s: %s" % (report.get("incident_id"), report.get("outcome")), fontsize=12)
        marks = [
            (parse_time(e.get("started_at")), str(e.get("rung")), str(e.get("result")))
            for e in timeline
            if e.get("result") in MARKED_RESULTS
        ]
        any_data = False
        for axis, (name, label, colour) in zip(axes, PANELS):
            points = series.get(name) or _snapshot_series(timeline, name)
            if points:
                any_data = True
                times, values = _points(points)
                axis.plot(times, values, color=colour, linewidth=1.6, marker="." if len(points) < 30 else None)
                axis.fill_between(times, values, color=colour, alpha=0.12)
            else:
                axis.text(0.5, 0.5, "no data", transform=axis.transAxes, ha="center", va="center", color="#888888")
            axis.set_ylabel(label)
            axis.grid(True, alpha=0.3)
            axis.set_ylim(bottom=0)
            for index, (at, _rung, result) in enumerate(marks):
                if at is None:
                    continue
                style = "--" if result in ("planned", "unchanged") else "-"
                axis.axvline(at, color=MARK_COLOURS[index % len(MARK_COLOURS)], linestyle=style, linewidth=1.4)
        low, high = axes[0].get_xlim()
        for index, (at, rung, result) in enumerate(marks):
            if at is not None:
                x = mdates.date2num(at)  # type: ignore[no-untyped-call]
                # Labels of late marks go left of their line so they stay inside the chart.
                right_half = high > low and (x - low) / (high - low) > 0.6
                axes[0].annotate(
                    "%s (%s)" % (rung, result),
                    xy=(x, 1.0),
                    xycoords=("data", "axes fraction"),
                    xytext=(-3 if right_half else 3, -12 - 11 * (index % 4)),
                    horizontalalignment="right" if right_half else "left",
                    textcoords="offset points",
                    fontsize=8,
                    color=MARK_COLOURS[index % len(MARK_COLOURS)],
                )
        if any_data or any(at is not None for at, _, _ in marks):
            formatter = mdates.DateFormatter("%H:%M:%S", tz=timezone.utc)  # type: ignore[no-untyped-call]
            axes[-1].xaxis.set_major_formatter(formatter)
        axes[-1].set_xlabel("time (UTC)")
        figure.tight_layout()
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png")
        return buffer.getvalue()
    finally:
        plt.close(figure)
