"""storm_rollback never makes an incident worse: dependency order, capacity gates, Redis down,
a ledger that is not a command channel, and a bounded ledger. Against the Kubernetes API
emulator and real redis-servers."""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Dict, Iterator, List

import pytest
import redis

from tests.helpers.mitigations import Target, incident_for, kube_args, ledger_entries
from tests.helpers.modules import run_module
from tests.helpers.trading import DEPLOYMENT, FLAGS, INGRESS_PATH, MIDDLEWARE, WORLD

pytestmark = pytest.mark.integration

ROUTER = "traefik.ingress.kubernetes.io/router.middlewares"


@pytest.fixture
def cluster(kubeapi: Any, request: pytest.FixtureRequest) -> Any:
    kubeapi.seed(WORLD)
    kubeapi.incident_id = incident_for(request)
    return kubeapi


def common(kubeapi: Any) -> Dict[str, Any]:
    return {"incident_id": kubeapi.incident_id, "allowed_namespaces": ["trading"], **kube_args(kubeapi)}


def mitigate(kubeapi: Any, module: str, **extra: Any) -> None:
    result = run_module(module, dict(common(kubeapi), namespace="trading", **dict({"name": "trading-api"}, **extra)))
    assert not result.failed and result["changed"], result.msg


def rollback(kubeapi: Any, check: bool = False, **extra: Any) -> Any:
    return run_module("storm_rollback", dict(common(kubeapi), **extra), check=check, diff=True)


def redis_args(server: Any, **extra: Any) -> Dict[str, Any]:
    return dict({"host": server.host, "port": server.port, "password": server.password}, **extra)


def raise_maxclients(kubeapi: Any, server: Any, value: int, **connection: Any) -> None:
    result = run_module("redis_runtime_config", dict(redis_args(server, **connection), incident_id=kubeapi.incident_id,
                                                     settings={"maxclients": value}, **kube_args(kubeapi)))
    assert not result.failed and result["changed"], result.msg


def replicas(kubeapi: Any) -> int:
    return int(Target(kubeapi, DEPLOYMENT).value(("spec", "replicas")))


def scale_writes(kubeapi: Any, since: int) -> List[Dict[str, Any]]:
    """The real writes of the Deployment's scale subresource since ``since``, from the audit log."""
    return [w for w in kubeapi.writes(since=since) if w["resource"] == "deployments" and w["subresource"] == "scale"]


# --- 1. dependency order

def test_a_drifted_ingress_keeps_the_middleware_it_names_and_the_rest_is_restored(cluster: Any) -> None:
    mitigate(cluster, "feature_flag", name="trading-api-flags", flags={"redis.retry.aggressive": "false"})
    mitigate(cluster, "ingress_rate_limit", provider="traefik", rps=50)
    # someone adds their own middleware to the router after ours: the Ingress entry has drifted
    mine = Target(cluster, INGRESS_PATH).value(("metadata", "annotations", ROUTER))
    theirs = mine + ",trading-auth@kubernetescrd"
    cluster.request("PATCH", INGRESS_PATH, {"metadata": {"annotations": {ROUTER: theirs}}}, token="operator",
                    content_type="application/merge-patch+json")
    ids = {e["target"]["kind"]: e["id"] for e in ledger_entries(cluster, cluster.incident_id)}

    blocked = rollback(cluster)
    assert blocked.failed
    # Traefik still finds every middleware the route names: ours was not deleted under it
    assert cluster.raw("GET", MIDDLEWARE)[0] == 200
    assert Target(cluster, FLAGS).value(("data", "redis.retry.aggressive")) == "true"
    left = {o["entry_id"]: o["outcome"] for o in blocked["left"]}
    assert left == {ids["Ingress"]: "drifted", ids["Middleware"]: "blocked"}, blocked["left"]
    assert "waits for %s" % ids["Ingress"] in blocked.msg
    assert "rollback_force=true" in blocked.msg and "incident_id=%s" % cluster.incident_id in blocked.msg

    forced = rollback(cluster, force=True)
    assert not forced.failed and forced["summary"]["restored"] == 2, forced.msg
    assert cluster.raw("GET", MIDDLEWARE)[0] == 404
    assert ROUTER not in (Target(cluster, INGRESS_PATH).read()["metadata"].get("annotations") or {})


# --- 2. no outage on the way back

