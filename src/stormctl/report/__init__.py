"""The incident report: report.json (validated against schema.json), report.md and report.html."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema

from stormctl.errors import StormctlError
from stormctl.report import facts, metrics, render
from stormctl.report.build import build

CHART_FILE = "chart.png"


@dataclass(frozen=True)
class ReportFiles:
    directory: Path
    json: Path
    markdown: Path
    html: Path
    chart: Path
    outcome: str


def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(resources.files("stormctl.report").joinpath("schema.json").read_text())
    return loaded


def validate(report: dict[str, Any]) -> None:
    """Raise StormctlError naming the first place where `report` breaks the schema."""
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(report))
    if error is not None:
        where = "/".join(str(p) for p in error.absolute_path) or "(top)"
        raise StormctlError("the report does not match its schema at %s: %s" % (where, error.message))


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


def write(incident_dir: Path, fetch: metrics.Fetch | None = None) -> ReportFiles:
    """Build the report from the facts in `incident_dir` and write its three files (and the chart) there."""
    from stormctl.report import chart  # matplotlib: imported only when a report is drawn

    report = build(facts.load(incident_dir), fetch)
    png = chart.render(report)
    report["chart"] = CHART_FILE
    validate(report)
    files = ReportFiles(
        directory=incident_dir,
        json=incident_dir / "report.json",
        markdown=incident_dir / "report.md",
        html=incident_dir / "report.html",
        chart=incident_dir / CHART_FILE,
        outcome=str(report["outcome"]),
    )
    _write(files.chart, png)
    _write(files.json, (json.dumps(report, indent=2, sort_keys=False, default=str) + "\n").encode())
    _write(files.markdown, render.markdown(report).encode())
    _write(files.html, render.page(report, png).encode())
    return files
