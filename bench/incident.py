"""Time to mitigate: playbooks/incident.yml against each sandbox scenario, from its start to recovered.

Starts its own sandbox; for each scenario raises the storm, waits until Redis is saturated by the
scenario's culprit, then runs incident.yml (as an operator would, through ansible-playbook) while
sampling the fleet's connections and Redis' rejected-connection counter. Reports per scenario the
seconds from the start of incident.yml to the recovery check that confirmed recovery, the whole
run's wall time, the rungs climbed, the peak connections and the connections Redis rejected during
the run. Target: every scenario recovered within 90 s. Prints numbers; asserts nothing about time.
Between scenarios: rollback.yml, calm, and the sandbox's baseline world.
"""

from __future__ import annotations

import calendar
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SCENARIO_DIR = REPO / "src" / "stormctl" / "sandbox" / "scenarios"
# big-storm is triage's benchmark load (bench/triage.py); these are the incidents.
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yml") if p.stem not in ("world", "big-storm"))
TARGET_SECONDS = 90.0
# The sandbox's recovery window (production defaults: 30 s hold, 180 s per rung).
RECOVERY_VARS = {"storm_recovery_hold_seconds": 5, "storm_recovery_timeout_seconds": 20}


def _fleet_status(fleet_url: str) -> Dict[str, Any]:
    with urllib.request.urlopen(fleet_url + "/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def _raging(fleet_url: str, spec: Dict[str, Any]) -> bool:
    status = _fleet_status(fleet_url)
    held = {"%s/%s" % (w["namespace"], w["name"]): int(w["connections"]) for w in status["workloads"]}
    culprit = "%s/%s" % (spec["culprit"]["namespace"], spec["culprit"]["name"])
    return status["connections"] >= 0.9 * int(spec["maxclients"]) and max(held, key=lambda k: held[k]) == culprit


def _wait(condition: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if condition():
                return
        except Exception:  # the world is still settling
            pass
        if time.monotonic() >= deadline:
            raise RuntimeError("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(0.5)


class _Sampler(threading.Thread):
    """Samples the fleet's connections and Redis' rejected_connections while incident.yml runs."""

    def __init__(self, fleet_url: str, state: Dict[str, Any]) -> None:
        super().__init__(daemon=True)
        self.fleet_url = fleet_url
        self.state = state
        self.stop = threading.Event()
        self.peak_connections = 0
        self.rejected: List[int] = []
        self._client: Any = None

    def _rejected(self) -> Optional[int]:
        import redis

        try:
            if self._client is None:
                self._client = redis.Redis(host=self.state["redis"]["host"], port=self.state["redis"]["port"],
                                           password=self.state["redis"]["password"], socket_timeout=3,
                                           single_connection_client=True)
            return int(self._client.info("stats")["rejected_connections"])
        except redis.RedisError:
            if self._client is not None:
                self._client.close()
            self._client = None
            return None

    def baseline(self) -> int:
        count = self._rejected()
        if count is None:
            raise RuntimeError("Redis refused the benchmark's admin connection before the storm")
        return count

    def run(self) -> None:
        while not self.stop.is_set():
            with contextlib.suppress(OSError):
                self.peak_connections = max(self.peak_connections, int(_fleet_status(self.fleet_url)["connections"]))
            count = self._rejected()
            if count is not None:
                self.rejected.append(count)
            self.stop.wait(0.5)
        if self._client is not None:
            self._client.close()


def _playbook(state_dir: Path, name: str, reports: Path, timeout: float = 600,
              **extra: Any) -> subprocess.CompletedProcess[str]:
    variables = dict(RECOVERY_VARS, storm_reports_dir=str(reports), **extra)
    return subprocess.run([str(BIN / "ansible-playbook"), "-i", str(REPO / "inventories" / "sandbox"),
                           str(REPO / "playbooks" / ("%s.yml" % name)), "-e", json.dumps(variables)],
                          cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, STORM_SANDBOX_DIR=str(state_dir),
                                   ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))


def _baseline(state_dir: Path) -> None:
    from stormctl.errors import StormctlError
    from stormctl.sandbox import services

    services.calm(state_dir)
    for _attempt in range(5):  # the fleet's controllers may race the restore (409): try again
        try:
            services.reset(state_dir)
            return
        except StormctlError:
            time.sleep(1)
    services.reset(state_dir)


def _one(state_dir: Path, state: Dict[str, Any], name: str, reports: Path) -> Dict[str, Any]:
    from stormctl.sandbox import services

    spec = dict(yaml.safe_load((SCENARIO_DIR / ("%s.yml" % name)).read_text()))
    fleet_url = str(state["fleet"]["url"])
    sampler = _Sampler(fleet_url, state)
    # Connected before the storm: a saturated Redis refuses new connections, not held ones.
    before_storm = sampler.baseline()
    services.storm(name, state_dir)
    _wait(lambda: _raging(fleet_url, spec), 150, "%s to saturate Redis" % name)
    incident_id = "bench-%s-%d" % (name, int(time.time()))
    at_start = sampler._rejected()
    counted_from = "incident start" if at_start is not None else "storm start (a blip dropped the admin connection)"
    sampler.rejected = [at_start if at_start is not None else before_storm]
    sampler.start()
    started = time.time()
    try:
        done = _playbook(state_dir, "incident", reports, incident_id=incident_id)
    finally:
        finished = time.time()
        sampler.stop.set()
        sampler.join(timeout=10)
    facts_file = reports / incident_id / "facts-sandbox-redis.json"
    facts = json.loads(facts_file.read_text()) if facts_file.exists() else {}
    recovery = facts.get("recovery") or {}
    recovered = facts.get("outcome") == "recovered"
    to_recovered = None
    if recovered and recovery.get("checked_at"):
        to_recovered = round(calendar.timegm(time.strptime(recovery["checked_at"], "%Y-%m-%dT%H:%M:%SZ")) - started, 1)
    rejected = (sampler.rejected[-1] - sampler.rejected[0]) if len(sampler.rejected) >= 2 else None
    _playbook(state_dir, "rollback", reports, incident_id=incident_id)
    _baseline(state_dir)
    return {
        "outcome": facts.get("outcome") or "no facts (rc %d)" % done.returncode,
        "seconds_to_recovered": to_recovered,
        "run_seconds": round(finished - started, 1),
        "rungs": [t["rung"] for t in facts.get("timeline") or [] if t["result"] in ("applied", "unchanged")],
        "peak_connections": sampler.peak_connections,
        "rejected_connections": rejected,
        "rejected_counted_from": counted_from,
        "recovery_budget_seconds": spec["recovery_seconds"],
        "within_target": bool(to_recovered is not None and to_recovered <= TARGET_SECONDS),
    }


def run() -> Dict[str, Any]:
    from stormctl.sandbox import services

    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-incident-") as tmp:
        state_dir = Path(tmp) / "run"
        reports = Path(tmp) / "reports"
        state = services.up(state_dir, maxclients=1000, owner_pid=os.getpid())
        try:
            for name in SCENARIOS:
                try:
                    results[name] = _one(state_dir, state, name, reports)
                except Exception as exc:  # one broken scenario must not hide the others' numbers
                    results[name] = {"error": "%s: %s" % (type(exc).__name__, exc)}
                    _baseline(state_dir)
                print("  %-16s %s" % (name, json.dumps(results[name])), flush=True)
        finally:
            services.down(state_dir)
    timed = [r["seconds_to_recovered"] for r in results.values() if r.get("seconds_to_recovered") is not None]
    results["summary"] = {
        "target_seconds": TARGET_SECONDS,
        "all_recovered_within_target": all(r.get("within_target") for r in results.values()),
        "slowest_seconds_to_recovered": max(timed) if timed else None,
    }
    return results


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
