"""Shared steps of the triage, incident, rollback and fault tests: run a playbook as an operator would,
read what it left (verdict, incident facts, ledger, Lease, audit log), and snapshot what the ladder may touch.

Everything here reads the sandbox the way a user checks it: the emulator's API and audit log,
Redis' CONFIG GET, the incident facts file the report role writes.
"""

from __future__ import annotations

import calendar
import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import yaml

from stormctl.ladder import RUNGS
from tests.fixtures.sandbox import Sandbox, wait_for

REPO = Path(__file__).resolve().parents[2]
INVENTORY = REPO / "inventories" / "sandbox"
PLAYBOOKS = REPO / "playbooks"
ANSIBLE_PLAYBOOK = str(Path(sys.executable).parent / "ansible-playbook")
SCENARIO_DIR = REPO / "src" / "stormctl" / "sandbox" / "scenarios"
# big-storm is the triage benchmark's load; churn-beside-idle-pool and two-storms keep Redis under the
# recovery line (their storm is churn, not a full Redis), so the culprit drill checks them
# (python -m bench culprit); the others are the incidents the ladder must handle.
SCENARIOS = sorted(p.stem for p in SCENARIO_DIR.glob("*.yml")
                   if p.stem not in ("world", "big-storm", "churn-beside-idle-pool", "two-storms"))
LADDER = list(RUNGS)
OPERATOR = "storm-operator"
LEDGER_NAMESPACE = "redis-storm"
REDIS_SETTINGS = ("maxclients", "timeout", "tcp-keepalive", "maxmemory-clients")
# The sandbox's recovery window: a 5 s hold, 20 s per rung (production defaults are 30 s / 180 s).
RECOVERY_VARS = {"storm_recovery_hold_seconds": 5, "storm_recovery_timeout_seconds": 20}
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


def scenario(name: str) -> Dict[str, Any]:
    return dict(yaml.safe_load((SCENARIO_DIR / ("%s.yml" % name)).read_text()))


class Run:
    """One ansible-playbook run: its exit code, output, recap and (for incident runs) its facts file."""

    def __init__(self, done: subprocess.CompletedProcess[str], started: float, finished: float,
                 facts_file: Optional[Path]) -> None:
        self.rc = done.returncode
        self.output = done.stdout + done.stderr
        self.started = started
        self.finished = finished
        self.facts: Optional[Dict[str, Any]] = None
        if facts_file is not None and facts_file.exists():
            self.facts = json.loads(facts_file.read_text())

    @property
    def changed(self) -> int:
        found = re.findall(r"changed=(\d+)", self.output)
        assert found, "no play recap in the output:\n%s" % self.output[-3000:]
        return int(found[-1])

    @property
    def changed_tasks(self) -> List[str]:
        """The TASK headers of the tasks that reported a change."""
        found, task = [], ""
        for line in self.output.splitlines():
            if line.startswith("TASK ["):
                task = line.rstrip("* ")
            elif line.startswith("changed: [") and task not in found:
                found.append(task)
        return found

    @property
    def timeline(self) -> List[Dict[str, Any]]:
        assert self.facts is not None, "no incident facts were written:\n%s" % self.output[-3000:]
        return list(self.facts["timeline"])

    @property
    def climbed(self) -> List[str]:
        """Rungs that ran (applied, unchanged or planned), in the order they ran."""
        return [t["rung"] for t in self.timeline if t["result"] in ("applied", "unchanged", "planned")]

    @property
    def recommended(self) -> List[str]:
        assert self.facts is not None and self.facts["triage"] is not None, self.output[-3000:]
        return [r["rung"] for r in self.facts["triage"]["recommended_rungs"]]

    def seconds_to_recovered(self) -> float:
        """From the start of the run to the recovery check that confirmed the recovery."""
        assert self.facts is not None and self.facts["recovery"], self.output[-3000:]
        checked = calendar.timegm(time.strptime(self.facts["recovery"]["checked_at"], "%Y-%m-%dT%H:%M:%SZ"))
        return checked - self.started


