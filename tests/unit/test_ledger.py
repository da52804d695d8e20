"""The undo ledger: field paths, merge patches, bookkeeping annotations, entries and restore."""

from __future__ import annotations

import json
import re
from typing import Any, Dict

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_server
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.field_paths import ABSENT, get_path, merge_diff, nest
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import (
    Ledger,
    check_incident_id,
    configmap_name,
    make_field,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import TRAEFIK_ROUTER_MIDDLEWARES
from ansible_collections.fintech.redis_storm.plugins.module_utils.restore import overlay_of, restore_entry
from ansible_collections.fintech.redis_storm.plugins.module_utils.rollback import depends_on, restore_order
from ansible_collections.fintech.redis_storm.plugins.module_utils.targets import (
    ENTRIES_KEY,
    INCIDENT_KEY,
    ObjectRef,
    bookkeeping_patch,
    redis_target,
)

from tests.helpers.fake_kube import FakeKube, merge_patch

ANNOTATION = ("metadata", "annotations", "nginx.ingress.kubernetes.io/limit-rps")
INGRESS = ObjectRef("networking.k8s.io/v1", "Ingress", "ingresses", "trading", "api")


@pytest.mark.parametrize("incident_id, ok", [
    ("storm-20261126-0545", True), ("inc.1", True), ("Inc-1", False), ("-x", False), ("a" * 41, False),
    ("", False), ("a/b", False)])
def test_incident_id_must_fit_object_names(incident_id: str, ok: bool) -> None:
    if ok:
        assert configmap_name(incident_id) == "redis-storm-ledger-" + incident_id
    else:
        with pytest.raises(StormError, match="incident_id"):
            check_incident_id(incident_id)


def test_get_path_tells_absent_from_null() -> None:
    obj = {"spec": {"a": None, "b": {"c": 1}}}
    assert get_path(obj, ["spec", "a"]) == (True, None)
    assert get_path(obj, ["spec", "x"]) == (False, None)
    assert get_path(obj, ["spec", "b", "c", "d"]) == (False, None)


def test_nest_leaves_out_absent_values() -> None:
    assert nest({("a", "b"): 1, ("a", "c"): ABSENT, ("d",): "x"}) == {"a": {"b": 1}, "d": "x"}


@pytest.mark.parametrize("live, wanted", [
    ({"consecutive5xxErrors": 5, "interval": "10s"}, {"consecutive5xxErrors": 2}),
    ({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}),
    (None, {"a": 1}),
    ("10", "5"),
    ({"a": 1}, ABSENT),
])
def test_merge_diff_makes_the_value_exactly_the_wanted_one(live: Any, wanted: Any) -> None:
    patched = merge_patch({"x": live} if live is not None else {}, {"x": merge_diff(live, wanted)})
    assert patched.get("x", ABSENT) == wanted


def test_bookkeeping_adds_and_removes_entry_ids() -> None:
    obj: Dict[str, Any] = {"metadata": {}}
    obj = merge_patch(obj, bookkeeping_patch(obj, "inc-1", add="entry-0001"))
    obj = merge_patch(obj, bookkeeping_patch(obj, "inc-1", add="entry-0003"))
    assert obj["metadata"]["annotations"] == {INCIDENT_KEY: "inc-1", ENTRIES_KEY: "entry-0001,entry-0003"}
    assert bookkeeping_patch(obj, "inc-1", add="entry-0003") == {}
    obj = merge_patch(obj, bookkeeping_patch(obj, "inc-1", remove="entry-0001"))
    assert obj["metadata"]["annotations"][ENTRIES_KEY] == "entry-0003"
    obj = merge_patch(obj, bookkeeping_patch(obj, "inc-1", remove="entry-0003"))
    assert obj["metadata"].get("annotations") == {}


def seeded() -> FakeKube:
    kube = FakeKube()
    kube.put(INGRESS.path, {"metadata": {"name": "api", "namespace": "trading", "annotations": {"owner": "team"}}})
    return kube


def apply(kube: FakeKube, ledger: Ledger, value: Any) -> Dict[str, Any]:
    """What mitigation does, by hand: record pending, write, mark applied."""
    live = kube.request("GET", INGRESS.path)
    present, before = get_path(live, ANNOTATION)
    entry = ledger.record("ingress_rate_limit", INGRESS.to_target(), [make_field(ANNOTATION, present, before, value)])
    patch = merge_patch({}, {"metadata": {"annotations": {ANNOTATION[2]: value}}})
    kube.request("PATCH", INGRESS.path, body=merge_patch(patch, bookkeeping_patch(live, "inc-1", add=entry["id"])))
    return ledger.set_state(entry["id"], "applied")


def annotations(kube: FakeKube) -> Dict[str, str]:
    return dict(kube.objects[INGRESS.path]["metadata"].get("annotations") or {})


def test_entries_are_numbered_and_stored_one_document_each() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    first, second = apply(kube, ledger, "10"), apply(kube, ledger, "5")
    assert (first["id"], second["id"]) == ("entry-0001", "entry-0002")
    cm = kube.objects[ledger.path]
    assert cm["metadata"]["labels"] == {"app.kubernetes.io/managed-by": "fintech.redis_storm", INCIDENT_KEY: "inc-1"}
    stored = json.loads(cm["data"]["entry-0002.json"])
    assert stored["state"] == "applied" and stored["applied_at"]
    assert stored["fields"] == [{"path": list(ANNOTATION), "present_before": True, "before": "10",
                                 "present_after": True, "after": "5"}]
    assert [e["id"] for e in ledger.open_entries(INGRESS.to_target())] == ["entry-0002", "entry-0001"]
    assert annotations(kube)[ENTRIES_KEY] == "entry-0001,entry-0002"


def test_restore_newest_first_brings_back_the_original_and_is_idempotent() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    apply(kube, ledger, "10")
    apply(kube, ledger, "5")
    outcomes = [restore_entry(ledger, e) for e in ledger.open_entries()]
    assert [o["outcome"] for o in outcomes] == ["restored", "restored"]
    assert annotations(kube) == {"owner": "team"}  # the key we added is gone, and so is our bookkeeping
    assert ledger.open_entries() == []
    again = restore_entry(ledger, ledger.entries()[0])
    assert again["outcome"] == "noop" and not again["changed"]


def test_drift_is_refused_naming_field_set_and_found_unless_forced() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    obj = kube.objects[INGRESS.path]
    obj["metadata"]["annotations"][ANNOTATION[2]] = "50"  # a human edits it
    kube.put(INGRESS.path, obj)
    writes = len(kube.writes)
    outcome = restore_entry(ledger, entry)
    assert outcome["outcome"] == "drifted" and not outcome["changed"]
    assert "nginx.ingress.kubernetes.io/limit-rps" in outcome["msg"] and '"10"' in outcome["msg"]
    assert '"50"' in outcome["msg"] and "force" in outcome["msg"]
    assert len(kube.writes) == writes
    forced = restore_entry(ledger, entry, force=True)
    assert forced["outcome"] == "restored"
    assert ANNOTATION[2] not in annotations(kube)


def test_a_field_already_back_at_its_original_is_not_drift() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    obj = kube.objects[INGRESS.path]
    del obj["metadata"]["annotations"][ANNOTATION[2]]
    kube.put(INGRESS.path, obj)
    outcome = restore_entry(ledger, entry)
    assert outcome["outcome"] == "restored" and not outcome["changed"]
    assert ENTRIES_KEY not in annotations(kube)


def test_pending_entry_is_judged_by_the_live_value() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    never = ledger.record("ingress_rate_limit", INGRESS.to_target(), [make_field(ANNOTATION, False, None, "10")])
    outcome = restore_entry(ledger, never)
    assert outcome["outcome"] == "unapplied" and not outcome["changed"]
    assert ledger.entries()[0]["state"] == "failed"
    landed = ledger.record("ingress_rate_limit", INGRESS.to_target(), [make_field(ANNOTATION, False, None, "10")])
    kube.request("PATCH", INGRESS.path, body={"metadata": {"annotations": {ANNOTATION[2]: "10"}}})
    outcome = restore_entry(ledger, landed)
    assert outcome["outcome"] == "restored" and outcome["changed"]
    assert ANNOTATION[2] not in annotations(kube)


def test_dry_run_restore_writes_nothing() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    writes = list(kube.writes)
    outcome = restore_entry(ledger, entry, dry_run=True)
    assert outcome["outcome"] == "restored" and outcome["changed"]
    assert kube.writes == writes and ledger.open_entries()


def test_missing_object_is_reported_and_closed() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    del kube.objects[INGRESS.path]
    outcome = restore_entry(ledger, entry)
    assert outcome["outcome"] == "missing" and "no longer exists" in outcome["msg"]
    assert ledger.entries()[0]["state"] == "missing"


def test_created_object_is_deleted_on_restore_and_drift_blocks_it() -> None:
    kube = FakeKube()
    ref = ObjectRef("traefik.io/v1alpha1", "Middleware", "middlewares", "trading", "storm-limit")
    ledger = Ledger(kube, "inc-1")
    field = make_field(("spec", "rateLimit"), False, None, {"average": 10})
    entry = ledger.record("ingress_rate_limit", ref.to_target(), [field], action="create")
    kube.request("POST", ref.collection_path, body={"metadata": {"name": "storm-limit"},
                                                    "spec": {"rateLimit": {"average": 10}}})
    ledger.set_state(entry["id"], "applied")
    kube.objects[ref.path]["spec"]["rateLimit"]["average"] = 99
    assert restore_entry(ledger, ledger.entries()[0])["outcome"] == "drifted"
    kube.objects[ref.path]["spec"]["rateLimit"]["average"] = 10
    assert restore_entry(ledger, ledger.entries()[0])["outcome"] == "restored"
    assert ref.path not in kube.objects


def test_ledger_write_retries_conflicts() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    apply(kube, ledger, "10")
    kube.fail("PUT", ledger.path, 409, times=2)
    assert ledger.record("ingress_rate_limit", INGRESS.to_target(), [])["id"] == "entry-0002"


def test_ledger_gives_up_after_bounded_conflicts() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    apply(kube, ledger, "10")
    kube.fail("PUT", ledger.path, 409, times=10)
    with pytest.raises(StormError, match="conflicts"):
        ledger.record("ingress_rate_limit", INGRESS.to_target(), [])


def test_missing_ledger_namespace_says_how_to_fix_it() -> None:
    kube = FakeKube()
    kube.fail("POST", "/configmaps", 404)
    with pytest.raises(StormError, match="namespace redis-storm does not exist"):
        Ledger(kube, "inc-1").record("ingress_rate_limit", INGRESS.to_target(), [])


class FakeRedis:
    def __init__(self, config: Dict[str, str]) -> None:
        self.config = config

    def config_get(self, name: str) -> Dict[str, str]:
        return {name: self.config[name]} if name in self.config else {}

    def config_set(self, name: str, value: str) -> None:
        self.config[name] = value


def test_redis_entries_restore_with_config_set_or_are_skipped() -> None:
    kube = FakeKube()
    ledger = Ledger(kube, "inc-1")
    entry = ledger.record("redis_runtime_config", redis_target("10.0.0.5:6379"),
                          [make_field(("timeout",), True, "0", "30")])
    ledger.set_state(entry["id"], "applied")
    entry = ledger.entries()[0]
    assert restore_entry(ledger, entry)["outcome"] == "skipped"
    server = FakeRedis({"timeout": "45"})
    assert restore_entry(ledger, entry, redis=server)["outcome"] == "drifted"
    server.config["timeout"] = "30"
    outcome = restore_entry(ledger, entry, redis=server)
    assert outcome["outcome"] == "restored" and server.config["timeout"] == "0"


def test_restore_retries_when_the_object_changes_between_read_and_write() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    kube.fail("PATCH", INGRESS.path, 409)
    outcome = restore_entry(ledger, entry)
    assert outcome["outcome"] == "restored" and ANNOTATION[2] not in annotations(kube)


def test_bookkeeping_of_another_incident_is_left_alone_on_restore() -> None:
    obj = merge_patch({"metadata": {}}, bookkeeping_patch(None, "inc-2", add="entry-0001"))
    assert bookkeeping_patch(obj, "inc-1", remove="entry-0001") == {}
    taken = bookkeeping_patch(obj, "inc-1", add="entry-0004")
    assert taken["metadata"]["annotations"] == {INCIDENT_KEY: "inc-1", ENTRIES_KEY: "entry-0004"}


def test_dry_run_judges_older_entries_against_what_the_newer_would_put_back() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    apply(kube, ledger, "10")
    apply(kube, ledger, "5")
    newer, older = ledger.open_entries(INGRESS.to_target())
    writes = list(kube.writes)
    first = restore_entry(ledger, newer, dry_run=True)
    assert first["outcome"] == "restored" and first["fields"][0]["restored"] == "10"
    assert restore_entry(ledger, older, dry_run=True)["outcome"] == "drifted"  # the live value is still "5"
    second = restore_entry(ledger, older, dry_run=True, overlay=overlay_of(first))
    assert second["outcome"] == "restored" and second["changed"] and second["drift"] == []
    assert second["fields"] == [{"path": list(ANNOTATION), "live": "10", "restored": None}]
    assert kube.writes == writes and len(ledger.open_entries()) == 2
    assert annotations(kube)[ANNOTATION[2]] == "5"


def test_overlay_removes_a_field_the_newer_entry_would_remove() -> None:
    kube = seeded()
    ledger = Ledger(kube, "inc-1")
    entry = apply(kube, ledger, "10")
    # a newer restore that would remove the annotation leaves nothing to put back: not drift, no change
    outcome = restore_entry(ledger, entry, dry_run=True, overlay={ANNOTATION: (False, None)})
    assert outcome["outcome"] == "restored" and not outcome["changed"]
    assert annotations(kube)[ANNOTATION[2]] == "10"


def test_redis_dry_run_uses_the_overlay_too() -> None:
    kube = FakeKube()
    ledger = Ledger(kube, "inc-1")
    target = redis_target("10.0.0.5:6379")
    for before, after in (("0", "30"), ("30", "10")):
        entry = ledger.record("redis_runtime_config", target, [make_field(("timeout",), True, before, after)])
        ledger.set_state(entry["id"], "applied")
    server = FakeRedis({"timeout": "10"})
    newer, older = ledger.open_entries(target)
    first = restore_entry(ledger, newer, dry_run=True, redis=server)
    second = restore_entry(ledger, older, dry_run=True, redis=server, overlay=overlay_of(first))
    assert second["outcome"] == "restored" and second["fields"] == [{"path": ["timeout"], "live": "30",
                                                                     "restored": "0"}]
    assert server.config["timeout"] == "10"


@pytest.mark.parametrize("module, target, path, reason", [
    ("workload_scale", ObjectRef("apps/v1", "Deployment", "deployments", "trading", "api").to_target(),
     ["spec", "template"], "workload_scale does not change apps/v1 deployments"),
    ("ingress_rate_limit", INGRESS.to_target(), ["spec", "rules"], "does not own field(s) spec.rules of a Ingress"),
    ("redis_runtime_config", redis_target("10.0.0.5:6379"), ["dir"], "Redis directive(s) dir are not in the CONFIG"),
])
def test_record_refuses_what_no_mitigation_writes_before_writing(module: str, target: Dict[str, Any],
                                                                  path: list, reason: str) -> None:
    kube = seeded()
    with pytest.raises(StormError, match=re.escape(reason)):
        Ledger(kube, "inc-1").record(module, target, [make_field(path, True, "a", "b")])
    assert kube.writes == []


def test_a_field_records_the_outermost_map_its_write_creates() -> None:
    rule = {"spec": {"host": "redis", "trafficPolicy": {"connectionPool": {"tcp": {"connectTimeout": "1s"}}}}}
    outlier = ["spec", "trafficPolicy", "outlierDetection", "interval"]
    assert make_field(outlier, False, None, "5s", rule)["created"] == ["spec", "trafficPolicy", "outlierDetection"]
    assert "created" not in make_field(["spec", "trafficPolicy", "connectionPool", "tcp", "maxConnections"],
                                       False, None, 20, rule)
    assert make_field(outlier, False, None, "5s", {"spec": {"host": "redis"}})["created"] == ["spec", "trafficPolicy"]
    assert "created" not in make_field(["metadata", "annotations", "a"], True, "1", "2", {})


def test_a_hand_made_created_map_outside_the_field_is_refused() -> None:
    field = dict(make_field(list(ANNOTATION), False, None, "50"), created=["spec"])
    with pytest.raises(StormError, match="names spec as a map it created"):
        Ledger(seeded(), "inc-1").record("ingress_rate_limit", INGRESS.to_target(), [field])


def test_restore_removes_the_annotations_map_the_write_created() -> None:
    kube = seeded()
    ingress = kube.objects[INGRESS.path]
    ingress["metadata"].pop("annotations", None)
    ledger = Ledger(kube, "inc-1")
    entry = ledger.record("ingress_rate_limit", INGRESS.to_target(),
                          [make_field(list(ANNOTATION), False, None, "50", ingress)])
    kube.request("PATCH", INGRESS.path, body={"metadata": {"annotations": {ANNOTATION[-1]: "50"}}})
    ledger.set_state(entry["id"], "applied")
    assert restore_entry(ledger, ledger.open_entries()[0])["outcome"] == "restored"
    assert "annotations" not in kube.objects[INGRESS.path]["metadata"]


@pytest.mark.parametrize("recorded, found, replids, spelled, match", [
    ({"endpoint": "127.0.0.1:6379", "run_id": "a", "replid": "r"}, "a", ("x", ""), "localhost:6379", "same"),
    ({"endpoint": "127.0.0.1:6379", "run_id": "a", "replid": "r"}, "b", ("r", ""), "127.0.0.1:6379", "restarted"),
    ({"endpoint": "127.0.0.1:6379", "run_id": "a", "replid": "r"}, "b", ("x", "r"), "127.0.0.1:6379", "restarted"),
    ({"endpoint": "127.0.0.1:6379", "run_id": "a", "replid": "r"}, "b", ("x", ""), "127.0.0.1:6379", "other"),
    ({"endpoint": "127.0.0.1:6379"}, "b", ("x", ""), "127.0.0.1:6379", "same"),
    ({"endpoint": "127.0.0.1:6379"}, "b", ("x", ""), "localhost:6379", "other"),
])
def test_a_redis_entry_matches_the_server_by_its_identity(recorded: Dict[str, Any], found: str, replids: tuple,
                                                          spelled: str, match: str) -> None:
    assert redis_server.match(dict(recorded, type="redis"), {"run_id": found}, replids, spelled) == match


def test_rollback_order_puts_a_created_middleware_after_the_ingress_that_names_it_even_when_older() -> None:
    ingress = {"id": "entry-0001", "seq": 1, "module": "ingress_rate_limit", "action": "patch",
               "target": INGRESS.to_target(),
               "fields": [make_field(["metadata", "annotations", TRAEFIK_ROUTER_MIDDLEWARES], False, None,
                                     "trading-redis-storm-ratelimit-api@kubernetescrd")]}
    middleware = {"id": "entry-0002", "seq": 2, "module": "ingress_rate_limit", "action": "create",
                  "target": ObjectRef("traefik.io/v1alpha1", "Middleware", "middlewares", "trading",
                                      "redis-storm-ratelimit-api").to_target(),
                  "fields": [make_field(["spec", "rateLimit"], False, None, {"average": 5})]}
    flag = {"id": "entry-0003", "seq": 3, "module": "feature_flag", "action": "patch",
            "target": ObjectRef("v1", "ConfigMap", "configmaps", "trading", "flags").to_target(),
            "fields": [make_field(["data", "retry"], True, "true", "false")]}
    newest_first = [flag, middleware, ingress]
    assert [e["id"] for e in restore_order(newest_first)] == ["entry-0003", "entry-0001", "entry-0002"]
    assert depends_on(middleware, newest_first) == [ingress]
