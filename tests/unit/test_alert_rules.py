"""The shipped alert rules: valid, unit-tested with promtool, each with a runbook page, and the
sandbox's copy differing from them only in its drill `for:` durations."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from stormctl.sandbox import prometheus_config
from tests.fixtures.services import require_binary

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "redis-storm-rules.yml"
RULE_TESTS = REPO / "deploy" / "prometheus" / "tests" / "redis-storm-rules.test.yml"
RUNBOOK = REPO / "docs" / "alerts.md"
DURATION = re.compile(r"^(\d+)([smh])$")


def alerts(text: str) -> dict[str, dict[str, Any]]:
    doc = yaml.safe_load(text)
    return {rule["alert"]: rule for group in doc["groups"] for rule in group["rules"] if "alert" in rule}


def seconds(duration: str) -> int:
    match = DURATION.match(duration)
    assert match, "unexpected duration %r" % duration
    return int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([require_binary("promtool"), *args], capture_output=True, text=True, timeout=60, cwd=REPO)


def test_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 4 rules found" in result.stdout


def test_each_alert_fires_after_its_production_wait_and_not_before() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert tested == set(alerts(RULES.read_text())), "every rule needs promtool test cases"


def test_production_waits_are_minutes_except_for_refused_connections() -> None:
    waits = {name: seconds(rule.get("for", "0s")) for name, rule in alerts(RULES.read_text()).items()}
    assert waits.pop("RedisRejectedConnections") == 0
    assert all(wait >= 60 for wait in waits.values()), waits


def anchors(markdown: str) -> set[str]:
    """GitHub-style anchors of the page's headings."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.M)
    return {re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-") for heading in headings}


def test_every_alert_says_what_happened_and_links_its_runbook_section() -> None:
    page = anchors(RUNBOOK.read_text())
    for name, rule in alerts(RULES.read_text()).items():
        annotations = rule["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert path == "docs/alerts.md", name
        assert anchor in page, "%s links #%s, which docs/alerts.md has no heading for" % (name, anchor)


def test_the_sandbox_copy_changes_only_the_waits() -> None:
    production = alerts(RULES.read_text())
    drill = alerts(prometheus_config.drill_rules(RULES))
    assert {name: rule["for"] for name, rule in drill.items()} == prometheus_config.DRILL_FOR
    assert {name: {k: v for k, v in rule.items() if k != "for"} for name, rule in drill.items()} == {
        name: {k: v for k, v in rule.items() if k != "for"} for name, rule in production.items()
    }


def test_a_rule_without_a_drill_wait_stops_the_sandbox_with_its_name(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(RULES.read_text().replace("alert: RedisDown", "alert: RedisReplicaLag"))
    with pytest.raises(ValueError, match="RedisReplicaLag"):
        prometheus_config.drill_rules(rules)