def playbook(box: Sandbox, name: str, tmp_path: Path, *args: str, timeout: float = 300,
             **extra_vars: Any) -> Run:
    """Run playbooks/<name>.yml against the sandbox inventory; incident facts go to tmp_path."""
    reports = tmp_path / "reports"
    extra = dict(RECOVERY_VARS, storm_reports_dir=str(reports), **extra_vars)
    command = [ANSIBLE_PLAYBOOK, "-i", str(INVENTORY), str(PLAYBOOKS / ("%s.yml" % name)), "-e", json.dumps(extra),
               *args]
    started = time.time()
    done = subprocess.run(command, cwd=REPO, env=box.env(ANSIBLE_NOCOLOR="1"), capture_output=True, text=True,
                          timeout=timeout)
    incident_id = extra.get("incident_id")
    facts = reports / str(incident_id) / "facts-sandbox-redis.json" if incident_id else None
    return Run(done, started, time.time(), facts)


class Triage:
    """One ansible-playbook run of triage.yml and the verdict it wrote (``triage_output_file``)."""

    def __init__(self, verdict: Optional[Dict[str, Any]], run: Run) -> None:
        self.verdict = verdict
        self.rc = run.rc
        self.output = run.output

    @property
    def top(self) -> Dict[str, Any]:
        assert self.verdict is not None and self.verdict["offenders"], self.output
        return dict(self.verdict["offenders"][0])

    @property
    def rungs(self) -> List[str]:
        assert self.verdict is not None, self.output
        return [r["rung"] for r in self.verdict["recommended_rungs"]]

    def degraded(self, partial: bool = False) -> List[str]:
        assert self.verdict is not None, self.output
        return [d["source"] for d in self.verdict["degraded_sources"] if bool(d.get("partial")) == partial]


def triage(box: Sandbox, tmp_path: Path, check: bool = False, timeout: float = 180, **extra_vars: Any) -> Triage:
    """Run playbooks/triage.yml; the verdict is read from the file the role writes, never from the console."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    output = tmp_path / ("verdict-%d.json" % time.monotonic_ns())
    run = playbook(box, "triage", tmp_path, *(["--check"] if check else []), timeout=timeout,
                   triage_output_file=str(output), **extra_vars)
    return Triage(json.loads(output.read_text()) if output.exists() else None, run)


def start(box: Sandbox, name: str, tmp_path: Path, *args: str, **extra_vars: Any) -> Tuple[subprocess.Popen[str], Path]:
    """Start playbooks/<name>.yml without waiting (for two runs at once); returns the process and its facts file."""
    reports = tmp_path / "reports"
    extra = dict(RECOVERY_VARS, storm_reports_dir=str(reports), **extra_vars)
    command = [ANSIBLE_PLAYBOOK, "-i", str(INVENTORY), str(PLAYBOOKS / ("%s.yml" % name)), "-e", json.dumps(extra),
               *args]
    process = subprocess.Popen(command, cwd=REPO, env=box.env(ANSIBLE_NOCOLOR="1"), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return process, reports / str(extra["incident_id"]) / "facts-sandbox-redis.json"


# -- the sandbox's own truth ------------------------------------------------------------------------

def fleet_status(box: Sandbox) -> Dict[str, Any]:
    with urllib.request.urlopen(box["fleet"]["url"] + "/status", timeout=10) as response:
        return dict(json.loads(response.read()))


def raging(box: Sandbox, name: str) -> bool:
    """The scenario's storm holds Redis at (about) maxclients, with its culprit holding the most connections."""
    spec = scenario(name)
    status = fleet_status(box)
    held = {"%s/%s" % (w["namespace"], w["name"]): int(w["connections"]) for w in status["workloads"]}
    culprit = "%s/%s" % (spec["culprit"]["namespace"], spec["culprit"]["name"])
    return status["connections"] >= 0.9 * int(spec["maxclients"]) and max(held, key=lambda k: held[k]) == culprit


# Redis errors the applications counted over the last 15 s that show the storm hurts them.
HURTING_ERRORS = 10


