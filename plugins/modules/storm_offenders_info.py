#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storm_offenders_info
short_description: Name the workloads behind a Redis connection storm
description:
  - Joins the client addresses Redis reports (the C(top_sources) of M(fintech.redis_storm.redis_clients_info))
    with pod IPs, follows each pod to its owner (ReplicaSet to Deployment, StatefulSet, DaemonSet, bare pod)
    and ranks the owning workloads by the connections they hold.
  - Adds the evidence an on-call engineer looks for next, per workload, restarts, CrashLoopBackOff and OOMKilled
    containers, the HPA or KEDA ScaledObject state, pod CPU from metrics.k8s.io and counts of storm log
    signatures in the last lines of up to three pods of each of the O(top) workloads.
  - Only listing pods must succeed. A forbidden or failing read of replica sets, autoscalers, metrics or logs
    is reported in C(degraded) and the rest of the answer still comes back.
  - When O(sources) is empty (Redis refused our connection at maxclients), every workload in the namespaces
    read is returned, ranked by log signatures, crash state, restarts and CPU.
  - Read-only; never writes to the cluster.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  sources:
    description:
      - Client addresses and their connection counts, as C(top_sources) of M(fintech.redis_storm.redis_clients_info)
        returns them (C(ip), C(connections), C(names), C(lib_names), C(idle_max), C(age_min)).
    type: list
    elements: dict
    default: []
  namespaces:
    description:
      - Namespaces whose pods may hold the connections (usually the inventory's C(storm_namespaces)), one
        paginated pod list each. Required unless O(all_namespaces) is true.
      - A client address no live pod of these namespaces has is returned in RV(unattributed_connections),
        never attributed to a workload.
      - A namespace where listing pods is forbidden fails the module, naming the namespace and the RoleBinding
        to add (C(deploy/rbac.yml) binds the read-only ClusterRole C(redis-storm-triage) per namespace).
    type: list
    elements: str
    default: []
  all_namespaces:
    description:
      - Read pods of every namespace (one paginated cluster-wide list) instead of O(namespaces).
      - Needs the cluster-wide ClusterRoleBinding C(redis-storm-triage-all-namespaces) that C(deploy/rbac.yml)
        leaves commented out; pod specs can hold plain environment values, so it is an explicit opt-in.
    type: bool
    default: false
  log_tail_lines:
    description:
      - How many of the last log lines of each pod to scan for O(log_signatures). C(0) reads no logs.
    type: int
    default: 200
  log_signatures:
    description:
      - Name to regular expression; a log line matching the expression counts once for that name.
      - The default counts C(RedisTimeoutException), C(Connection reset by peer), C(Too many connections),
        C(max number of clients reached), retry lines and circuit-breaker-open lines.
    type: dict
  top:
    description:
      - How many of the highest ranked workloads get their logs read (up to three pods each).
    type: int
    default: 5
  metrics:
    description:
      - Read pod CPU from the metrics.k8s.io API. Its absence is reported in C(degraded), not as a failure.
    type: bool
    default: true
  young_pod_seconds:
    description:
      - Pods started less than this many seconds ago are young; their connections are counted in
        RV(workloads[].young_pod_connections), the measure of a scale-out burst.
    type: int
    default: 300
extends_documentation_fragment:
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
seealso:
  - module: fintech.redis_storm.redis_clients_info
"""

EXAMPLES = r"""
- name: Read who holds the connections
  fintech.redis_storm.redis_clients_info:
    host: redis.redis.svc
    password: "{{ storm_redis_password }}"
  register: redis_view

- name: Join the client addresses with pods and owners
  fintech.redis_storm.storm_offenders_info:
    sources: "{{ redis_view.top_sources }}"
    namespaces: [payments, trading, wallet]
    log_tail_lines: 200
  register: offenders

- name: Show the worst offender
  ansible.builtin.debug:
    msg: "{{ offenders.workloads[0].namespace }}/{{ offenders.workloads[0].name }} holds
      {{ (offenders.workloads[0].connection_share * 100) | round(1) }}% of the connections"
  when: offenders.workloads | length > 0
"""

RETURN = r"""
workloads:
  description:
    - Workloads holding connections, most connections first (ties broken by log signals, crash state,
      restarts and CPU).
  returned: always
  type: list
  elements: dict
  sample:
    - namespace: trading
      kind: Deployment
      name: trading-api
      connections: 640
      connection_share: 0.8
      pods: 8
      pod_ips: [127.0.10.1, 127.0.10.2]
      client_names: [trading-api]
      restarts: 3
      crashloop: false
      oomkilled: false
      hpa: {kind: HorizontalPodAutoscaler, name: trading-api, current: 8, desired: 10, min: 2, max: 20, paused: false}
      cpu_millicores: 2400.0
      log_signatures: {redis_timeout: 12, connection_reset: 0, too_many_connections: 4,
                       max_clients_reached: 30, retry: 57, circuit_breaker_open: 0}
      logs_read: [trading-api-7d9f-abcde, trading-api-7d9f-fghij]
  contains:
    namespace:
      description: Namespace of the workload.
      type: str
    kind:
      description: Deployment, StatefulSet, DaemonSet, Job, ReplicaSet (no Deployment above it) or Pod (bare pod).
      type: str
    name:
      description: Name of the workload.
      type: str
    connections:
      description: Redis connections from the workload's pod IPs.
      type: int
    connection_share:
      description: Fraction (0 to 1) of all connections in O(sources), unattributed ones included.
      type: float
    opened:
      description: Connections the workload opened in Redis' sampling window (from O(sources)); null without it.
      type: int
    opened_per_sec:
      description: Connections the workload opened per second in Redis' sampling window; null without it.
      type: float
    young_pods:
      description: Live pods of the workload started less than O(young_pod_seconds) ago.
      type: int
    young_pod_connections:
      description: Redis connections from those young pods.
      type: int
    pods:
      description: Live pods the workload has in the namespaces read.
      type: int
    pod_ips:
      description: Pod IPs of the workload that hold connections.
      type: list
      elements: str
    client_names:
      description: Redis client names (CLIENT SETNAME) seen from those IPs.
      type: list
      elements: str
    restarts:
      description: Container restarts summed over the workload's pods.
      type: int
    crashloop:
      description: Whether a container of the workload waits in CrashLoopBackOff.
      type: bool
    oomkilled:
      description: Whether a container's last termination was OOMKilled.
      type: bool
    hpa:
      description:
        - The autoscaler targeting the workload, or null. C(kind) is HorizontalPodAutoscaler or ScaledObject;
          C(paused) is true for an HPA whose scaleUp selectPolicy is Disabled or a paused ScaledObject.
      type: dict
    cpu_millicores:
      description: CPU of the workload's pods from metrics.k8s.io, null when the metrics API could not be read.
      type: float
    log_signatures:
      description: Log lines matching each signature, over the logs read; empty when the logs were not read.
      type: dict
    logs_read:
      description:
        - The pods (or pod/container) whose logs were scanned; C(<pod> (previous)) is the log of a restarted
          container's previous instance, where a crash-looping application's last lines are.
      type: list
      elements: str
unattributed_connections:
  description:
    - Client addresses no live pod of the namespaces read has (a pod of another namespace, a node, an external
      client) or that several hostNetwork pods share, with their connections; never counted for a workload.
  returned: always
  type: list
  elements: dict
  sample: [{ip: 10.0.0.12, connections: 40, opened: null, names: [batch],
            reason: "outside the watched namespaces (payments, wallet): no live pod there has this address (a pod
              of another namespace, a node, or a client outside the cluster)"}]
total_connections:
  description: Sum of the connections in O(sources).
  returned: always
  type: int
  sample: 800
pods_scanned:
  description: Live pods listed.
  returned: always
  type: int
  sample: 42
degraded:
  description: What could not be read (metrics API absent, logs forbidden, ...); the answer is partial there.
  returned: always
  type: list
  elements: str
  sample: ["pod CPU: the metrics.k8s.io API is not served here (no metrics-server)"]
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC, Kube, run_kube_module
from ansible_collections.fintech.redis_storm.plugins.module_utils.offenders import (
    READ_ARG_SPEC,
    finder_for,
)


def main() -> None:
    argument_spec = dict(
        sources=dict(type="list", elements="dict", default=[]),
        **READ_ARG_SPEC,
        **KUBE_ARG_SPEC,
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    params = module.params

    def work(kube: Kube) -> Dict[str, Any]:
        return dict(finder_for(kube, params).find(params["sources"]), changed=False)

    run_kube_module(module, work)


if __name__ == "__main__":
    main()
