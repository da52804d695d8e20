"""Live progress from ansible-runner events, and the summary table at the end of a run."""

from __future__ import annotations

import time
from types import TracebackType
from typing import Any, Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from stormctl.ladder import RUNGS
from stormctl.runner import RunResult

COUNTED = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "failed",
}
OUTCOME_STYLE = {
    "recovered": "green",
    "no_storm": "green",
    "not_recovered": "yellow",
    "storm": "yellow",
    "refused": "magenta",
    "failed": "red",
}


def _task_name(data: Mapping[str, Any]) -> str:
    name = str(data.get("task") or "")
    role = data.get("role")
    return "%s : %s" % (role, name) if role and name else name


class Progress:
    """Receives runner events (``handle``) and keeps a one-screen live view up to date."""

    def __init__(self, title: str, console: Console | None = None) -> None:
        self.title = title
        self.console = console or Console(stderr=True)
        self.started = time.monotonic()
        self.step = "starting ansible-playbook"
        self.host = ""
        self.counts = {"ok": 0, "changed": 0, "failed": 0, "skipped": 0}
        self.rung = ""
        self._live = Live(self, console=self.console, refresh_per_second=4, transient=True)

    def __enter__(self) -> Progress:
        self.started = time.monotonic()
        self._live.__enter__()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._live.__exit__(kind, exc, tb)

    def handle(self, event: Mapping[str, Any]) -> None:
        kind = str(event.get("event") or "")
        data = event.get("event_data") or {}
        if kind in ("playbook_on_task_start", "runner_on_start"):
            self.step = _task_name(data) or self.step
            self.host = str(data.get("host") or self.host)
        elif kind in COUNTED:
            self.host = str(data.get("host") or self.host)
            self.counts[COUNTED[kind]] += 1
            if kind == "runner_on_ok" and (data.get("res") or {}).get("changed"):
                self.counts["changed"] += 1
            if kind == "runner_on_failed" and data.get("ignore_errors"):
                self.counts["failed"] -= 1
        role = str(data.get("role") or "").rsplit(".", 1)[-1]
        if role in RUNG_ROLES:
            self.rung = role
        self._live.refresh()

    def __rich__(self) -> Table:
        grid = Table.grid(padding=(0, 1))
        grid.add_column(style="bold")
        grid.add_column()
        grid.add_row(self.title, Text("%5.1f s" % (time.monotonic() - self.started), style="cyan"))
        grid.add_row("step", Text(self.step, overflow="ellipsis", no_wrap=True))
        grid.add_row("host", self.host or "-")
        if self.rung:
            grid.add_row("rung", self.rung)
        grid.add_row(
            "tasks",
            Text.assemble(
                ("ok %d" % self.counts["ok"], "green"),
                "  ",
                ("changed %d" % self.counts["changed"], "yellow"),
                "  ",
                ("failed %d" % self.counts["failed"], "red"),
                "  ",
                ("skipped %d" % self.counts["skipped"], "dim"),
            ),
        )
        return grid


RUNG_ROLES = set(RUNGS)


def summary(
    result: RunResult,
    outcomes: Mapping[str, str],
    timeline: Mapping[str, list[dict[str, Any]]],
    title: str,
) -> Group:
    """Per-host counts and outcome, then each rung that ran."""
    hosts = Table(title=title, title_justify="left")
    for column in ("host", "ok", "changed", "failed", "skipped", "outcome"):
        hosts.add_column(column, justify="right" if column in ("ok", "changed", "failed", "skipped") else "left")
    for host in sorted(set(result.stats) | set(outcomes)):
        stats = result.stats.get(host)
        outcome = outcomes.get(host, "-")
        hosts.add_row(
            host,
            str(stats.ok if stats else "-"),
            str(stats.changed if stats else "-"),
            str(stats.failed + stats.unreachable if stats else "-"),
            str(stats.skipped if stats else "-"),
            Text(outcome, style=OUTCOME_STYLE.get(outcome, "")),
        )
    parts: list[Any] = [hosts]
    entries = [(host, entry) for host, items in sorted(timeline.items()) for entry in items]
    if entries:
        rungs = Table(title="rungs", title_justify="left")
        for column in ("host", "rung", "result", "changed", "recovered", "finished"):
            rungs.add_column(column)
        for host, entry in entries:
            recovered = entry.get("recovered")
            rungs.add_row(
                host,
                str(entry.get("rung")),
                str(entry.get("result")),
                "yes" if entry.get("changed") else "no",
                "-" if recovered is None else ("yes" if recovered else "no"),
                str(entry.get("finished_at") or "").replace("T", " ").rstrip("Z"),
            )
        parts.append(rungs)
    parts.append(Text("%.1f s, ansible-runner status %s" % (result.elapsed, result.status), style="dim"))
    return Group(*parts)
