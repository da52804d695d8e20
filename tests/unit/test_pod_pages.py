"""Triage reads pods page by page (limit/continue), as the API server serves a large namespace."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import (
    LIST_PAGE_SIZE,
    KubeApiError,
    list_items,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.log_signatures import DEFAULT_LOG_SIGNATURES
from ansible_collections.fintech.redis_storm.plugins.module_utils.offenders import OffenderFinder


class PagingApi:
    """Answers list requests like the API server: at most ``limit`` items and a continue token;
    without a limit it sends everything in one answer (what a 10k-pod namespace must never get)."""

    def __init__(self, pods_per_namespace: Dict[str, int], server_max: int = 10_000) -> None:
        self.pods = {ns: [self.pod(ns, i) for i in range(count)] for ns, count in pods_per_namespace.items()}
        self.server_max = server_max
        self.queries: List[Dict[str, Any]] = []
        self.expire_once: Optional[str] = None

    @staticmethod
    def pod(namespace: str, index: int) -> Dict[str, Any]:
        return {"metadata": {"namespace": namespace, "name": "api-%05d" % index},
                "status": {"phase": "Running", "podIP": "127.1.%d.%d" % (index // 250, index % 250 + 1)}}

    def get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        query = dict(query or {})
        self.queries.append(query)
        namespace = path.split("/")[4] if "/namespaces/" in path else None
        items = self.pods.get(namespace, []) if namespace else [p for ns in sorted(self.pods) for p in self.pods[ns]]
        if "limit" not in query:
            if len(items) > self.server_max:
                raise KubeApiError("the list timed out (504)", status=504)
            return {"items": items, "metadata": {}}
        token = query.get("continue")
        if token is not None and token == self.expire_once:
            self.expire_once = None
            raise KubeApiError("the continue token has expired (410)", status=410)
        start = int(token.split(":")[1]) if token else 0
        end = start + int(query["limit"])
        more = {"continue": "%s:%d" % (namespace, end)} if end < len(items) else {}
        return {"items": items[start:end], "metadata": more}


def test_triage_reads_a_10k_pod_namespace_in_pages() -> None:
    api = PagingApi({"trading": 10_400, "payments": 3}, server_max=5_000)
    finder = OffenderFinder(api, ["trading", "payments"], 0, DEFAULT_LOG_SIGNATURES, 5, False)
    pods = finder.list_pods()
    assert len(pods) == 10_403
    assert len({(p["metadata"]["namespace"], p["metadata"]["name"]) for p in pods}) == 10_403
    assert all(0 < int(q["limit"]) <= LIST_PAGE_SIZE for q in api.queries)
    assert all(q["fieldSelector"] for q in api.queries)
    assert len(api.queries) == -(-10_400 // LIST_PAGE_SIZE) + 1


def test_the_opt_in_cluster_wide_pod_list_is_paged_too() -> None:
    api = PagingApi({"a": 7, "b": 5})
    assert len(OffenderFinder(api, [], 0, DEFAULT_LOG_SIGNATURES, 5, False, all_namespaces=True).list_pods()) == 12
    assert all("limit" in q for q in api.queries)


def test_an_expired_continue_token_starts_the_list_over_once() -> None:
    api = PagingApi({"trading": 9})
    api.expire_once = "trading:4"
    pods = list_items(api, "/api/v1/namespaces/trading/pods", page_size=2)
    assert [p["metadata"]["name"] for p in pods] == ["api-%05d" % i for i in range(9)]


def test_a_list_error_other_than_an_expired_token_is_raised() -> None:
    class Forbidden:
        def get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
            raise KubeApiError("forbidden (403)", status=403)

    with pytest.raises(KubeApiError, match="403"):
        list_items(Forbidden(), "/api/v1/pods")
