#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: storm_views_info
short_description: Read Redis', Prometheus' and Kubernetes' views of a connection storm at once
description:
  - One read-only task for the triage role's three reads, M(fintech.redis_storm.redis_clients_info),
    M(fintech.redis_storm.prometheus_query) with O(prometheus.queries), and
    M(fintech.redis_storm.storm_offenders_info), run side by side in one process; each view comes back as
    its module returns it, ready for M(fintech.redis_storm.storm_verdict).
  - The Redis sampling window, the Prometheus queries and listing the cluster's pods and their owners
    overlap; only the join of client addresses with pods waits for Redis.
  - A view that cannot be read comes back with C(failed=true) and C(msg) saying why, and the task still succeeds, so the
    verdict can answer from the other two and list what was degraded. A Redis that refuses the connection
    at C(maxclients) is an answer (C(saturated=true)), not a failure; the Kubernetes view then ranks every
    workload in O(kubernetes.namespaces) by its health.
  - Read-only; never writes to Redis, Prometheus or the cluster.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  redis:
    description:
      - The Redis deployment to read and how, as for M(fintech.redis_storm.redis_clients_info).
    type: dict
    required: true
    suboptions:
      host:
        description: Redis host name or IP address.
        type: str
        default: 127.0.0.1
      port:
        description: Redis port (the TLS port when O(redis.tls=true)).
        type: int
        default: 6379
      username:
        description: ACL user name (Redis 6+); needs C(+ping +info +client). Omit for the default user.
        type: str
      password:
        description: Password of O(redis.username), or the C(requirepass) of the default user. Never logged.
        type: str
      tls:
        description: Connect with TLS.
        type: bool
        default: false
      ca_path:
        description: CA bundle file (or directory of hashed CA certificates) that signed Redis' certificate.
        type: path
      validate_certs:
        description: Verify Redis' TLS certificate and host name. Only set V(false) for a drill.
        type: bool
        default: true
      socket_timeout:
        description: Seconds to wait for the connection and for each answer (one attempt, no retries).
        type: float
        default: 3.0
      cluster:
        description:
          - Redis is a Redis Cluster and O(redis.host)/O(redis.port) name one of its nodes; every node is read
            and the sources are summed over them, as for M(fintech.redis_storm.redis_clients_info).
          - Not with O(redis.sentinels).
        type: bool
        default: false
      sentinels:
        description:
          - The group's Sentinels, C(host:port) each; the master is read from them (O(redis.host) is not used) and
            its replicas' clients are counted too.
        type: list
        elements: str
      sentinel_master:
        description: The Sentinel group's name. Required with O(redis.sentinels).
        type: str
      sentinel_username:
        description: ACL user on the Sentinels.
        type: str
      sentinel_password:
        description: The Sentinels' own C(requirepass).
        type: str
      sample_seconds:
        description: Seconds between the two INFO samples the connection rates come from. V(0) skips the rates.
        type: float
        default: 1.0
      latency_samples:
        description: Number of C(PING)s timed for the latency. V(0) skips the probe.
        type: int
        default: 20
      top:
        description:
          - Number of source IPs returned in C(redis.top_sources), most connections first (plus those of the
            O(redis.top) that opened the most connections), and joined with pods. V(0) returns all.
        type: int
        default: 10
      wave_wait_seconds:
        description:
          - When Redis was just emptied (every client younger than 10 seconds), how much longer to keep reading
            C(CLIENT LIST) for the reconnect wave, as for M(fintech.redis_storm.redis_clients_info).
        type: float
        default: 5.0
  prometheus:
    description:
      - The Prometheus to ask and the named queries, as for M(fintech.redis_storm.prometheus_query).
      - Omitted, the Prometheus view comes back skipped.
    type: dict
    suboptions:
      url:
        description: Base URL of Prometheus, V(http(s\)://host:port) plus any path prefix, without C(/api/v1).
        type: str
        required: true
      queries:
        description: PromQL expressions by name, asked at the same moment; each answer is under its name.
        type: dict
        required: true
      timeout:
        description: Seconds to wait for each answer.
        type: float
        default: 10.0
      bearer_token:
        description: Token sent as a bearer token in the C(Authorization) header. Never logged.
        type: str
      username:
        description: User for HTTP basic auth.
        type: str
      password:
        description: Password for HTTP basic auth. Never logged.
        type: str
      validate_certs:
        description: Verify Prometheus' TLS certificate.
        type: bool
        default: true
      ca_path:
        description: CA bundle that signed Prometheus' certificate.
        type: path
  kubernetes:
    description:
      - The cluster to read and how, as for M(fintech.redis_storm.storm_offenders_info); the client addresses
        come from the Redis view.
    type: dict
    required: true
    suboptions:
      namespaces:
        description:
          - Namespaces whose pods may hold the connections, one paginated pod list each. Required unless
            O(kubernetes.all_namespaces) is true.
        type: list
        elements: str
        default: []
      all_namespaces:
        description:
          - Read pods of every namespace (one cluster-wide list) instead of O(kubernetes.namespaces); needs the
            cluster-wide binding that C(deploy/rbac.yml) leaves commented out.
        type: bool
        default: false
      log_tail_lines:
        description: How many of the last log lines of each pod to scan for O(kubernetes.log_signatures).
        type: int
        default: 200
      log_signatures:
        description: Name to regular expression counted in the logs; the default counts the storm's usual errors.
        type: dict
      top:
        description: How many of the highest ranked workloads get their logs read (up to three pods each).
        type: int
        default: 5
      metrics:
        description: Read pod CPU from the metrics.k8s.io API.
        type: bool
        default: true
      young_pod_seconds:
        description: Pods started less than this many seconds ago count as a scale-out burst's new pods.
        type: int
        default: 300
      kubeconfig:
        description: Path to a kubeconfig file. Falls back to E(K8S_AUTH_KUBECONFIG), then C(~/.kube/config).
        type: path
      context:
        description: The kubeconfig context to use. Falls back to E(K8S_AUTH_CONTEXT).
        type: str
      host:
        description: URL of the Kubernetes API server. Falls back to E(K8S_AUTH_HOST).
        type: str
      api_key:
        description: Bearer token for the API server. Falls back to E(K8S_AUTH_API_KEY). Never logged.
        type: str
      validate_certs:
        description: Whether to verify the API server's TLS certificate. Falls back to E(K8S_AUTH_VERIFY_SSL).
        type: bool
        aliases: [verify_ssl]
      ca_cert:
        description: CA bundle to verify the API server with. Falls back to E(K8S_AUTH_SSL_CA_CERT).
        type: path
        aliases: [ssl_ca_cert]
      request_timeout:
        description: Seconds to wait for each API request.
        type: float
        default: 10.0
requirements:
  - redis (the redis-py library, 5.0 or later)
  - kubernetes (Python library)
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
seealso:
  - module: fintech.redis_storm.redis_clients_info
  - module: fintech.redis_storm.prometheus_query
  - module: fintech.redis_storm.storm_offenders_info
  - module: fintech.redis_storm.storm_verdict
"""

EXAMPLES = r"""
- name: Read the three views of payments-redis
  fintech.redis_storm.storm_views_info:
    redis:
      host: payments-redis.payments.svc
      password: "{{ vault_payments_redis_password }}"
      sample_seconds: 0.25
      top: 200
    prometheus:
      url: https://prometheus.monitoring.svc:9090
      queries:
        redis_up: min(redis_up{job="payments-redis"})
        rejected_connections: sum(increase(redis_rejected_connections_total{job="payments-redis"}[1m]))
    kubernetes:
      namespaces: [payments, checkout]
      top: 3
  register: views

- name: Judge them
  fintech.redis_storm.storm_verdict:
    redis: "{{ views.redis }}"
    prometheus: "{{ views.prometheus }}"
    kubernetes: "{{ views.kubernetes }}"
"""

RETURN = r"""
redis:
  description:
    - What M(fintech.redis_storm.redis_clients_info) returns (C(reachable), C(saturated), C(clients), C(stats),
      C(rates), C(latency_ms), C(top_sources), C(verdict)), or C(failed) and C(msg) when Redis could not be read.
  returned: always
  type: dict
  sample: {reachable: false, saturated: true, error: "max number of clients reached", top_sources: []}
prometheus:
  description:
    - What M(fintech.redis_storm.prometheus_query) returns for O(prometheus.queries) (C(answers) by name), or
      C(failed) and C(msg) when Prometheus could not be asked, or C(skipped) when O(prometheus) was omitted.
  returned: always
  type: dict
  sample: {answers: {redis_up: {result_type: vector, value: 0.0, series: [], ok: null}}}
kubernetes:
  description:
    - What M(fintech.redis_storm.storm_offenders_info) returns (C(workloads), C(unattributed_connections),
      C(total_connections), C(pods_scanned), C(degraded)), or C(failed) and C(msg) when pods could not be listed.
  returned: always
  type: dict
  sample: {workloads: [{namespace: payments, kind: Deployment, name: payments-api, connections: 812}], degraded: []}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.prometheus import hide_url_password
from ansible_collections.fintech.redis_storm.plugins.module_utils.views import VIEWS_ARG_SPEC, read_views


def main() -> None:
    module = AnsibleModule(argument_spec=VIEWS_ARG_SPEC, supports_check_mode=True)
    params = module.params
    hide_url_password(module, (params["prometheus"] or {}).get("url"))
    module.exit_json(changed=False, **read_views(params["redis"], params["prometheus"], params["kubernetes"]))


if __name__ == "__main__":
    main()
