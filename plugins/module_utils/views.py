# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis', Prometheus' and Kubernetes' views of a storm, read side by side in one process.

Each view is what its own module returns (``redis_clients_info``, ``prometheus_query`` with
``queries``, ``storm_offenders_info``), or ``{"failed": True, "msg": ...}`` when it could not be
read, so ``storm_verdict`` takes them as it takes those modules' registered results. Only the
Kubernetes join waits for Redis (it needs Redis' client addresses); listing pods and their owners,
the Redis sampling window and the Prometheus queries overlap.
"""

from __future__ import annotations

import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils import group_clients, offenders, redis_clients
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC, Kube, kube_options
from ansible_collections.fintech.redis_storm.plugins.module_utils.prometheus import (
    PROMETHEUS_ARG_SPEC,
    Prometheus,
    run_queries,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import REDIS_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import SENTINEL_ARG_SPEC

View = Dict[str, Any]

# storm_views_info's options: each view's own module options, one dict per view.
VIEWS_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "redis": {"type": "dict", "required": True,
              "options": dict(REDIS_ARG_SPEC, **SENTINEL_ARG_SPEC, **redis_clients.READ_ARG_SPEC)},
    "prometheus": {"type": "dict", "options": dict(PROMETHEUS_ARG_SPEC, queries={"type": "dict", "required": True})},
    "kubernetes": {"type": "dict", "required": True, "options": dict(KUBE_ARG_SPEC, **offenders.READ_ARG_SPEC)},
}


def failed_view(exc: BaseException) -> View:
    """A view that could not be read: the verdict lists it in degraded_sources with this message."""
    if isinstance(exc, StormError):
        return dict(exc.details, failed=True, msg=exc.message)
    # not expected: keep the traceback, as a crashed module's result would
    return {"failed": True, "msg": "%s: %s" % (type(exc).__name__, exc), "exception": traceback.format_exc()}


def _guarded(read: Callable[[], View]) -> View:
    try:
        return read()
    except Exception as exc:  # one view failing must not cost the other two
        return failed_view(exc)


def read_redis(params: Dict[str, Any]) -> View:
    answer = group_clients.collect(params, params["top"], sample_seconds=params["sample_seconds"],
                                   latency_samples=params["latency_samples"],
                                   wave_wait_seconds=params["wave_wait_seconds"])
    return dict(answer, changed=False)


def read_prometheus(params: Dict[str, Any]) -> View:
    queries = {str(name): str(query) for name, query in (params.get("queries") or {}).items()}
    if not queries:
        raise StormError("prometheus.queries is empty: give at least one named PromQL query")
    answers, _answered = run_queries(Prometheus.from_params(params), queries, {})
    return {"changed": False, "answers": answers}


class ClusterRead:
    """The Kubernetes view in two steps: what needs no Redis addresses first, then the join."""

    def __init__(self, params: Dict[str, Any]) -> None:
        self.finder = offenders.finder_for(Kube(kube_options(params)), params)
        self.cluster = self.finder.read_cluster()

    def join(self, sources: List[Dict[str, Any]]) -> View:
        return dict(self.finder.find(sources, self.cluster), changed=False)


def read_views(redis: Dict[str, Any], prometheus: Optional[Dict[str, Any]],
               kubernetes: Dict[str, Any]) -> Dict[str, View]:
    """The three views; a view that fails is a failed view, never an exception."""
    with ThreadPoolExecutor(max_workers=2) as pool:
        redis_job = pool.submit(_guarded, lambda: read_redis(redis))
        prometheus_job = pool.submit(_guarded, lambda: read_prometheus(prometheus)) if prometheus else None
        reader: Optional[ClusterRead] = None
        try:
            reader = ClusterRead(kubernetes)
        except Exception as exc:  # the cluster's failure is its view's answer
            kube_view = failed_view(exc)
        redis_view = redis_job.result()
        if reader is not None:
            sources = [] if redis_view.get("failed") else list(redis_view.get("top_sources") or [])
            kube_view = _guarded(lambda: reader.join(sources))
        prometheus_view = (prometheus_job.result() if prometheus_job is not None
                           else {"skipped": True, "changed": False, "msg": "no Prometheus URL given"})
    return {"redis": redis_view, "prometheus": prometheus_view, "kubernetes": kube_view}
