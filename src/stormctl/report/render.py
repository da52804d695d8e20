"""report.md (for a ticket or a postmortem) and report.html (one self-contained page)."""

from __future__ import annotations

import base64
import difflib
import html
import json
import re
from typing import Any, Mapping, Sequence

SNAPSHOT_KEYS = [("connected_clients", "connected clients"), ("rejected_per_sec", "rejected/s"), ("p99_ms", "p99 ms")]
OUTCOME_TEXT = {
    "recovered": "recovered",
    "not_recovered": "storm persists",
    "no_storm": "no storm found",
    "failed": "failed",
    "refused": "refused",
}
OUTCOME_COLOUR = {
    "recovered": "#2e7d32",
    "no_storm": "#2e7d32",
    "not_recovered": "#e65100",
    "refused": "#6a1b9a",
    "failed": "#c62828",
}


def _pretty(value: Any) -> list[str]:
    if isinstance(value, str):
        return value.splitlines()
    return json.dumps(value, indent=2, sort_keys=True, default=str).splitlines()


def diff_text(item: Mapping[str, Any]) -> str:
    """A unified diff of one changed object's before and after."""
    target = item.get("target")
    if isinstance(target, Mapping) and target.get("name"):
        name = "/".join(str(target[k]) for k in ("namespace", "kind", "name") if target.get(k))
    else:
        name = target if isinstance(target, str) else json.dumps(target, sort_keys=True, default=str)
    lines = difflib.unified_diff(
        _pretty(item.get("before")),
        _pretty(item.get("after")),
        "before: %s" % name,
        "after: %s" % name,
        lineterm="",
        n=2,
    )
    return "\n".join(lines) or "(no difference)"


# "_" inside a word (ingress_rate_limit) emphasises nothing, so only the others are escaped there.
_MARKDOWN_SPECIAL = re.compile(r"([\\`*\[\]<>|~&!#]|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9]))")


