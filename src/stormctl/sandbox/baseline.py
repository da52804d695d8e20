"""Put the sandbox's cluster back to its baseline world: undo what drills and tests changed.

Every object of the baseline (scenarios/world.yml) gets its labels, annotations, spec and data
back, written only when a server-side dry run shows it differs; incident ledgers, Leases and
Middlewares or DestinationRules that the baseline does not have are deleted.
"""

from __future__ import annotations

import copy
import time
import urllib.error
from typing import Any

from stormctl.sandbox import cluster
from stormctl.sandbox.fleet.world import manifests
from stormctl.sandbox.scenario import load_world

LEDGER_NAMESPACE = "redis-storm"
PLURALS = {
    "ConfigMap": "configmaps",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "Ingress": "ingresses",
    "HorizontalPodAutoscaler": "horizontalpodautoscalers",
    "ScaledObject": "scaledobjects",
    "DestinationRule": "destinationrules",
    "Middleware": "middlewares",
    "Lease": "leases",
}
# Kinds whose extra objects (not in the baseline) a mitigation may have created.
EXTRA_KINDS = (("networking.istio.io/v1", "DestinationRule"), ("traefik.io/v1alpha1", "Middleware"))
COMPARED = ("spec", "data")
# No mitigation touches these (and a Service's clusterIP is the server's, not the baseline's).
SKIPPED_KINDS = ("Namespace", "Service")
# Annotations the cluster's own controllers keep on an object (the Deployment controller's revision).
CONTROLLER_ANNOTATIONS = ("deployment.kubernetes.io/",)
ATTEMPTS = 5


def _collection(api_version: str, kind: str, namespace: str) -> str:
    prefix = "/api/v1" if api_version == "v1" else "/apis/%s" % api_version
    return "%s/namespaces/%s/%s" % (prefix, namespace, PLURALS[kind])


def _path(obj: dict[str, Any]) -> str:
    meta = obj["metadata"]
    return "%s/%s" % (_collection(obj["apiVersion"], obj["kind"], meta["namespace"]), meta["name"])


def _ours(annotations: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in annotations.items() if not k.startswith(CONTROLLER_ANNOTATIONS)}


def _view(obj: dict[str, Any]) -> tuple[Any, ...]:
    meta = obj.get("metadata") or {}
    return (meta.get("labels") or {}, _ours(meta.get("annotations") or {}), *(obj.get(k) for k in COMPARED))


def _desired(current: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    desired = copy.deepcopy(current)
    meta = desired["metadata"]
    kept = {k: v for k, v in (meta.get("annotations") or {}).items() if k not in _ours(meta.get("annotations") or {})}
    meta["labels"] = dict(baseline["metadata"].get("labels") or {})
    meta["annotations"] = dict(baseline["metadata"].get("annotations") or {}, **kept)
    for key in COMPARED:
        if key in baseline:
            desired[key] = copy.deepcopy(baseline[key])
        else:
            desired.pop(key, None)
    return desired


def _restore_one(api: str, token: str, baseline: dict[str, Any], ca_file: str | None = None) -> bool:
    """True when the object had drifted and was written back."""
    url = api + _path(baseline)
    for _ in range(ATTEMPTS):
        try:
            current = cluster.http_json(url, token, ca_file=ca_file)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
            collection = api + _collection(baseline["apiVersion"], baseline["kind"], baseline["metadata"]["namespace"])
            cluster.http_json(collection, token, ca_file=ca_file, method="POST", body=baseline)
            return True
        desired = _desired(current, baseline)
        try:
            # A dry run returns the object as the server would store it (defaults applied): compare that.
            preview = cluster.http_json(url + "?dryRun=All", token, ca_file=ca_file, method="PUT", body=desired)
            if _view(preview) == _view(current):
                return False
            cluster.http_json(url, token, ca_file=ca_file, method="PUT", body=desired)
            return True
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # someone (the fleet's controllers) wrote in between: read again
                raise
    raise RuntimeError("%s kept changing while it was being restored" % url)


def _delete(api: str, token: str, path: str, ca_file: str | None = None) -> None:
    try:
        cluster.http_json(api + path, token, ca_file=ca_file, method="DELETE")
    except urllib.error.HTTPError as exc:
        if exc.code != 404:
            raise


def restore(api: str, token: str, ca_file: str | None = None, settle: float = 6.0, timeout: float = 60.0) \
        -> dict[str, list[str]]:
    """Restore the baseline world through the kube API with an admin `token`; returns what changed.

    Autoscalers that still see the last storm's load may scale a restored workload straight back
    up, so after a change it restores again until the cluster has stayed at its baseline for
    `settle` seconds (an HPA acts every few seconds), or fails after `timeout`.
    """
    changes = _restore_pass(api, token, ca_file)
    if not changes["restored"] and not changes["deleted"]:
        return changes
    deadline = time.monotonic() + timeout
    quiet_since = time.monotonic()
    again = changes
    while time.monotonic() - quiet_since < settle:
        if time.monotonic() > deadline:
            raise RuntimeError(
                "the cluster kept drifting from its baseline for %.0f s (an autoscaler keeps scaling %s)"
                % (timeout, ", ".join(again["restored"]))
            )
        time.sleep(0.5)
        again = _restore_pass(api, token, ca_file)
        if again["restored"]:
            quiet_since = time.monotonic()
            changes["restored"] = sorted(set(changes["restored"]) | set(again["restored"]))
    return changes


def _restore_pass(api: str, token: str, ca_file: str | None = None) -> dict[str, list[str]]:
    objects = [obj for obj in manifests(load_world()) if obj["kind"] not in SKIPPED_KINDS]
    restored = [_path(obj) for obj in objects if _restore_one(api, token, obj, ca_file)]
    deleted: list[str] = []
    for api_version, kind in (("v1", "ConfigMap"), ("coordination.k8s.io/v1", "Lease")):
        collection = _collection(api_version, kind, LEDGER_NAMESPACE)
        for item in (cluster.http_json(api + collection, token, ca_file=ca_file) or {}).get("items") or []:
            deleted.append("%s/%s" % (collection, item["metadata"]["name"]))
    known = {_path(obj) for obj in objects}
    namespaces = {obj["metadata"]["namespace"] for obj in objects}
    for api_version, kind in EXTRA_KINDS:
        for namespace in sorted(namespaces):
            collection = _collection(api_version, kind, namespace)
            try:
                items = (cluster.http_json(api + collection, token, ca_file=ca_file) or {}).get("items") or []
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    continue
                raise
            for item in items:
                path = "%s/%s" % (collection, item["metadata"]["name"])
                if path not in known:
                    deleted.append(path)
    for path in deleted:
        _delete(api, token, path, ca_file)
    return {"restored": restored, "deleted": deleted}
