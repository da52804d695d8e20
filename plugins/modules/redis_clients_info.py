#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_clients_info
short_description: Redis' own view of a connection storm (clients, rates, sources, latency, verdict)
description:
  - Reads C(INFO clients) and C(INFO stats) twice, O(sample_seconds) apart, for the rate of new and rejected
    connections; times O(latency_samples) C(PING)s; and reads C(CLIENT LIST) at both ends of that window, grouped
    by source IP. Client ids grow with every new connection, so the two reads give the connections each source
    opened in the window (RV(top_sources[].opened)) as well as those it holds.
  - When every client is younger than 10 seconds (Redis was just emptied by a network blip, a C(CLIENT KILL) or a
    restart), every pool reconnects at once and that wave says nothing about who storms, so C(CLIENT LIST) is read
    again every O(sample_seconds) until the wave settles, at most O(wave_wait_seconds) longer, and the window is
    the last two reads, after the wave (RV(churn.emptied=true), RV(churn.wave_settled)).
  - Judges the numbers against O(thresholds) and says why in RV(verdict.reasons).
  - With O(sentinels), reads the group's current master as above, and each replica's C(CLIENT LIST) and C(INFO
    clients) once; an offender's connections are summed over the nodes (RV(top_sources[].nodes)), each node's use
    of its maxclients is in RV(nodes), and a replica at its limit makes the verdict critical. O(cluster=true) and
    O(sentinels) together are an error.
  - Opens exactly one connection, without client-side retries. When Redis refuses it because it is at
    C(maxclients) (over TLS it drops it at accept), the task does not fail; it returns RV(saturated=true) and a
    critical storm verdict, the strongest storm signal there is.
  - C(CLIENT LIST) blocks Redis for about a microsecond per client; it is called twice per run (a few times more
    only while a reconnect wave settles).
  - With O(cluster=true) every node of the Redis Cluster is read side by side, each over its own connection.
    Connections, rates and RV(top_sources) are summed over the nodes (each source says how many it holds on which
    node, RV(top_sources[].nodes)); RV(clients.utilization) is that of the node nearest its own C(maxclients),
    named in RV(saturating_node); every node is in RV(nodes). A node that is down is named in RV(error) and
    RV(verdict.reasons) with what to do, and the other nodes are still read.
version_added: 0.1.0
author: fintech SRE (@fintech-sre)
extends_documentation_fragment:
  - fintech.redis_storm.redis
  - fintech.redis_storm.redis_sentinel
attributes:
  check_mode:
    support: full
    description: Read-only; runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is nothing to diff.
options:
  sample_seconds:
    description:
      - Seconds between the two INFO samples the rates come from. V(0) skips the rates.
    type: float
    default: 1.0
  latency_samples:
    description:
      - Number of C(PING)s timed for RV(latency_ms). V(0) skips the probe.
    type: int
    default: 20
  top:
    description:
      - Number of source IPs to return in RV(top_sources), most connections first, plus those among the O(top)
        that opened the most connections in the window. V(0) returns all.
    type: int
    default: 10
  wave_wait_seconds:
    description:
      - When Redis was just emptied, how much longer to keep reading C(CLIENT LIST) for the reconnect wave.
      - V(0) reads the window only.
    type: float
    default: 5.0
  fail_on_unreachable:
    description:
      - Fail the task when Redis cannot be reached for a reason other than saturation (refused, timeout, DNS).
      - A saturated Redis never fails the task.
    type: bool
    default: false
  thresholds:
    description:
      - Levels for the verdict. A level is reached when the value is above it.
    type: dict
    suboptions:
      utilization:
        description: Connected clients divided by C(maxclients).
        type: dict
        suboptions:
          warning:
            description: Warning level.
            type: float
            default: 0.8
          critical:
            description: Critical level.
            type: float
            default: 0.95
      new_connections_per_sec:
        description: New connections accepted per second.
        type: dict
        suboptions:
          warning:
            description: Warning level.
            type: float
            default: 100.0
          critical:
            description: Critical level.
            type: float
            default: 500.0
      rejected_per_sec:
        description: Connections rejected at C(maxclients) per second.
        type: dict
        suboptions:
          warning:
            description: Warning level (V(0) means any rejection).
            type: float
            default: 0.0
          critical:
            description: Critical level.
            type: float
            default: 1.0
