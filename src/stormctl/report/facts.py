"""The incident facts files the incident_report role writes: <reports_dir>/<incident_id>/facts-<host>.json."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from stormctl.errors import StormctlError

# Worst first: the incident's outcome is the worst of its hosts'.
OUTCOME_ORDER = ["failed", "refused", "not_recovered", "recovered", "no_storm"]
REDACTED = "<redacted>"


def load(incident_dir: Path) -> list[dict[str, Any]]:
    """Every host's facts for one incident, sorted by host; an error when there are none."""
    files = sorted(incident_dir.glob("facts-*.json"))
    if not files:
        raise StormctlError("no incident facts in %s (facts-<host>.json): did the playbook run?" % incident_dir)
    facts = []
    for path in files:
        try:
            item = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise StormctlError("cannot read the incident facts %s: %s" % (path, exc)) from exc
        if not isinstance(item, dict) or "outcome" not in item:
            raise StormctlError("%s is not an incident facts file (no outcome)" % path)
        facts.append(item)
    return facts


def worst_outcome(outcomes: Iterable[str]) -> str:
    seen = set(outcomes)
    ranked = [o for o in OUTCOME_ORDER if o in seen]
    return ranked[0] if ranked else "failed"


def parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def redact(value: Any, secret_name: Any) -> Any:
    """A copy with the value of every credential-like key replaced (the facts should hold none)."""
    if isinstance(value, Mapping):
        return {
            str(k): (REDACTED if secret_name.search(str(k)) and v not in (None, "", [], {}) else redact(v, secret_name))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact(v, secret_name) for v in value]
    return value