def test_maxclients_stays_raised_while_clients_are_above_the_old_limit(cluster: Any,
                                                                       redis_factory: Callable[..., Any]) -> None:
    server = redis_factory(maxclients=50)
    raise_maxclients(cluster, server, 100)
    mitigate(cluster, "workload_scale", replicas=3)
    held = [server.client() for _ in range(45)]
    for conn in held:
        conn.ping()
    mark = cluster.last_seq()

    kept = rollback(cluster, redis=redis_args(server), scale_up_settle_seconds=0)
    assert kept.failed
    admin = server.client()
    assert admin.config_get("maxclients")["maxclients"] == "100"
    [left] = kept["left"]
    assert left["outcome"] == "deferred" and "maxclients stays at 100" in left["reason"]
    redis_entry = next(e for e in ledger_entries(cluster, cluster.incident_id) if e["target"]["type"] == "redis")
    assert redis_entry["state"] == "pending" and "maxclients stays" in redis_entry["deferred"]
    # the offenders came back first, in steps (3 -> 5 -> 6), with Redis checked before each
    assert replicas(cluster) == 6 and len(scale_writes(cluster, mark)) == 2
    scale_entry = next(e for e in ledger_entries(cluster, cluster.incident_id) if e["module"] == "workload_scale")
    assert scale_entry["state"] == "restored" and scale_entry["fields"][0]["stepped"] == [5]

    for conn in held:
        conn.close()
    admin.close()
    done = rollback(cluster, redis=redis_args(server))
    assert not done.failed and done["summary"]["restored"] == 1, done.msg
    assert server.client().config_get("maxclients")["maxclients"] == "50"


class Fleet:
    """Stands in for the offender's pods: holds ``per_pod`` Redis connections for each replica of the Deployment."""

    def __init__(self, kubeapi: Any, server: Any, per_pod: int) -> None:
        self.kubeapi, self.server, self.per_pod = kubeapi, server, per_pod
        self.conns: List[redis.Redis] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def follow(self) -> None:
        want = replicas(self.kubeapi) * self.per_pod
        while len(self.conns) < want:
            conn = redis.Redis(host=self.server.host, port=self.server.port, password=self.server.password,
                               single_connection_client=True)
            conn.ping()
            self.conns.append(conn)

    def run(self) -> None:
        while not self.stop.wait(0.05):
            self.follow()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)
        for conn in self.conns:
            conn.close()


@pytest.fixture
def fleet_of(request: pytest.FixtureRequest) -> Iterator[Callable[..., Fleet]]:
    fleets: List[Fleet] = []

    def start(kubeapi: Any, server: Any, per_pod: int) -> Fleet:
        fleet = Fleet(kubeapi, server, per_pod)
        fleet.follow()
        fleet.thread.start()
        fleets.append(fleet)
        return fleet

    yield start
    for fleet in fleets:
        fleet.close()


def test_scale_up_goes_in_steps_and_stops_when_redis_runs_out_of_headroom(
        cluster: Any, redis_factory: Callable[..., Any], fleet_of: Callable[..., Fleet]) -> None:
    server = redis_factory(maxclients=100)
    mitigate(cluster, "workload_scale", replicas=2, max_reduction_percent=70)
    fleet = fleet_of(cluster, server, 16)  # 2 pods: 32 clients; 3: 48; 5: 80 (the 80% mark of maxclients 100)
    mark = cluster.last_seq()

    stopped = rollback(cluster, redis=redis_args(server), scale_up_settle_seconds=2)
    assert stopped.failed and stopped["changed"]
    assert replicas(cluster) == 5, stopped.msg
    [left] = stopped["left"]
    assert left["outcome"] == "deferred" and "no headroom" in left["reason"]
    assert "scaled up to 3, 5 before stopping" in left["reason"]
    assert len(scale_writes(cluster, mark)) == 2
    [entry] = ledger_entries(cluster, cluster.incident_id)
    assert entry["state"] == "pending" and entry["fields"][0]["stepped"] == [3, 5]

    fleet.close()  # the load is gone: the next rollback finishes from 5, which it set itself (not drift)
    done = rollback(cluster, redis=redis_args(server), scale_up_settle_seconds=0)
    assert not done.failed and done["summary"]["restored"] == 1, done.msg
    assert replicas(cluster) == 6


# --- 3. Redis down does not stop the rest

def test_redis_down_leaves_its_entries_and_restores_the_kubernetes_ones(cluster: Any,
                                                                        redis_factory: Callable[..., Any]) -> None:
    server = redis_factory()
    raise_maxclients(cluster, server, 300)
    mitigate(cluster, "feature_flag", name="trading-api-flags", flags={"redis.retry.aggressive": "false"})
    options = redis_args(server, socket_timeout=1.0)
    server.stop()

    result = rollback(cluster, redis=options)
    assert result.failed
    assert Target(cluster, FLAGS).value(("data", "redis.retry.aggressive")) == "true"
    [left] = result["left"]
    assert left["outcome"] == "skipped" and "cannot be reached" in left["reason"]
    assert "run ansible-playbook" in result.msg


