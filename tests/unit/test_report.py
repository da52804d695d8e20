"""The incident report from hand-made facts files that follow docs/internals.md (no services needed)."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from matplotlib import image as mpimg

from stormctl import report
from stormctl.errors import StormctlError
from stormctl.report import metrics
from stormctl.report.build import build

PROMETHEUS = "http://127.0.0.1:9090"
START = 1795672800.0  # 2026-11-26T05:20:00Z


def snapshot(at: str, clients: float, rejected: float, p99: float) -> dict[str, Any]:
    return {"at": at, "connected_clients": clients, "rejected_per_sec": rejected, "p99_ms": p99}


def rung(
    name: str, start: str, end: str, result: str = "applied", recovered: bool = False, step: str = "mitigate"
) -> dict[str, Any]:
    return {
        "step": step,
        "rung": name,
        "started_at": start,
        "finished_at": end,
        "changed": result == "applied",
        "diff": [
            {
                "target": {"namespace": "trading", "name": "trading-api"},
                "before": {"data": {"redis.retry.aggressive": "true"}},
                "after": {"data": {"redis.retry.aggressive": "false"}},
            }
        ]
        if result == "applied"
        else [],
        "metrics_before": snapshot(start, 1000, 40.5, 2100.0),
        "metrics_after": snapshot(end, 420 if recovered else 990, 0.0 if recovered else 35.0, 180.0),
        "result": result,
        "msg": "%s done" % name,
        "recovered": recovered,
        "ledger": [{"configmap": "redis-storm-ledger-storm-1", "namespace": "redis-storm", "entry_id": name}],
    }


def facts(host: str = "payments-redis", outcome: str = "recovered", **extra: Any) -> dict[str, Any]:
    timeline = [
        rung("ingress_rate_limit", "2026-11-26T05:22:00Z", "2026-11-26T05:23:00Z"),
        rung("client_retries", "2026-11-26T05:23:05Z", "2026-11-26T05:24:10Z", recovered=outcome == "recovered"),
    ]
    item = {
        "incident_id": "storm-20261126-052100",
        "host": host,
        "started_at": "2026-11-26T05:21:00Z",
        "finished_at": "2026-11-26T05:25:00Z",
        "check_mode": False,
        "outcome": outcome,
        "triage": {
            "storm": True,
            "severity": "critical",
            "bottleneck_confirmed": True,
            "summary": "connection storm: Redis at maxclients",
            "evidence": [
                {
                    "source": "redis",
                    "signal": "utilization",
                    "observed": 1.0,
                    "threshold": 0.95,
                    "breached": True,
                    "note": "at maxclients",
                }
            ],
            "offenders": [
                {
                    "namespace": "trading",
                    "kind": "Deployment",
                    "name": "trading-api",
                    "connections": 700,
                    "connection_share": 0.7,
                    "restarts": 0,
                    "hpa_state": "scaling up",
                }
            ],
            "recommended_rungs": [{"rung": "ingress_rate_limit"}, {"rung": "client_retries"}],
            "degraded_sources": [],
            "sources_answered": ["redis", "prometheus", "kubernetes"],
        },
        "timeline": timeline,
        "ledger": [entry for r in timeline for entry in r["ledger"]],
        "recovery": {"recovered": outcome == "recovered", "failed_checks": []},
        "prometheus_url": PROMETHEUS,
    }
    item.update(extra)
    return item


def write_facts(directory: Path, *items: dict[str, Any]) -> Path:
    incident = directory / "storm-20261126-052100"
    incident.mkdir(parents=True, exist_ok=True)
    for item in items:
        (incident / ("facts-%s.json" % item["host"])).write_text(json.dumps(item))
    return incident


def storm_curve(url: str, query: str, start: float, end: float, step: float) -> list[list[float]]:
    """A range answer shaped like a storm that a rung ends: high, then falling (a stand-in for Prometheus)."""
    assert url == PROMETHEUS and start < end and step > 0
    points, t = [], start
    peak = {"connected_clients": 1000.0, "rejected_per_sec": 40.0, "p99_ms": 2000.0}
    name = next(k for k, q in metrics.QUERIES.items() if q == query)
    while t <= end:
        fraction = (t - start) / (end - start)
        points.append([t, round(peak[name] * (1.0 - fraction) + 5.0 * fraction, 3)])
        t += step
    return points


def test_report_files_are_written_and_json_validates(tmp_path: Path) -> None:
    incident = write_facts(tmp_path, facts())
    files = report.write(incident, fetch=storm_curve)
    data = json.loads(files.json.read_text())
    jsonschema.Draft202012Validator(report.schema()).validate(data)
    assert data["outcome"] == "recovered" and files.outcome == "recovered"
    assert [e["rung"] for e in data["timeline"]] == ["ingress_rate_limit", "client_retries"]
    assert len(data["metrics"]["series"]["connected_clients"]) > 10
    assert data["metrics"]["series"]["connected_clients"][0][1] == pytest.approx(1000.0)
    assert data["offenders"][0]["name"] == "trading-api" and data["evidence"][0]["signal"] == "utilization"
    assert len(data["ledger"]) == 2


def test_chart_png_is_non_trivial(tmp_path: Path) -> None:
    files = report.write(write_facts(tmp_path, facts()), fetch=storm_curve)
    png = files.chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000
    pixels = mpimg.imread(io.BytesIO(png), format="png")
    colours = {tuple(p) for p in (pixels[::4, ::4, :3] * 255).astype(int).reshape(-1, 3).tolist()}
    assert len(colours) > 20, "the chart is nearly blank (%d colours)" % len(colours)


def test_html_is_self_contained_with_chart_timeline_and_diffs(tmp_path: Path) -> None:
    files = report.write(write_facts(tmp_path, facts()), fetch=storm_curve)
    page = files.html.read_text()
    assert "data:image/png;base64," in page
    assert "<script" not in page and 'src="http' not in page and "<link" not in page
    assert page.count('class="step"') == 2
    assert "+    &quot;redis.retry.aggressive&quot;: &quot;false&quot;" in page
    markdown = files.markdown.read_text()
    assert "### 1. ingress_rate_limit on payments-redis: applied" in markdown
    assert "| connected clients | 1000 | 990 |" in markdown and "```diff" in markdown


def test_outcome_is_the_worst_host_and_timeline_merges_hosts(tmp_path: Path) -> None:
    incident = write_facts(tmp_path, facts("a-redis", "recovered"), facts("b-redis", "not_recovered"))
    data = json.loads(report.write(incident, fetch=storm_curve).json.read_text())
    assert data["outcome"] == "not_recovered"
    assert len(data["timeline"]) == 4 and {e["host"] for e in data["timeline"]} == {"a-redis", "b-redis"}
    starts = [e["started_at"] for e in data["timeline"]]
    assert starts == sorted(starts)


def test_prometheus_down_still_gives_a_chart_from_the_snapshots(tmp_path: Path) -> None:
    def down(*_: Any) -> list[list[float]]:
        raise OSError("connection refused")

    files = report.write(write_facts(tmp_path, facts()), fetch=down)
    data = json.loads(files.json.read_text())
    assert data["metrics"]["errors"]["connected_clients"] == "connection refused"
    assert data["metrics"]["series"]["connected_clients"] == []
    assert files.chart.stat().st_size > 10_000
    assert "Chart data gaps" in files.markdown.read_text()


def test_real_prometheus_endpoint_that_refuses_is_recorded(tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    item = facts(prometheus_url="http://127.0.0.1:%d" % port)
    data = json.loads(report.write(write_facts(tmp_path, item)).json.read_text())
    assert set(data["metrics"]["errors"]) == set(metrics.QUERIES)


def test_no_storm_and_dry_run(tmp_path: Path) -> None:
    item = facts(outcome="no_storm", timeline=[], ledger=[], recovery=None, check_mode=True)
    item["triage"]["storm"] = False
    files = report.write(write_facts(tmp_path, item), fetch=storm_curve)
    data = json.loads(files.json.read_text())
    assert data["outcome"] == "no_storm" and data["check_mode"] is True and data["timeline"] == []
    assert "no storm found (dry run)" in files.html.read_text()


def test_credentials_are_redacted_even_if_a_facts_file_carries_them(tmp_path: Path) -> None:
    item = facts()
    item["triage"]["redis"] = {"password": "hunter2-redis-secret", "host": "10.0.0.1"}
    item["timeline"][0]["diff"][0]["after"]["api_key"] = "kube-token-abc123"
    files = report.write(write_facts(tmp_path, item), fetch=storm_curve)
    for path in (files.json, files.markdown, files.html):
        text = path.read_text()
        assert "hunter2-redis-secret" not in text and "kube-token-abc123" not in text


def test_schema_rejects_a_broken_report(tmp_path: Path) -> None:
    data = build([facts()], fetch=storm_curve)
    data["chart"] = "chart.png"
    report.validate(data)
    data["timeline"][0]["rung"] = "reboot_everything"
    with pytest.raises(StormctlError, match="timeline/0/rung"):
        report.validate(data)


def test_missing_or_broken_facts_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StormctlError, match="no incident facts"):
        report.write(tmp_path)
    (tmp_path / "facts-x.json").write_text("{not json")
    with pytest.raises(StormctlError, match="cannot read the incident facts"):
        report.write(tmp_path)


def test_window_covers_the_incident_with_context() -> None:
    from datetime import datetime, timezone

    first = datetime(2026, 11, 26, 5, 21, tzinfo=timezone.utc)
    last = datetime(2026, 11, 26, 5, 25, tzinfo=timezone.utc)
    window = metrics.Window.around(first, last, now=datetime(2026, 11, 26, 6, 0, tzinfo=timezone.utc))
    assert window.start == first - metrics.LEAD and window.end == last + metrics.TAIL
    assert (window.end - window.start).total_seconds() / window.step <= metrics.MAX_POINTS


def outside_code_blocks(markdown: str) -> tuple[str, list[str]]:
    """(text outside fenced blocks, the blocks), reading fences as CommonMark does: a block ends only at
    a line of at least as many backticks as opened it."""
    text, blocks, fence, block = [], [], "", []
    for line in markdown.splitlines():
        run = len(line) - len(line.lstrip("`"))
        if not fence and run >= 3:
            fence, block = "`" * run, []
        elif fence and run >= len(fence) and not line.strip("`"):
            blocks.append("\n".join(block))
            fence = ""
        elif fence:
            block.append(line)
        else:
            text.append(line)
    return "\n".join(text), blocks


def test_report_md_quotes_messages_and_diffs_as_text(tmp_path: Path) -> None:
    hostile = 'x</td><script>alert(1)</script><img src=x onerror=alert(2)> [click](javascript:alert(3)) | cell'
    item = facts(failure={"task": "wait ` for `` it", "msg": hostile + "\n# Heading from a message"})
    item["timeline"][0]["msg"] = hostile
    item["timeline"][0]["diff"][0]["after"] = {"data": {"note": "```\n<img src=y onerror=alert(4)>\n```"}}
    item["triage"]["summary"] = hostile
    markdown = report.write(write_facts(tmp_path, item), fetch=storm_curve).markdown.read_text()
    text, blocks = outside_code_blocks(markdown)
    # outside code, every character that could open HTML, a link or a heading is escaped
    quoted = "\n".join(line for line in text.splitlines() if not line.startswith("![incident chart]("))
    assert not re.search(r"(?<!\\)<", quoted) and not re.search(r"(?<!\\)\]\(", quoted)
    assert "\n# Heading" not in text and "\\# Heading from a message" in text
    # the diff's own ``` did not end its block: the whole diff is inside one block
    assert any("onerror=alert(4)" in b and "redis.retry.aggressive" in b for b in blocks)
    # a hosts table row is still one row of five cells
    row = next(line for line in text.splitlines() if line.startswith("| payments-redis"))
    assert row.replace("\\|", "").count("|") == 6