def raise_storm(box: Sandbox, name: str, timeout: float = 150, hurting: bool = False) -> None:
    """Start the scenario and wait until it saturates Redis; with ``hurting``, also until the applications
    count Redis errors (at the first instant of saturation nobody has been refused yet, so triage rightly
    sees pressure without impact and does not confirm the bottleneck)."""

    def ready() -> bool:
        if not raging(box, name):
            return False
        return not hurting or (box.prom_value("sum(increase(redis_client_errors_total[15s]))") or 0) >= HURTING_ERRORS

    box.storm(name)
    wait_for(ready, timeout, "%s to saturate Redis%s" % (name, " and fail the applications' calls" if hurting else ""),
             interval=0.5)


class HeldRedis:
    """An admin connection opened before the storm and kept, since a saturated Redis refuses new ones.

    A storm that drops every client (a network blip) drops this one too; it is then opened again
    as soon as Redis accepts a connection.
    """

    def __init__(self, box: Sandbox) -> None:
        self.box = box
        self.client: Any = None
        self._connect(60)

    def _connect(self, timeout: float) -> None:
        def attempt() -> bool:
            client = self.box.redis(socket_timeout=3, socket_connect_timeout=3, single_connection_client=True)
            try:
                client.ping()
            except Exception:
                client.close()
                raise
            self.client = client
            return True

        wait_for(attempt, timeout, "Redis to accept an admin connection", interval=0.2)

    def config(self) -> Dict[str, str]:
        """CONFIG GET of the settings the ladder may change."""
        try:
            return {key: str(self.client.config_get(key)[key]) for key in REDIS_SETTINGS}
        except Exception:
            self.close()
            self._connect(120)
            return {key: str(self.client.config_get(key)[key]) for key in REDIS_SETTINGS}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def api_get(box: Sandbox, path: str) -> Optional[Dict[str, Any]]:
    request = urllib.request.Request(box.kube_api + path)
    request.add_header("Authorization", "Bearer %s" % box.token("admin"))
    try:
        with urllib.request.urlopen(request, timeout=10, context=box.api_context()) as response:
            return dict(json.loads(response.read()))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return None
        raise


def sandbox_api(box: Sandbox, method: str, path: str, body: Optional[Dict[str, Any]] = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(box.kube_api + path, data=data, method=method)
    request.add_header("Authorization", "Bearer %s" % box.token("admin"))
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=10, context=box.api_context()) as response:
        text = response.read()
    return json.loads(text) if text else None


def audit_seq(box: Sandbox) -> int:
    entries = box.audit()
    return max((int(e["seq"]) for e in entries), default=0)


def operator_writes(box: Sandbox, since: int) -> List[Dict[str, Any]]:
    """Every write the operator identity sent after audit entry `since` (dry runs included, marked)."""
    return [e for e in box.audit() if int(e["seq"]) > since and e["user"] == box.operator and e["verb"] in WRITE_VERBS]


