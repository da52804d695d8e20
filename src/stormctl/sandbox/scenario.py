"""Scenario and world data files: load, validate against their JSON Schemas, and explain what is wrong."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

import jsonschema
import yaml

from stormctl.errors import StormctlError

SCENARIO_DIR = Path(__file__).resolve().parent / "scenarios"
WORLD_FILE = SCENARIO_DIR / "world.yml"
NOT_SCENARIOS = frozenset({"world"})
RETRY_KEY = "redis.retry.aggressive"
BREAKER_KEY = "redis.circuit_breaker.force_open"


class ScenarioError(StormctlError):
    """A scenario or world file that cannot be used; the message names the file and the field."""


@dataclass(frozen=True)
class TrafficChange:
    rps: float
    ramp_seconds: float = 0.0


@dataclass(frozen=True)
class StormEvent:
    action: str
    at_seconds: float
    every_seconds: Optional[float] = None
    pause_ms: int = 0


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    culprit: tuple[str, str]
    maxclients: int
    recovery_seconds: int
    expected_rungs: tuple[str, ...]
    traffic: dict[str, TrafficChange] = field(default_factory=dict)
    queues: dict[str, int] = field(default_factory=dict)
    app_config: dict[str, dict[str, str]] = field(default_factory=dict)
    flags: dict[str, dict[str, bool]] = field(default_factory=dict)
    events: tuple[StormEvent, ...] = ()
    path: Optional[Path] = None
    culprits: tuple[tuple[str, str], ...] = ()

    @property
    def culprit_key(self) -> str:
        return "%s/%s" % self.culprit

    @property
    def culprit_keys(self) -> list[str]:
        """Every storming workload in the order triage should name them (the culprit alone, usually)."""
        return ["%s/%s" % c for c in self.culprits or (self.culprit,)]

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "culprit": {"namespace": self.culprit[0], "name": self.culprit[1]},
            "culprits": [{"namespace": ns, "name": name} for ns, name in self.culprits or (self.culprit,)],
            "maxclients": self.maxclients,
            "recovery_seconds": self.recovery_seconds,
            "expected_rungs": list(self.expected_rungs),
        }


@dataclass(frozen=True)
class Pool:
    max: int
    min: int
    retry_attempts: int


@dataclass(frozen=True)
class Traffic:
    rps: float
    hold_ms: float
    timeout_ms: float
    cpu_m_per_rps: float


@dataclass(frozen=True)
class Flags:
    configmap: str
    format: str
    aggressive_retries: bool
    breaker_open: bool


@dataclass(frozen=True)
class Autoscaler:
    kind: str
    min: int
    max: int
    cpu_target: int = 60
    scale_up_pods: int = 4
    scale_up_period_seconds: int = 15
    scale_down_window_seconds: int = 300
    queue: str = ""
    queue_target: int = 1
    queue_length: int = 0


@dataclass(frozen=True)
class Workload:
    namespace: str
    name: str
    subnet: int
    replicas: int
    cpu_request_m: int
    lib_name: str
    lib_version: str
    pool: Pool
    traffic: Traffic
    flags: Flags
    ingress_provider: Optional[str] = None
    ingress_host: str = ""
    autoscaler: Optional[Autoscaler] = None

    @property
    def key(self) -> str:
        return "%s/%s" % (self.namespace, self.name)

    def env(self) -> dict[str, str]:
        return {
            "REDIS_POOL_MAX": str(self.pool.max),
            "REDIS_POOL_MIN": str(self.pool.min),
            "REDIS_RETRY_ATTEMPTS": str(self.pool.retry_attempts),
            "REDIS_CLIENT_NAME": self.name,
            "FLAGS_CONFIGMAP": self.flags.configmap,
        }


@dataclass(frozen=True)
class RedisWorkload:
    namespace: str
    name: str
    host: str
    pod_ip: str
    cpu_request_m: int
    destination_rule: str


@dataclass(frozen=True)
class World:
    redis: RedisWorkload
    namespaces: dict[str, dict[str, str]]
    workloads: tuple[Workload, ...]

    @property
    def workloads_by_key(self) -> dict[str, Workload]:
        return {wl.key: wl for wl in self.workloads}

    def workload(self, key: str) -> Workload:
        return self.workloads_by_key[key]

    def shape(self) -> dict[str, Any]:
        """What an inventory needs to know about this world, in the shared inventory variables' terms."""
        ingresses = []
        flags = []
        workloads: list[dict[str, Any]] = []
        for wl in self.workloads:
            autoscaler = None
            if wl.autoscaler is not None:
                autoscaler = {"kind": wl.autoscaler.kind, "name": wl.name}
            workloads.append({"namespace": wl.namespace, "kind": "Deployment", "name": wl.name,
                              "autoscaler": autoscaler})
            if wl.ingress_provider is not None:
                ingresses.append({"namespace": wl.namespace, "name": wl.name, "provider": wl.ingress_provider,
                                  "workload": wl.name})
            flags.append({"namespace": wl.namespace, "configmap": wl.flags.configmap, "format": wl.flags.format,
                          "workload": wl.name, "retry_key": RETRY_KEY, "breaker_key": BREAKER_KEY})
        return {
            "namespaces": sorted(self.namespaces),
            "client_namespaces": sorted({wl.namespace for wl in self.workloads}),
            "redis_workload": {"namespace": self.redis.namespace, "kind": "StatefulSet", "name": self.redis.name},
            "workloads": workloads,
            "ingresses": ingresses,
            "flags": flags,
            "mesh_destination_rules": [{"namespace": self.redis.namespace, "name": self.redis.destination_rule,
                                        "host": self.redis.host}],
        }