def test_a_saturated_redis_defers_scale_ups_and_what_waits_for_them(cluster: Any,
                                                                   redis_factory: Callable[..., Any]) -> None:
    server = redis_factory(maxclients=20)
    raise_maxclients(cluster, server, 30)
    mitigate(cluster, "feature_flag", name="trading-api-flags", flags={"redis.retry.aggressive": "false"})
    mitigate(cluster, "workload_scale", replicas=3)
    held = [server.client() for _ in range(31)]  # maxclients 30: the 31st is refused
    for conn in held[:-1]:
        conn.ping()
    with pytest.raises(redis.ConnectionError, match="max number of clients"):
        held[-1].ping()

    result = rollback(cluster, redis=redis_args(server))
    assert result.failed
    assert Target(cluster, FLAGS).value(("data", "redis.retry.aggressive")) == "true"
    assert replicas(cluster) == 3  # no scale-up into a Redis that refuses clients
    left = {o["outcome"]: o for o in result["left"]}
    assert set(left) == {"deferred", "blocked"}, result["left"]
    assert "max number of clients" in left["deferred"]["reason"]
    # and maxclients is not lowered before the scale-up it waits for
    assert left["blocked"]["target"].startswith("Redis ") and left["deferred"]["entry_id"] in left["blocked"]["reason"]


def test_redis_entries_match_the_server_not_the_spelling_of_its_address(cluster: Any,
                                                                        redis_factory: Callable[..., Any]) -> None:
    server, other = redis_factory(), redis_factory()
    other.client().config_set("maxclients", "300")  # the other server happens to show the value we set
    raise_maxclients(cluster, server, 300)

    elsewhere = rollback(cluster, redis=redis_args(other, password=other.password))
    assert elsewhere.failed and elsewhere["summary"]["skipped"] == 1
    assert "is not the server this entry changed" in elsewhere.msg
    assert other.client().config_get("maxclients")["maxclients"] == "300"

    respelled = rollback(cluster, redis=redis_args(server, host="localhost"))
    assert not respelled.failed and respelled["summary"]["restored"] == 1, respelled.msg
    assert server.client().config_get("maxclients")["maxclients"] == "200"


# --- 4. the ledger is not a command channel

def forge(kubeapi: Any, entries: List[Dict[str, Any]]) -> None:
    """Entries written straight into the ledger ConfigMap, as anyone who can update ConfigMaps there could."""
    path = "/api/v1/namespaces/redis-storm/configmaps/redis-storm-ledger-%s" % kubeapi.incident_id
    data = {}
    for seq, entry in enumerate(entries, start=50):
        entry = dict({"id": "entry-%04d" % seq, "seq": seq, "state": "applied", "action": "patch"}, **entry)
        data[entry["id"] + ".json"] = json.dumps(entry)
    kubeapi.request("PATCH", path, {"data": data}, token="operator", content_type="application/merge-patch+json")


def field(path: List[str], before: Any, after: Any) -> Dict[str, Any]:
    return {"path": path, "present_before": True, "before": before, "present_after": True, "after": after}