notes:
  - Our own connection is named C(redis-storm) and left out of RV(top_sources); replicas are left out too.
seealso:
  - module: fintech.redis_storm.redis_clients_kill
"""

EXAMPLES = r"""
- name: Triage | Redis clients, rates and top sources
  fintech.redis_storm.redis_clients_info:
    host: redis.payments.svc
    port: 6380
    tls: true
    ca_path: /etc/pki/redis-ca.pem
    password: "{{ storm_redis_password }}"
    sample_seconds: 2
    top: 5
    thresholds:
      utilization: {warning: 0.7, critical: 0.9}
  register: redis_view

- name: Triage | Say what Redis shows
  ansible.builtin.debug:
    msg: "{{ redis_view.verdict.severity }}: {{ redis_view.verdict.reasons | join('; ') }}"
"""

RETURN = r"""
reachable:
  description: Whether our connection was accepted.
  returned: always
  type: bool
  sample: true
saturated:
  description: Redis refused our connection because it is at C(maxclients) (or dropped it at the TLS handshake).
  returned: always
  type: bool
  sample: false
error:
  description: Why Redis could not be read; null when it could.
  returned: always
  type: str
  sample: "Redis at 10.0.0.5:6379 refused our connection: max number of clients reached"
clients:
  description: C(INFO clients) from the second sample; null when unreachable.
  returned: always
  type: dict
  sample: {connected: 9812, max: 10000, utilization: 0.9812, blocked: 0}
  contains:
    connected:
      description: C(connected_clients), our own connection included.
      type: int
      returned: when reachable
      sample: 9812
    max:
      description: C(maxclients); null when neither INFO nor CONFIG GET tells it.
      type: int
      returned: when reachable
      sample: 10000
    utilization:
      description: RV(clients.connected) divided by RV(clients.max).
      type: float
      returned: when reachable
      sample: 0.9812
    blocked:
      description: C(blocked_clients).
      type: int
      returned: when reachable
      sample: 0
stats:
  description: C(INFO stats) counters from the second sample; null when unreachable.
  returned: always
  type: dict
  sample: {total_connections_received: 51234, rejected_connections: 812, evicted_clients: 0, ops_per_sec: 4210}
  contains:
    total_connections_received:
      description: Connections accepted since Redis started.
      type: int
      returned: when reachable
      sample: 51234
    rejected_connections:
      description: Connections refused at C(maxclients) since Redis started.
      type: int
      returned: when reachable
      sample: 812
    evicted_clients:
      description: Clients evicted by C(maxmemory-clients) (Redis 7+; 0 before).
      type: int
      returned: when reachable
      sample: 0
    ops_per_sec:
      description: C(instantaneous_ops_per_sec).
      type: int
      returned: when reachable
      sample: 4210
rates:
  description:
    - Per-second rates between the two INFO samples.
    - Null when unreachable; the values are null when O(sample_seconds=0).
  returned: always
  type: dict
  sample: {new_connections_per_sec: 812.5, rejected_per_sec: 40.0}
  contains:
    new_connections_per_sec:
      description: Growth of C(total_connections_received) per second.
      type: float
      returned: when reachable
      sample: 812.5
    rejected_per_sec:
      description: Growth of C(rejected_connections) per second.
      type: float
      returned: when reachable
      sample: 40.0
latency_ms:
  description: Round trip of C(PING) in milliseconds; null when unreachable, values null when O(latency_samples=0).
  returned: always
  type: dict
  sample: {p50: 0.21, p99: 3.4, max: 3.4}
  contains:
    p50:
      description: Median.
      type: float
      returned: when reachable
      sample: 0.21
    p99:
      description: 99th percentile (nearest rank).
      type: float
      returned: when reachable
      sample: 3.4
    max:
      description: Slowest PING.
      type: float
      returned: when reachable
      sample: 3.4