def _read(path: Path, what: str) -> Any:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ScenarioError("%s file %s cannot be read: %s" % (what, path, exc.strerror or exc)) from exc
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ScenarioError("%s: not valid YAML: %s" % (path, exc)) from exc


def _validate(data: Any, schema_file: str, path: Path) -> None:
    schema = json.loads((SCENARIO_DIR / schema_file).read_text())
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = ".".join(str(part) for part in first.absolute_path) or "(top level)"
        more = " (and %d more problems)" % (len(errors) - 1) if len(errors) > 1 else ""
        raise ScenarioError("%s: field %s: %s%s" % (path, where, first.message, more))


def load_world(path: Optional[Path] = None) -> World:
    path = path or WORLD_FILE
    data = _read(path, "world")
    _validate(data, "world.schema.json", path)
    workloads = []
    seen_subnets: dict[int, str] = {}
    for i, item in enumerate(data["workloads"]):
        key = "%s/%s" % (item["namespace"], item["name"])
        if item["subnet"] in seen_subnets:
            raise ScenarioError("%s: field workloads.%d.subnet: %d is already used by %s"
                                % (path, i, item["subnet"], seen_subnets[item["subnet"]]))
        seen_subnets[item["subnet"]] = key
        if item["namespace"] not in data["namespaces"]:
            raise ScenarioError("%s: field workloads.%d.namespace: %r is not in namespaces"
                                % (path, i, item["namespace"]))
        auto = item.get("autoscaler")
        autoscaler = None
        if auto is not None:
            if auto["min"] > auto["max"]:
                raise ScenarioError("%s: field workloads.%d.autoscaler: min %d is above max %d"
                                    % (path, i, auto["min"], auto["max"]))
            scale_up = auto.get("scale_up", {})
            autoscaler = Autoscaler(
                kind=auto["kind"], min=auto["min"], max=auto["max"], cpu_target=auto.get("cpu_target", 60),
                scale_up_pods=scale_up.get("pods", 4), scale_up_period_seconds=scale_up.get("period_seconds", 15),
                scale_down_window_seconds=auto.get("scale_down_window_seconds", 300), queue=auto.get("queue", ""),
                queue_target=auto.get("queue_target", 1), queue_length=auto.get("queue_length", 0),
            )
        ingress = item.get("ingress")
        workloads.append(Workload(
            namespace=item["namespace"], name=item["name"], subnet=item["subnet"], replicas=item["replicas"],
            cpu_request_m=item["cpu_request_m"], lib_name=item["lib"]["name"], lib_version=item["lib"]["version"],
            pool=Pool(**item["pool"]), traffic=Traffic(**item["traffic"]), flags=Flags(**item["flags"]),
            ingress_provider=ingress["provider"] if ingress else None, ingress_host=ingress["host"] if ingress else "",
            autoscaler=autoscaler,
        ))
    r = data["redis"]
    redis = RedisWorkload(namespace=r["namespace"], name=r["name"], host=r["host"], pod_ip=r["pod_ip"],
                          cpu_request_m=r["cpu_request_m"], destination_rule=r["destination_rule"])
    return World(redis=redis, namespaces=data["namespaces"], workloads=tuple(workloads))