def real_writes(writes: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    return [w for w in writes if not w.get("dry_run")]


# -- what the ladder may touch ----------------------------------------------------------------------

OBJECT_LISTS = {
    "ingresses": "/apis/networking.k8s.io/v1/ingresses",
    "configmaps": "/api/v1/configmaps",
    "horizontalpodautoscalers": "/apis/autoscaling/v2/horizontalpodautoscalers",
    "scaledobjects": "/apis/keda.sh/v1alpha1/scaledobjects",
    "destinationrules": "/apis/networking.istio.io/v1beta1/destinationrules",
    "middlewares": "/apis/traefik.io/v1alpha1/middlewares",
    "deployments": "/apis/apps/v1/deployments",
    "statefulsets": "/apis/apps/v1/statefulsets",
}


def snapshot(box: Sandbox, held: HeldRedis) -> Dict[str, Any]:
    """Every object of the kinds the ladder changes, by (resource, namespace, name), plus Redis' settings."""
    objects: Dict[Tuple[str, str, str], Dict[str, Any]] = {}
    for resource, path in OBJECT_LISTS.items():
        listing = api_get(box, path) or {}
        for item in listing.get("items") or []:
            meta = item.get("metadata") or {}
            if resource == "configmaps" and str(meta.get("name", "")).startswith("redis-storm-ledger-"):
                continue
            objects[(resource, str(meta.get("namespace", "")), str(meta.get("name", "")))] = item
    return {"objects": objects, "redis": held.config()}


def get_path(obj: Any, path: Sequence[str]) -> Tuple[bool, Any]:
    for key in path:
        if not isinstance(obj, dict) or key not in obj:
            return False, None
        obj = obj[key]
    return True, obj


def ledger(box: Sandbox, incident_id: str) -> List[Dict[str, Any]]:
    """The incident's ledger entries, oldest first (empty when there is no ledger)."""
    cm = api_get(box, "/api/v1/namespaces/%s/configmaps/redis-storm-ledger-%s" % (LEDGER_NAMESPACE, incident_id))
    data = (cm or {}).get("data") or {}
    entries = [json.loads(v) for k, v in data.items() if k.startswith("entry-")]
    return sorted(entries, key=lambda e: int(e["seq"]))


def lease(box: Sandbox, name: str = "sandbox-redis") -> Optional[Dict[str, Any]]:
    return api_get(box, "/apis/coordination.k8s.io/v1/namespaces/%s/leases/redis-storm-lock-%s" % (
        LEDGER_NAMESPACE, name))


def autoscaled(snap: Dict[str, Any]) -> set[Tuple[str, str]]:
    """(namespace, name) of workloads an HPA or ScaledObject scales: their replicas move on their own."""
    found = set()
    for (resource, namespace, _name), obj in snap["objects"].items():
        if resource in ("horizontalpodautoscalers", "scaledobjects"):
            target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
            found.add((namespace, str(target.get("name"))))
    return found


def autoscaler_wants(snap: Dict[str, Any], namespace: str, name: str) -> Optional[int]:
    """The replicas the HPA scaling (namespace, name) wants now, if one does and says so."""
    for (resource, hpa_namespace, _name), obj in snap["objects"].items():
        target = (obj.get("spec") or {}).get("scaleTargetRef") or {}
        if resource == "horizontalpodautoscalers" and hpa_namespace == namespace and target.get("name") == name:
            desired = (obj.get("status") or {}).get("desiredReplicas")
            return int(desired) if desired is not None else None
    return None


def assert_restored(box: Sandbox, held: HeldRedis, before: Dict[str, Any], entries: Sequence[Dict[str, Any]]) -> None:
    """Every field the ledger recorded is back at its pre-incident value, and so is every Redis setting.

    An autoscaled workload's replicas are compared with the value the ledger recorded when the
    ladder changed them: between the snapshot and the change its autoscaler moves them too.
    """
    after = snapshot(box, held)
    moving = autoscaled(before)
    problems = []
    for entry in entries:
        target = entry["target"]
        if target.get("type") == "redis":
            continue
        key = (target["resource"], target["namespace"], target["name"])
        now, then = after["objects"].get(key), before["objects"].get(key)
        if entry.get("action") == "create":
            if now is not None:
                problems.append("%s/%s/%s was created by the incident and still exists" % key)
            continue
        assert then is not None, "%s/%s/%s was not in the pre-incident snapshot" % key
        for field in entry["fields"]:
            path = field["path"]
            present, value = get_path(now, path)
            if path == ["spec", "replicas"] and (target["namespace"], target["name"]) in moving:
                # once rollback has given the workload back to its autoscaler, the autoscaler may move it again
                wanted = autoscaler_wants(after, target["namespace"], target["name"])
                if value != field["before"] and value != wanted:
                    problems.append("%s/%s/%s %s is %r, the ledger recorded %r and its autoscaler wants %r"
                                    % (*key, ".".join(path), value, field["before"], wanted))
                continue
            was_present, was = get_path(then, path)
            if (present, value) != (was_present, was):
                problems.append("%s/%s/%s %s is %r, before the incident it was %r" % (
                    *key, ".".join(path), value if present else "(absent)", was if was_present else "(absent)"))
        annotations = ((now or {}).get("metadata") or {}).get("annotations") or {}
        marks = [k for k in annotations if k.startswith("redis-storm.fintech.io/")]
        if marks:
            problems.append("%s/%s/%s still carries %s" % (*key, ", ".join(marks)))
    if after["redis"] != before["redis"]:
        problems.append("Redis settings %r, before the incident %r" % (after["redis"], before["redis"]))
    assert not problems, "not back to the pre-incident state:\n  " + "\n  ".join(problems)
