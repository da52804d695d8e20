"""The emulator's patch and selector logic, case by case (the HTTP behaviour is in tests/integration)."""

from __future__ import annotations

from typing import Any

import pytest

from stormctl.sandbox.kubeapi.patch import json_patch, merge_patch, strategic_merge_patch
from stormctl.sandbox.kubeapi.rbac import Identity, authorize
from stormctl.sandbox.kubeapi.selectors import field_matcher, label_matcher, selector_string
from stormctl.sandbox.kubeapi.status import ApiError


@pytest.mark.parametrize(("target", "patch", "expected"), [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
])
def test_merge_patch_follows_rfc_7386(target: Any, patch: Any, expected: Any) -> None:
    assert merge_patch(target, patch) == expected


def _containers(*containers: dict[str, Any]) -> dict[str, Any]:
    return {"spec": {"template": {"spec": {"containers": list(containers)}}}}


@pytest.mark.parametrize(("target", "patch", "expected"), [
    (_containers({"name": "app", "image": "a:1"}, {"name": "side", "image": "s:1"}),
     _containers({"name": "side", "image": "s:2"}),
     _containers({"name": "app", "image": "a:1"}, {"name": "side", "image": "s:2"})),
    (_containers({"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]}),
     _containers({"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]}),
     _containers({"name": "app", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "3"},
                                         {"name": "C", "value": "4"}]})),
    (_containers({"name": "app", "env": [{"name": "A", "value": "1"}]}),
     _containers({"name": "app", "env": [{"name": "A", "$patch": "delete"}]}),
     _containers({"name": "app", "env": []})),
    ({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "Synced", "status": "True"}]}},
     {"status": {"conditions": [{"type": "Ready", "status": "True"}]}},
     {"status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "Synced", "status": "True"}]}}),
    ({"spec": {"rules": [{"host": "a"}, {"host": "b"}]}}, {"spec": {"rules": [{"host": "c"}]}},
     {"spec": {"rules": [{"host": "c"}]}}),
    ({"metadata": {"finalizers": ["a"]}}, {"metadata": {"finalizers": ["b", "a"]}},
     {"metadata": {"finalizers": ["a", "b"]}}),
    ({"metadata": {"labels": {"a": "1", "b": "2"}}}, {"metadata": {"labels": {"a": None}}},
     {"metadata": {"labels": {"b": "2"}}}),
    ({"spec": {"selector": {"a": "1"}}}, {"spec": {"selector": {"$patch": "replace", "b": "2"}}},
     {"spec": {"selector": {"b": "2"}}}),
    ({"spec": {"template": {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80}]}]}}}},
     _containers({"name": "app", "ports": [{"containerPort": 8080}]}),
     {"spec": {"template": {"spec": {"containers": [{"name": "app", "ports": [{"containerPort": 80},
                                                                              {"containerPort": 8080}]}]}}}}),
])
def test_strategic_merge_patch_merges_keyed_lists(target: Any, patch: Any, expected: Any) -> None:
    assert strategic_merge_patch(target, patch) == expected


DOC = {"spec": {"replicas": 3, "list": [1, 2]}, "metadata": {"annotations": {"a/b": "x"}}}


@pytest.mark.parametrize(("ops", "expected"), [
    ([{"op": "replace", "path": "/spec/replicas", "value": 1}], {"replicas": 1, "list": [1, 2]}),
    ([{"op": "add", "path": "/spec/list/-", "value": 3}], {"replicas": 3, "list": [1, 2, 3]}),
    ([{"op": "add", "path": "/spec/list/0", "value": 0}], {"replicas": 3, "list": [0, 1, 2]}),
    ([{"op": "remove", "path": "/spec/list/1"}], {"replicas": 3, "list": [1]}),
    ([{"op": "move", "from": "/spec/replicas", "path": "/spec/count"}], {"count": 3, "list": [1, 2]}),
    ([{"op": "copy", "from": "/spec/replicas", "path": "/spec/count"}], {"replicas": 3, "count": 3, "list": [1, 2]}),
    ([{"op": "test", "path": "/spec/replicas", "value": 3}], {"replicas": 3, "list": [1, 2]}),
])
def test_json_patch_operations(ops: list[dict[str, Any]], expected: Any) -> None:
    assert json_patch(DOC, ops)["spec"] == expected
    assert DOC["spec"] == {"replicas": 3, "list": [1, 2]}, "the original is never changed"