def scenario_names() -> list[str]:
    return sorted(p.stem for p in SCENARIO_DIR.glob("*.yml") if p.stem not in NOT_SCENARIOS)


def scenario_path(name: str) -> Path:
    path = SCENARIO_DIR / ("%s.yml" % name)
    if name in NOT_SCENARIOS or "/" in name or not path.is_file():
        raise ScenarioError("unknown scenario %r: choose one of %s" % (name, ", ".join(scenario_names())))
    return path


def load_scenario(name_or_path: Union[str, Path], world: Optional[World] = None) -> Scenario:
    """A scenario by name (from the packaged scenarios) or by path, checked against the schema and the world."""
    path = Path(name_or_path) if isinstance(name_or_path, Path) or str(name_or_path).endswith((".yml", ".yaml")) \
        else scenario_path(str(name_or_path))
    data = _read(path, "scenario")
    _validate(data, "schema.json", path)
    if data["name"] != path.stem:
        raise ScenarioError("%s: field name: %r does not match the file name %r" % (path, data["name"], path.stem))
    world = world or load_world()
    known = {wl.key for wl in world.workloads}
    culprit = "%s/%s" % (data["culprit"]["namespace"], data["culprit"]["name"])
    if culprit not in known:
        raise ScenarioError("%s: field culprit: %s is not a workload of the world (%s)"
                            % (path, culprit, ", ".join(sorted(known))))
    culprits = ["%s/%s" % (c["namespace"], c["name"]) for c in data.get("culprits", [])]
    for i, key in enumerate(culprits):
        if key not in known:
            raise ScenarioError("%s: field culprits.%d: %s is not a workload of the world (%s)"
                                % (path, i, key, ", ".join(sorted(known))))
    if culprits and culprits[0] != culprit:
        raise ScenarioError("%s: field culprits.0: %s must be the culprit, %s" % (path, culprits[0], culprit))
    for section in ("traffic", "queues", "app_config", "flags"):
        for i, item in enumerate(data.get(section, [])):
            if item["workload"] not in known:
                raise ScenarioError("%s: field %s.%d.workload: %s is not a workload of the world (%s)"
                                    % (path, section, i, item["workload"], ", ".join(sorted(known))))
    for i, item in enumerate(data.get("queues", [])):
        auto = world.workload(item["workload"]).autoscaler
        if auto is None or auto.kind != "ScaledObject":
            raise ScenarioError("%s: field queues.%d.workload: %s is not scaled by a KEDA ScaledObject"
                                % (path, i, item["workload"]))
    return Scenario(
        name=data["name"],
        description=data["description"],
        culprit=(data["culprit"]["namespace"], data["culprit"]["name"]),
        maxclients=data["maxclients"],
        recovery_seconds=data["recovery_seconds"],
        expected_rungs=tuple(data["expected_rungs"]),
        traffic={t["workload"]: TrafficChange(t["rps"], t.get("ramp_seconds", 0.0)) for t in data.get("traffic", [])},
        queues={q["workload"]: q["length"] for q in data.get("queues", [])},
        app_config={a["workload"]: dict(a["env"]) for a in data.get("app_config", [])},
        flags={f["workload"]: dict(f["values"]) for f in data.get("flags", [])},
        events=tuple(StormEvent(action=e["action"], at_seconds=e["at_seconds"], every_seconds=e.get("every_seconds"),
                                pause_ms=e.get("pause_ms", 0)) for e in data.get("events", [])),
        path=path,
        culprits=tuple((c["namespace"], c["name"]) for c in data.get("culprits", [])),
    )