def test_entries_outside_what_mitigations_write_are_refused_by_name(cluster: Any,
                                                                   redis_factory: Callable[..., Any]) -> None:
    server = redis_factory()
    raise_maxclients(cluster, server, 300)  # a real entry, so the ledger exists
    admin = server.client()
    template = Target(cluster, DEPLOYMENT).value(("spec", "template"))
    evil = dict(template, spec={"containers": [{"name": "a", "image": "evil:1"}]})
    cluster.seed([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": "kube-system"},
                   "data": {"Corefile": "mine"}}])
    forge(cluster, [
        {"module": "workload_scale", "target": {"type": "k8s", "apiVersion": "apps/v1", "kind": "Deployment",
                                                "resource": "deployments", "namespace": "trading",
                                                "name": "trading-api"},
         "fields": [field(["spec", "template"], evil, template)]},
        {"module": "redis_runtime_config", "target": {"type": "redis", "endpoint": "x", "run_id": "0" * 40},
         "fields": [field(["dir"], "/tmp", admin.config_get("dir")["dir"])]},
        {"module": "feature_flag", "target": {"type": "k8s", "apiVersion": "v1", "kind": "ConfigMap",
                                              "resource": "configmaps", "namespace": "kube-system", "name": "coredns"},
         "fields": [field(["data", "Corefile"], "evil", "mine")]},
    ])
    dir_before = admin.config_get("dir")["dir"]

    result = rollback(cluster, redis=redis_args(server))
    assert result.failed
    assert Target(cluster, DEPLOYMENT).value(("spec", "template")) == template
    assert admin.config_get("dir")["dir"] == dir_before
    assert Target(cluster, "/api/v1/namespaces/kube-system/configmaps/coredns").value(("data", "Corefile")) == "mine"
    refused = {o["entry_id"]: o["reason"] for o in result["left"] if o["outcome"] == "refused"}
    assert set(refused) == {"entry-0050", "entry-0051", "entry-0052"}, result["left"]
    assert "workload_scale does not change apps/v1 deployments" in refused["entry-0050"]
    assert "Redis directive(s) dir are not in the CONFIG allow-list" in refused["entry-0051"]
    assert "allowed_namespaces" in refused["entry-0052"]
    assert all(r.startswith("ledger entry %s" % i) for i, r in refused.items())
    # the real entry is restored all the same
    assert admin.config_get("maxclients")["maxclients"] == "200"


# --- 5. bounded ledger

FLAGD = {"flags": {"flag-%04d" % i: {"state": "ENABLED", "variants": {"on": True, "off": False},
                                     "defaultVariant": "on", "targeting": {"if": [{"in": ["x" * 40, {"var": "user"}]},
                                                                                   "off", "on"]}}
                   for i in range(1500)}}


def test_a_flagd_change_records_only_the_variant_it_switched(cluster: Any) -> None:
    text = json.dumps(FLAGD, indent=2)
    assert len(text) > 300_000
    cluster.seed([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "flagd", "namespace": "trading"},
                   "data": {"flags.json": text}}])
    mitigate(cluster, "feature_flag", name="flagd", format="flagd", flags={"flag-0007": "off"})
    [entry] = ledger_entries(cluster, cluster.incident_id)
    assert len(json.dumps(entry)) < 2000
    assert [f["path"][-3:] for f in entry["fields"]] == [["flags", "flag-0007", "defaultVariant"]]

    done = rollback(cluster)
    assert not done.failed and done["summary"]["restored"] == 1, done.msg
    assert Target(cluster, "/api/v1/namespaces/trading/configmaps/flagd").value(("data", "flags.json")) == text


def test_an_entry_too_big_for_the_ledger_is_refused_before_anything_is_written(cluster: Any) -> None:
    mark = cluster.last_seq()
    result = run_module("feature_flag", dict(common(cluster), namespace="trading", name="trading-api-flags",
                                             flags={"redis.retry.aggressive": "x" * 40_000}))
    assert result.failed and "more than the 32768 a ledger entry may hold: nothing was changed" in result.msg
    assert cluster.writes(since=mark) == []


def test_a_full_ledger_refuses_the_next_mitigation_before_it_writes(cluster: Any) -> None:
    mitigate(cluster, "feature_flag", name="trading-api-flags", flags={"redis.retry.aggressive": "false"})
    path = "/api/v1/namespaces/redis-storm/configmaps/redis-storm-ledger-%s" % cluster.incident_id
    cluster.request("PATCH", path, {"data": {"notes.txt": "n" * 1_030_000}}, token="operator",
                    content_type="application/merge-patch+json")
    mark = cluster.last_seq()
    result = run_module("workload_scale", dict(common(cluster), namespace="trading", name="trading-api", replicas=3))
    assert result.failed and "over the 983040 it may hold" in result.msg and "nothing was written" in result.msg
    assert cluster.writes(since=mark) == [] and replicas(cluster) == 6
    # closing the open entry still fits
    done = rollback(cluster)
    assert not done.failed and done["summary"]["restored"] == 1, done.msg


def test_restoring_what_is_already_restored_ends_restored(cluster: Any) -> None:
    mitigate(cluster, "ingress_rate_limit", provider="traefik", rps=50)
    # someone already undid it by hand: detached the middleware and deleted it
    cluster.request("PATCH", INGRESS_PATH, {"metadata": {"annotations": {ROUTER: None}}}, token="operator",
                    content_type="application/merge-patch+json")
    cluster.request("DELETE", MIDDLEWARE, token="operator")
    result = rollback(cluster)
    assert not result.failed and result["summary"]["restored"] == 2, result.msg
    assert {e["state"] for e in ledger_entries(cluster, cluster.incident_id)} == {"restored"}