def test_json_patch_escapes_and_failures() -> None:
    patched = json_patch(DOC, [{"op": "replace", "path": "/metadata/annotations/a~1b", "value": "y"}])
    assert patched["metadata"]["annotations"] == {"a/b": "y"}
    for ops, code in [([{"op": "test", "path": "/spec/replicas", "value": True}], 422),
                      ([{"op": "test", "path": "/spec/replicas", "value": "3"}], 422),
                      ([{"op": "remove", "path": "/spec/missing"}], 422),
                      ([{"op": "replace", "path": "/nope/deeper", "value": 1}], 422),
                      ([{"op": "add", "path": "/spec/list/9", "value": 1}], 422),
                      ([{"op": "frobnicate", "path": "/spec"}], 400),
                      ({"op": "add"}, 400)]:
        with pytest.raises(ApiError) as info:
            json_patch(DOC, ops)
        assert info.value.code == code, ops


LABELS = {"app": "api", "tier": "web", "canary": ""}


@pytest.mark.parametrize(("selector", "matches"), [
    ("app=api", True), ("app==api", True), ("app=worker", False), ("app!=worker", True), ("missing!=x", True),
    ("app in (api,worker)", True), ("app in (worker)", False), ("app notin (worker)", True),
    ("missing notin (x)", True), ("tier", True), ("missing", False), ("!missing", True), ("!tier", False),
    ("app=api,tier=web", True), ("app=api, tier=db", False), ("canary=", True), ("", True),
])
def test_label_selectors(selector: str, matches: bool) -> None:
    assert label_matcher(selector)({"metadata": {"labels": LABELS}}) is matches


@pytest.mark.parametrize("selector", ["app in api", "=x", "app in (a", "app = = b"])
def test_bad_label_selectors_are_400(selector: str) -> None:
    with pytest.raises(ApiError) as info:
        label_matcher(selector)
    assert info.value.code == 400


def test_field_selectors_and_selector_strings() -> None:
    pod = {"metadata": {"name": "a", "namespace": "n"}, "status": {"podIP": "127.1.0.1", "phase": "Running"}}
    supported = ("metadata.name", "metadata.namespace", "status.podIP", "status.phase")
    assert field_matcher("status.podIP=127.1.0.1,status.phase!=Pending", supported)(pod)
    assert not field_matcher("metadata.name==b", supported)(pod)
    with pytest.raises(ApiError):
        field_matcher("spec.secret=1", supported)
    assert selector_string({"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["web", "api"]}, {"key": "x", "operator": "DoesNotExist"}]}) == \
        "a=1,b=2,tier in (api,web),!x"


@pytest.mark.parametrize(("rule", "request_", "allowed"), [
    ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
     ("get", "apps", "deployments", "", "ns", "x"), True),
    ({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]},
     ("get", "apps", "deployments", "scale", "ns", "x"), False),
    ({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["patch"]},
     ("patch", "apps", "deployments", "scale", "ns", "x"), True),
    ({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}, ("delete", "", "pods", "", "ns", "x"), True),
    ({"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}, ("delete", "apps", "deployments", "", "ns", "x"), False),
    ({"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["get"]},
     ("get", "apps", "statefulsets", "scale", "ns", "x"), True),
    ({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["flags"]},
     ("get", "", "configmaps", "", "ns", "flags"), True),
    ({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"], "resourceNames": ["flags"]},
     ("list", "", "configmaps", "", "ns", ""), False),
])
def test_rbac_rule_matching(rule: dict[str, Any], request_: tuple[str, ...], allowed: bool) -> None:
    verb, group, resource, sub, namespace, name = request_
    assert authorize(Identity("u", [rule]), verb, group, resource, sub, namespace, name) is allowed
