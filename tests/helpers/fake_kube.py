"""An in-memory stand-in for ``k8s_client.Kube`` for unit tests of the ledger and mitigation logic.

It keeps objects by API path and answers like the API server where the logic depends on it:
404 for a missing object, 409 when a PUT (or a PATCH carrying ``metadata.resourceVersion``)
names a stale resourceVersion or a POST names an existing object, JSON merge patch, the
``/scale`` subresource of workloads, ``dryRun=All`` (validated, never stored). ``writes`` lists
every write that was stored; ``fail`` makes the next matching requests fail with a status.
Integration tests use the real emulator instead (``tests/fixtures/kubeapi.py``).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Optional, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KubeApiError, api_error


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class FakeKube:
    identity = "tester"

    def __init__(self) -> None:
        self.objects: Dict[str, Dict[str, Any]] = {}
        self.version = 100
        self.writes: List[Tuple[str, str, bool]] = []
        self.failures: List[Tuple[str, str, int, bool]] = []
        self.before_write: Optional[Callable[[str, str], None]] = None

    def put(self, path: str, obj: Dict[str, Any]) -> Dict[str, Any]:
        """Seed (or overwrite, like a human would) an object."""
        self.version += 1
        stored = copy.deepcopy(obj)
        stored.setdefault("metadata", {})["resourceVersion"] = str(self.version)
        self.objects[path] = stored
        return stored

    def fail(self, method: str, path_part: str, status: int, times: int = 1, exact: bool = False) -> None:
        """Make the next ``times`` requests of ``method`` whose path contains ``path_part`` (or is it,
        with ``exact``) fail with ``status``."""
        self.failures.extend([(method, path_part, status, exact)] * times)

    def _check_failure(self, method: str, path: str) -> None:
        for index, (m, part, status, exact) in enumerate(self.failures):
            if m == method and (path == part if exact else part in path):
                del self.failures[index]
                raise api_error(method, path, status, {"message": "injected", "reason": "Injected"})

    def get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self.request("GET", path, query=query)

    def find(self, path: str) -> Optional[Dict[str, Any]]:
        try:
            return self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def _list(self, collection: str, selector: Optional[str]) -> List[Dict[str, Any]]:
        """Objects directly in a namespaced collection path, matching an ``a=b`` label selector."""
        key, _, value = (selector or "").partition("=")
        found = []
        for path, obj in sorted(self.objects.items()):
            if path.rsplit("/", 1)[0] != collection:
                continue
            if key and ((obj.get("metadata") or {}).get("labels") or {}).get(key) != value:
                continue
            found.append(copy.deepcopy(obj))
        return found

    def request(self, method: str, path: str, body: Optional[Any] = None, query: Optional[Dict[str, Any]] = None,
                content_type: Optional[str] = None) -> Dict[str, Any]:
        if method != "GET" and self.before_write is not None:
            self.before_write(method, path)
        self._check_failure(method, path)
        dry = bool(query and query.get("dryRun") == "All")
        scale = path.endswith("/scale")
        base = path[: -len("/scale")] if scale else path
        if method == "GET":
            if base not in self.objects and path.split("/")[-3] == "namespaces":
                return {"items": self._list(path, (query or {}).get("labelSelector")), "metadata": {}}
            if base not in self.objects:
                raise api_error(method, path, 404, {"message": "not found"})
            obj = copy.deepcopy(self.objects[base])
            if scale:
                return {"kind": "Scale", "metadata": {"name": obj["metadata"]["name"],
                                                      "resourceVersion": obj["metadata"]["resourceVersion"]},
                        "spec": {"replicas": obj["spec"]["replicas"]}, "status": {"replicas": obj["spec"]["replicas"]}}
            return obj
        if method == "POST":
            assert body is not None
            full = path + "/" + body["metadata"]["name"]
            if full in self.objects:
                raise api_error(method, full, 409, {"message": "already exists", "reason": "AlreadyExists"})
            if dry:
                return dict(body)
            self.writes.append((method, full, False))
            return self.put(full, body)
        if base not in self.objects:
            raise api_error(method, path, 404, {"message": "not found"})
        live = self.objects[base]
        if method == "DELETE":
            if not dry:
                self.writes.append((method, path, False))
                del self.objects[base]
            return {}
        assert body is not None
        wanted_version = (body.get("metadata") or {}).get("resourceVersion")
        if wanted_version and wanted_version != live["metadata"]["resourceVersion"]:
            raise api_error(method, path, 409, {"message": "the object has been modified", "reason": "Conflict"})
        if method == "PUT":
            new = copy.deepcopy(body)
        elif scale:
            new = copy.deepcopy(live)
            new["spec"]["replicas"] = body["spec"]["replicas"]
        else:
            new = merge_patch(live, body)
        if dry:
            return new
        self.writes.append((method, path, False))
        return self.put(base, new)