top_sources:
  description: Connections grouped by source IP, most connections first, at most O(top); empty when unreachable.
  returned: always
  type: list
  elements: dict
  sample: [{ip: 10.42.3.17, connections: 150, names: [checkout], lib_names: [redis-py], idle_max: 40, age_min: 2}]
  contains:
    ip:
      description: Source address as Redis sees it.
      type: str
      returned: always
      sample: 10.42.3.17
    connections:
      description: Connections from this address.
      type: int
      returned: always
      sample: 150
    names:
      description: Distinct C(CLIENT SETNAME) names, sorted.
      type: list
      elements: str
      returned: always
      sample: [checkout]
    lib_names:
      description: Distinct client library names (C(CLIENT SETINFO), Redis 7.2+), sorted.
      type: list
      elements: str
      returned: always
      sample: [redis-py]
    idle_max:
      description: Longest idle time of these connections, in seconds.
      type: int
      returned: always
      sample: 40
    age_min:
      description: Age of the youngest of these connections, in seconds (0 means just opened).
      type: int
      returned: always
      sample: 2
    age_max:
      description: Age of the oldest of these connections, in seconds.
      type: int
      returned: always
      sample: 300
    opened:
      description:
        - Connections from this address opened in the sampling window that a read saw (client ids newer than the
          window's first read, or C(age) 0 at it); null when O(sample_seconds=0).
      type: int
      returned: always
      sample: 35
    opened_per_sec:
      description: RV(top_sources[].opened) over the window's length; null when O(sample_seconds=0).
      type: float
      returned: always
      sample: 140.0
    nodes:
      description:
        - With O(cluster=true) or O(sentinels), the connections from this address on each node, by node address
          (the master's and each replica's in a Sentinel group).
      type: dict
      returned: when O(cluster=true) or with sentinels
      sample: {"10.0.0.5:6379": 50, "10.0.0.6:6379": 100}
nodes:
  description:
    - With O(cluster=true) or O(sentinels), every node and what was read from it; C(node) is its address and
      C(role) C(master) or C(replica).
    - With O(cluster=true) each entry has the node's C(slots), C(flags), C(reachable), C(saturated), C(error),
      C(connected), C(max), C(utilization), C(new_connections_per_sec) and C(rejected_per_sec).
    - With O(sentinels) each entry has the node's RV(clients) view and C(error) (a replica that cannot be read).
  returned: when O(cluster=true) and a node answered the discovery, or with sentinels
  type: list
  elements: dict
  sample: [{node: "10.0.0.5:6379", role: master, slots: ["0-5460"], flags: [], reachable: true, saturated: false,
            error: null, connected: 181, max: 200, utilization: 0.905, new_connections_per_sec: 4.0,
            rejected_per_sec: 0.0}]
saturating_node:
  description:
    - With O(cluster=true), the entry of RV(nodes) nearest its C(maxclients), a node that refused our connection
      at C(maxclients) first. Its clients are refused first.
  returned: when O(cluster=true) and a node answered the discovery
  type: dict
  sample: {node: "10.0.0.6:6379", role: replica, connected: 190, max: 200, utilization: 0.95}
sentinel:
  description: The Sentinel group as the Sentinels gave it (name, sentinels, master, replicas, replicas_down).
  returned: with sentinels
  type: dict
  sample: {name: payments, master: "10.0.0.5:6379", replicas: ["10.0.0.6:6379"], replicas_down: []}
churn:
  description: The sampling window the C(CLIENT LIST) reads span; null when unreachable.
  returned: always
  type: dict
  sample: {window_seconds: 0.26, reads: 2, emptied: false, wave_settled: null, waited_seconds: 0.0, opened: 37,
           opened_per_sec: 142.3}
  contains:
    window_seconds:
      description: From the window's first read to its last (the last two reads).
      type: float
      returned: when reachable
      sample: 0.26
    reads:
      description: How many times C(CLIENT LIST) was read.
      type: int
      returned: when reachable
      sample: 2
    emptied:
      description: Every client was younger than 10 seconds at the first read (Redis was just emptied).
      type: bool
      returned: when reachable
      sample: false
    wave_settled:
      description:
        - When emptied, whether the reconnect wave settled (a read found almost no new client) before the window;
          null otherwise.
      type: bool
      returned: when reachable
      sample: null
    waited_seconds:
      description: Seconds of reads before the window (waiting for the reconnect wave); 0 when not emptied.
      type: float
      returned: when reachable
      sample: 0.0
    opened:
      description:
        - Connections opened in the window that a read saw (ids newer than the first read, or C(age) 0 at it),
          over all addresses.
      type: int
      returned: when reachable
      sample: 37
    opened_per_sec:
      description:
        - Connections Redis accepted per second in the window (C(INFO stats)), or RV(churn.opened) over the
          window when more; each address' RV(top_sources[].opened_per_sec) is its share of this rate.
      type: float
      returned: when reachable
      sample: 142.3
stale_cache:
  description:
    - C(evicted_keys) and C(expired_stale_perc) (C(INFO stats)) at both ends of the sampling window, and a warning
      when either rose in it (keys evicted, or expired keys not yet removed, are read by the applications and may
      be served as truth). With O(cluster=true) evictions are summed and the stale share is the highest of any node.
    - Null when unreachable or O(sample_seconds=0).
  returned: always
  type: dict
  sample:
    evicted_keys: {before: 1200, after: 1830, rise: 630}
    expired_stale_perc: {before: 0.0, after: 0.0, rise: 0.0}
    window_seconds: 0.5
    warning: "stale cache may be served as truth: evicted_keys rose from 1200 to 1830 in 0.5s during the storm; ..."
  contains:
    evicted_keys:
      description: C(evicted_keys) C(before) and C(after) the window, and its C(rise).
      type: dict
      returned: when reachable
      sample: {before: 1200, after: 1830, rise: 630}
    expired_stale_perc:
      description: C(expired_stale_perc) C(before) and C(after) the window, and its C(rise) (null before Redis 6).
      type: dict
      returned: when reachable
      sample: {before: 0.0, after: 0.0, rise: 0.0}
    window_seconds:
      description: Seconds between the two samples.
      type: float
      returned: when reachable
      sample: 0.5
    warning:
      description: The warning with its evidence when either value rose; null otherwise. Also shown as a task warning.
      type: str
      returned: when reachable
      sample: null
verdict:
  description: Whether Redis shows a connection storm, how bad, and why.
  returned: always
  type: dict
  sample:
    storm: true
    severity: critical
    reasons: ["rejected connections per second is 40, above the critical threshold 1"]
  contains:
    storm:
      description: True when any threshold is reached or Redis is saturated.
      type: bool
      returned: always
      sample: true
    severity:
      description: V(none), V(warning) or V(critical).
      type: str
      returned: always
      sample: critical
    reasons:
      description: One sentence per reached threshold, with the value and the threshold.
      type: list
      elements: str
      returned: always
      sample: ["client utilization (connected/maxclients) is 1, above the critical threshold 0.95"]
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.fintech.redis_storm.plugins.module_utils import group_clients
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import DEFAULT_THRESHOLDS, READ_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    HAS_REDIS,
    REDIS_ARG_SPEC,
    REDIS_IMPORT_ERROR,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import SENTINEL_ARG_SPEC


def _levels(name: str) -> Dict[str, Any]:
    return {"type": "dict", "apply_defaults": True, "options": {
        level: {"type": "float", "default": value} for level, value in DEFAULT_THRESHOLDS[name].items()}}


def main() -> None:
    argument_spec = dict(
        REDIS_ARG_SPEC,
        **SENTINEL_ARG_SPEC,
        **READ_ARG_SPEC,
        fail_on_unreachable={"type": "bool", "default": False},
        thresholds={"type": "dict", "apply_defaults": True,
                    "options": {name: _levels(name) for name in DEFAULT_THRESHOLDS}},
    )
    module = AnsibleModule(argument_spec=argument_spec, supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    params = module.params
    try:
        result = group_clients.collect(params, params["top"], sample_seconds=params["sample_seconds"],
                                       latency_samples=params["latency_samples"], thresholds=params["thresholds"],
                                       wave_wait_seconds=params["wave_wait_seconds"])
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    if (result.get("stale_cache") or {}).get("warning"):
        module.warn(result["stale_cache"]["warning"])
    if not result["reachable"] and not result["saturated"] and params["fail_on_unreachable"]:
        module.fail_json(msg=result["error"], **result)
    module.exit_json(changed=False, **result)


if __name__ == "__main__":
    main()
