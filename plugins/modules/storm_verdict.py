#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: storm_verdict
short_description: Join Redis', Prometheus' and Kubernetes' views into one storm verdict
description:
  - Takes the registered results of M(fintech.redis_storm.redis_clients_info),
    M(fintech.redis_storm.prometheus_query) (run with O(fintech.redis_storm.prometheus_query#module:queries))
    and M(fintech.redis_storm.storm_offenders_info) as they are, failed or not, and returns RV(storm_triage).
  - Whether there is a storm and how severe, whether Redis is the bottleneck and how sure, the evidence with
    its thresholds, the storm's shape and its culprit, the offenders ranked by the measure that fits the shape,
    the rungs of the mitigation ladder the evidence supports (in ladder order, each with its reason and the
    workload it acts on) and the sources that could not be read.
  - The shape comes from Redis' own numbers per workload, C(CLIENT LIST) across the sampling window joined with
    pods - connections held (pool exhaustion), connections opened per second (reconnect storm), connections from
    pods an autoscaler just started (scale-out burst), or both of the last two (mixed). The apps' pool gauges
    (C(client_connections), C(client_connections_peak)) are shown beside each offender and rank only when Redis
    could not be read.
  - A Redis that refused our connection because it is at maxclients makes the verdict critical on its own.
  - Pure computation, no I/O (but the optional O(output_file)); the role calls it so no logic lives in Jinja.
  - Runs on the controller as an action plugin (no module round trip); the module runs the same code where
    the action plugin is not used.
  - Prometheus queries are read by name; the names the verdict knows are C(redis_up), C(utilization),
    C(last_utilization), C(connected_clients), C(maxclients), C(new_connections_per_sec), C(rejected_connections),
    C(redis_command_latency_seconds), C(app_request_growth), C(app_error_ratio), C(app_latency_p95),
    C(app_latency_p99), C(client_connections), C(client_connections_peak), C(db_connections),
    C(queue_backlog), C(evicted_keys) and C(expired_stale_perc_rise).
  - Keys evicted, or a rise of C(expired_stale_perc), in Redis' sampling window (O(redis)'s C(stale_cache)) or over
    the Prometheus query window are a warning that stale cache may be served as truth, in C(storm_triage.warnings)
    with the values and the window; they do not change the storm verdict.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  redis:
    description: The registered result of M(fintech.redis_storm.redis_clients_info) (failed or skipped is fine).
    type: dict
  prometheus:
    description: The registered result of M(fintech.redis_storm.prometheus_query) with named queries.
    type: dict
  kubernetes:
    description: The registered result of M(fintech.redis_storm.storm_offenders_info).
    type: dict
  thresholds:
    description:
      - Overrides of the default thresholds by name (C(utilization_warning) 0.8, C(utilization_critical) 0.95,
        C(new_connections_per_sec) 100, C(rejected_connections) 1, C(redis_latency_ms) 5, C(app_error_ratio) 0.05,
        C(app_latency_p95_seconds) 0.25, C(app_latency_p99_seconds) 0.5, C(app_request_growth) 1.5,
        C(offender_share) 0.5, C(retry_log_lines) 5, C(timeout_log_lines) 5, C(error_log_lines) 5, C(restarts) 3,
        C(maxclients_fd_share) 0.5, C(db_connections) 200, C(queue_backlog) 1000, C(reconnect_per_sec) 20,
        C(reconnect_turnover) 0.1, C(burst_share) 0.5, C(culprit_share) 0.4).
      - Ratios must be between 0 and 1; an unknown name is an error.
    type: dict
    default: {}
  ingresses:
    description:
      - The ingresses in front of client workloads, C({namespace, name, provider, workload}) (the shared
        C(storm_ingresses)); a top offender behind one with rising traffic supports the rate limit rung.
    type: list
    elements: dict
    default: []
  redis_fd_limit:
    description:
      - The open-files limit of the Redis process, if known; with it a maxclients far below the limit supports
        the redis_capacity rung.
    type: int
  top:
    description: How many offenders to return (0 for all).
    type: int
    default: 10
  output_file:
    description:
      - Also write RV(storm_triage) as JSON (mode 0600) to this path on the host that runs the module (the
        controller, with C(ansible_connection=local)), for a program that runs the playbook.
      - The file is the run's own report, not something the run manages, so it is written in check mode too.
    type: path
attributes:
  check_mode:
    support: full
    description: Computes from its inputs only, the same in check mode; changes nothing anywhere.
  diff_mode:
    support: none
    description: Changes nothing, so there is no diff.
"""

EXAMPLES = r"""
# views: registered from fintech.redis_storm.storm_views_info (or the three modules' own results)
- name: One verdict from the three views
  fintech.redis_storm.storm_verdict:
    redis: "{{ views.redis }}"
    prometheus: "{{ views.prometheus }}"
    kubernetes: "{{ views.kubernetes }}"
    thresholds:
      utilization_warning: 0.8
      offender_share: 0.5
    ingresses: "{{ storm_ingresses }}"
  register: verdict
"""

RETURN = r"""
storm_triage:
  description: The verdict.
  returned: always
  type: dict
  sample:
    storm: true
    severity: critical
    bottleneck_confirmed: {confirmed: true, confidence: high,
                           why: "Redis pressure (utilization) lines up with application impact (app_error_ratio)"}
    evidence:
      - {source: prometheus, signal: utilization, observed: 1.0, threshold: 0.8, breached: true,
         note: "redis_connected_clients / redis_config_maxclients (400 of 400)"}
    offenders:
      - {namespace: trading, kind: Deployment, name: trading-api, connections: 320, connection_share: 0.8,
         connections_from: redis_burst, pods: 8, restarts: 0, crashloop: false, oomkilled: false, hpa_state: scaling_up,
         hpa: {kind: HorizontalPodAutoscaler, name: trading-api, current: 8, desired: 16, min: 3, max: 48,
               paused: false},
         log_signatures: {retry: 40}, ingress: trading/trading-api, request_growth: 3.1, error_ratio: 0.2}
    unattributed:
      connections: 40
      addresses:
        - {ip: 10.0.9.4, connections: 40, names: [batch],
           reason: "outside the watched namespaces (trading): no live pod there has this address (...)"}
    culprit: {shape: scale_out_burst, measure: connections from pods started in the burst window,
              connections_from: redis_burst, certain: true, share: 0.85, margin: 0.75,
              workloads: [trading/trading-api], evidence: ["300 of the 400 connections held come from pods ..."],
              why: "trading/trading-api leads with 85% of the connections from pods ..., 75 points ahead of the next"}
    recommended_rungs:
      - {rung: offender_scale_down, reason: "trading/trading-api holds 80% of the connections (threshold 50%)",
         workload: trading/trading-api}
    degraded_sources: [{source: kubernetes, reason: "logs of trading/x: ...", partial: true}]
    sources_answered: [redis, prometheus, kubernetes]
    thresholds: {utilization_warning: 0.8}
    summary: "critical connection storm, top offender trading/trading-api (80% of connections); ..."
  contains:
    storm:
      description: Whether Redis is in a connection storm.
      type: bool
    severity:
      description: none, warning or critical.
      type: str
    bottleneck_confirmed:
      description: C(confirmed) (Redis' pressure lines up with application impact), C(confidence) low/medium/high,
        C(why).
      type: dict
    evidence:
      description: What was seen, each C({source, signal, observed, threshold, breached, note}); breached first.
      type: list
      elements: dict
    offenders:
      description:
        - Workloads ranked by the storm's shape, each with connections held and their share, connections opened
          per second, connections from young pods, its share of the ranking measure (C(measure_share)), where
          the ranking came from (C(connections_from) V(redis_held), V(redis_churn), V(redis_burst),
          V(redis_churn_burst); V(prometheus) when Redis could not be read; V(client_name) without the cluster),
          the apps' own gauges (C(app_connections), C(app_connections_peak)), HPA state, restarts, log
          signatures, ingress and request growth.
      type: list
      elements: dict
    unattributed:
      description:
        - Redis' clients the cluster's join found no workload for, C(connections) in all and each of the
          C(addresses) (C({ip, connections, names, reason})), most connections first; the reason says where the
          address was looked for (outside the watched namespaces, a node or a client outside the cluster, a shared
          hostNetwork address). They are shown, never ranked as a workload. Empty when the cluster was not read.
      type: dict
    culprit:
      description:
        - The storm's shape (V(pool_exhaustion), V(reconnect_storm), V(scale_out_burst), V(mixed)) with its
          C(evidence), the C(measure) that ranked the offenders and C(connections_from), how sure (C(share) of
          the leading measure, C(margin) over the second), the culprits named in order (C(workloads)), and
          C(certain)/C(why) - not certain when Redis was just emptied and its reconnect wave had not settled within
          the wait, or when addresses no workload of the namespaces read has (RV(storm_triage.unattributed)) hold
          or open more connections than the leading workload.
        - Null when Redis could not be read.
      type: dict
    recommended_rungs:
      description: Rungs of the ladder the evidence supports, in ladder order, each C({rung, reason}) and the
        C(workload) the rung acts on; empty without a storm.
      type: list
      elements: dict
    degraded_sources:
      description: What could not be read, each C({source, reason}); C(partial) when the source still answered.
      type: list
      elements: dict
    sources_answered:
      description: The sources the verdict is built from.
      type: list
      elements: str
    warnings:
      description:
        - What triage warns about besides the storm, each with its evidence; today that stale cache may be served
          as truth (keys evicted, or C(expired_stale_perc) rising, with the values and the window).
      type: list
      elements: str
    thresholds:
      description: The thresholds in effect.
      type: dict
    summary:
      description: The verdict in one line.
      type: str
summary_lines:
  description: The short human summary (verdict, bottleneck, top 3 offenders, unattributed addresses, breached
    evidence, rungs, gaps).
  returned: always
  type: list
  elements: str
  sample: ["Verdict: critical connection storm, top offender trading/trading-api (80% of connections)"]
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict import VERDICT_ARG_SPEC, run_verdict


def main() -> None:
    module = AnsibleModule(argument_spec=VERDICT_ARG_SPEC, supports_check_mode=True)
    try:
        result = run_verdict(module.params)
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