def md(value: Any) -> str:
    """Quoted text as one line of Markdown that renders as itself: no link, HTML, emphasis or table cell
    break can come from a message, a host or a task name."""
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def md_code(value: Any) -> str:
    """Inline code that no backtick in the text can close early (pipes escaped for tables)."""
    text = " ".join(str(value).split()).replace("|", "\\|")
    fence = "`" * (1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return "%s %s %s" % (fence, text, fence)


def md_fence(text: str, info: str = "") -> list[str]:
    """A fenced block longer than any backtick run inside, so the text cannot end it."""
    fence = "`" * max(3, 1 + max((len(run) for run in re.findall("`+", text)), default=0))
    return [fence + info, text, fence]


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "%g" % round(value, 3)
    return str(value)


def _who(offender: Mapping[str, Any]) -> str:
    parts = [offender.get("namespace"), offender.get("name")]
    return "/".join(str(p) for p in parts if p) or "?"


def _share(value: Any) -> str:
    return "%.1f%%" % (100 * float(value)) if isinstance(value, (int, float)) else "-"


def _headline(report: Mapping[str, Any]) -> str:
    outcome = str(report.get("outcome"))
    return "%s%s" % (OUTCOME_TEXT.get(outcome, outcome), " (dry run)" if report.get("check_mode") else "")


def markdown(report: Mapping[str, Any]) -> str:
    out = ["# Incident %s: %s" % (md(report["incident_id"]), md(_headline(report))), ""]
    out.append("%s to %s (UTC)." % (md(report["started_at"]), md(report["finished_at"])))
    if report.get("chart"):
        out += ["", "![incident chart](%s)" % md(report["chart"]).replace("(", "%28").replace(")", "%29")]
    out += ["", "## Hosts", "", "| host | outcome | storm | severity | summary |", "|---|---|---|---|---|"]
    for host in report["hosts"]:
        verdict = host.get("verdict") or {}
        out.append(
            "| %s | %s | %s | %s | %s |"
            % (
                md(host["host"]),
                md(host["outcome"]),
                md(verdict.get("storm", "-")),
                md(verdict.get("severity", "-")),
                md(verdict.get("summary") or ""),
            )
        )
        if host.get("failure"):
            out.append("")
            out.append(
                "**%s failed** at %s: %s"
                % (md(host["host"]), md_code(host["failure"].get("task")), md(host["failure"].get("msg")))
            )
    out += ["", "## Timeline", ""]
    if not report["timeline"]:
        out.append("No rung ran.")
    for index, entry in enumerate(report["timeline"], 1):
        out.append("### %d. %s on %s: %s" % (index, md(entry["rung"]), md(entry["host"]), md(entry["result"])))
        out.append("")
        out.append(
            "%s to %s, changed: %s, recovered after it: %s"
            % (
                md(entry["started_at"]),
                md(entry["finished_at"]),
                "yes" if entry["changed"] else "no",
                "-" if entry.get("recovered") is None else ("yes" if entry["recovered"] else "no"),
            )
        )
        if entry.get("msg"):
            out += ["", "> %s" % md(entry["msg"])]
        out += ["", "| metric | before | after |", "|---|---|---|"]
        for key, label in SNAPSHOT_KEYS:
            out.append(
                "| %s | %s | %s |"
                % (label, _number(entry["metrics_before"].get(key)), _number(entry["metrics_after"].get(key)))
            )
        for item in entry["diff"]:
            out += ["", *md_fence(diff_text(item), "diff")]
        out.append("")
    out += ["## Offenders", "", "| host | workload | connections | share | autoscaler |", "|---|---|---|---|---|"]
    for offender in report["offenders"]:
        out.append(
            "| %s | %s | %s | %s | %s |"
            % (
                md(offender["host"]),
                md(_who(offender)),
                md(offender.get("connections")),
                _share(offender.get("connection_share")),
                md(offender.get("hpa_state", "-")),
            )
        )
    out += [
        "",
        "## Evidence",
        "",
        "| host | source | signal | observed | threshold | breached | note |",
        "|---|---|---|---|---|---|---|",
    ]
    for item in report["evidence"]:
        out.append(
            "| %s | %s | %s | %s | %s | %s | %s |"
            % (
                md(item["host"]),
                md(item["source"]),
                md(item["signal"]),
                md(_number(item.get("observed"))),
                md(_number(item.get("threshold"))),
                "yes" if item["breached"] else "no",
                md(item.get("note") or ""),
            )
        )
    out += ["", "## Ledger", ""]
    if report["ledger"]:
        out.append("Undo with %s." % md_code("stormctl rollback --incident-id %s" % report["incident_id"]))
        out.append("")
        out += [
            "- %s: %s" % (md(e["host"]), md_code(json.dumps({k: v for k, v in e.items() if k != "host"},
                                                              sort_keys=True)))
            for e in report["ledger"]
        ]
    else:
        out.append("Nothing was changed, so there is nothing to undo.")
    errors = (report.get("metrics") or {}).get("errors") or {}
    if errors:
        out += ["", "## Chart data gaps", ""] + ["- %s: %s" % (md(k), md(v)) for k, v in sorted(errors.items())]
    return "\n".join(out) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join("<th>%s</th>" % html.escape(h) for h in headers)
    body = "".join("<tr>%s</tr>" % "".join("<td>%s</td>" % html.escape(str(c)) for c in row) for row in rows)
    return "<table><thead><tr>%s</tr></thead><tbody>%s</tbody></table>" % (head, body)


STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2em auto;max-width:1100px;color:#222;
padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}.badge{color:#fff;border-radius:4px;padding:.1em .5em;font-size:.8em}
table{border-collapse:collapse;margin:.5em 0 1em;width:100%}th,td{border:1px solid #ddd;padding:.3em .5em;
text-align:left;vertical-align:top}th{background:#f5f5f5}pre{background:#f8f8f8;padding:.6em;overflow:auto;
font-size:12px}.add{color:#1b5e20}.del{color:#b71c1c}.step{border-left:4px solid #90a4ae;padding-left:1em;
margin:1.2em 0}.muted{color:#777}img{max-width:100%;border:1px solid #eee}
"""


def _diff_html(item: Mapping[str, Any]) -> str:
    lines = []
    for line in diff_text(item).splitlines():
        css = (
            "add"
            if line.startswith("+") and not line.startswith("+++")
            else ("del" if line.startswith("-") and not line.startswith("---") else "")
        )
        text = html.escape(line)
        lines.append('<span class="%s">%s</span>' % (css, text) if css else text)
    return "<pre>%s</pre>" % "\n".join(lines)


def page(report: Mapping[str, Any], chart_png: bytes | None) -> str:
    """One self-contained HTML page: no external file, the chart embedded as a data URI."""
    outcome = str(report["outcome"])
    parts = [
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">',
        "<title>Incident %s</title><style>%s</style></head><body>" % (html.escape(report["incident_id"]), STYLE),
        '<h1>Incident %s <span class="badge" style="background:%s">%s</span></h1>'
        % (html.escape(report["incident_id"]), OUTCOME_COLOUR.get(outcome, "#555"), html.escape(_headline(report))),
        '<p class="muted">%s to %s (UTC), report generated %s</p>'
        % (html.escape(report["started_at"]), html.escape(report["finished_at"]), html.escape(report["generated_at"])),
    ]
    if chart_png:
        parts.append(
            '<img alt="connected clients, rejected connections per second and p99 latency, with each '
            'mitigation marked" src="data:image/png;base64,%s">' % base64.b64encode(chart_png).decode()
        )
    parts.append("<h2>Verdict</h2>")
    parts.append(
        _table(
            ["host", "outcome", "storm", "severity", "summary", "failure"],
            [
                [
                    h["host"],
                    h["outcome"],
                    (h.get("verdict") or {}).get("storm", "-"),
                    (h.get("verdict") or {}).get("severity", "-"),
                    (h.get("verdict") or {}).get("summary") or "",
                    ("%s: %s" % (h["failure"].get("task"), h["failure"].get("msg"))) if h.get("failure") else "",
                ]
                for h in report["hosts"]
            ],
        )
    )
    parts.append("<h2>Timeline</h2>")
    if not report["timeline"]:
        parts.append("<p>No rung ran.</p>")
    for index, entry in enumerate(report["timeline"], 1):
        parts.append(
            '<div class="step"><h3>%d. %s on %s: %s</h3>'
            % (index, html.escape(str(entry["rung"])), html.escape(entry["host"]), html.escape(str(entry["result"])))
        )
        parts.append(
            '<p class="muted">%s to %s; changed: %s; recovered after it: %s</p>'
            % (
                html.escape(str(entry["started_at"])),
                html.escape(str(entry["finished_at"])),
                "yes" if entry["changed"] else "no",
                "-" if entry.get("recovered") is None else ("yes" if entry["recovered"] else "no"),
            )
        )
        if entry.get("msg"):
            parts.append("<p>%s</p>" % html.escape(entry["msg"]))
        parts.append(
            _table(
                ["metric", "before", "after"],
                [
                    [label, _number(entry["metrics_before"].get(key)), _number(entry["metrics_after"].get(key))]
                    for key, label in SNAPSHOT_KEYS
                ],
            )
        )
        parts += [_diff_html(item) for item in entry["diff"]]
        parts.append("</div>")
    parts.append("<h2>Offenders</h2>")
    parts.append(
        _table(
            ["host", "workload", "kind", "connections", "share", "restarts", "autoscaler"],
            [
                [
                    o["host"],
                    _who(o),
                    o.get("kind") or "-",
                    o.get("connections"),
                    _share(o.get("connection_share")),
                    o.get("restarts", "-"),
                    o.get("hpa_state", "-"),
                ]
                for o in report["offenders"]
            ],
        )
    )
    parts.append("<h2>Evidence</h2>")
    parts.append(
        _table(
            ["host", "source", "signal", "observed", "threshold", "breached", "note"],
            [
                [
                    e["host"],
                    e["source"],
                    e["signal"],
                    _number(e.get("observed")),
                    _number(e.get("threshold")),
                    "yes" if e["breached"] else "no",
                    e.get("note") or "",
                ]
                for e in report["evidence"]
            ],
        )
    )
    parts.append("<h2>Ledger</h2>")
    if report["ledger"]:
        parts.append(
            "<p>Undo with <code>stormctl rollback --incident-id %s</code>.</p>" % html.escape(report["incident_id"])
        )
        parts.append(
            _table(
                ["host", "entry"],
                [
                    [e["host"], json.dumps({k: v for k, v in e.items() if k != "host"}, sort_keys=True)]
                    for e in report["ledger"]
                ],
            )
        )
    else:
        parts.append("<p>Nothing was changed, so there is nothing to undo.</p>")
    errors = (report.get("metrics") or {}).get("errors") or {}
    if errors:
        parts.append("<h2>Chart data gaps</h2>")
        parts.append(_table(["series", "why"], sorted(errors.items())))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
