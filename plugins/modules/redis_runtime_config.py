#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: redis_runtime_config
short_description: Change Redis' connection limits at runtime, with the originals kept in the incident ledger
description:
  - CONFIG SET of the connection-related directives Redis accepts at runtime, C(timeout), C(maxclients),
    C(maxmemory-clients) and C(tcp-keepalive). Any other name is refused.
  - Reads each directive with CONFIG GET first and sets only those that differ, so a second run reports
    C(changed=false). Values are compared as CONFIG GET shows them (C(64mb) reads back as C(67108864)).
  - Before the first CONFIG SET the original values are recorded in the incident's ledger ConfigMap
    C(redis-storm-ledger-<incident_id>) in the cluster (target C(redis), endpoint C(host:port)), so
    O(state=restored) or M(fintech.redis_storm.storm_rollback) can put them back from any machine.
  - A C(maxclients) above what the server's open-files limit allows fails with the highest value Redis can take.
  - When Redis is at maxclients our own connection is refused; the module then fails and says which
    Kubernetes-side rungs can free connections first.
  - Pointed at a replica (without O(sentinels) or O(cluster=true)) it refuses to apply and names the master, so a
    replica is never written by mistake.
  - With O(sentinels), the master is found through the Sentinels and every node of the group (master and live
    replicas) is changed, each with its own ledger entry, so a failover cannot bring the old value back. Each changed
    node is persisted with C(CONFIG REWRITE) where the server allows it (RV(persisted), and the diff's header).
    A failover since the incident's first change is reported (RV(failover)); restore puts back every node by its
    own run_id. O(cluster=true) and O(sentinels) together are an error.
  - Where CONFIG is renamed away (managed Redis such as ElastiCache or Memorystore) it fails with
    RV(config_disabled) and names the provider's console or API to use instead.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  settings:
    description:
      - 'Directive name to value, for example C({maxclients: 20000, timeout: 300}).'
      - C(maxmemory-clients) takes bytes, a size (C(64mb), C(1gb)) or a percentage of maxmemory (C(5%)).
      - Required for O(state=applied); ignored for O(state=restored), which puts back every open ledger entry
        of the incident for this Redis.
    type: dict
    default: {}
  capacity:
    description:
      - Size the C(maxclients) raise from memory headroom instead of giving it in O(settings), so the extra clients'
        buffers cannot run Redis out of memory (past C(maxmemory) it evicts data or refuses writes; past the
        container's limit the pod is OOM-killed and every connection drops at once).
      - The raise is the smallest of the wanted value (O(capacity.maxclients), or the current one times
        O(capacity.factor)), O(capacity.ceiling), and the connected clients plus as many as fit, at
        O(capacity.client_memory) each, in the headroom under C(maxmemory) (against C(used_memory)) and the container
        limit (against C(used_memory_rss)), less O(capacity.reserve_percent). Without either bound the host's memory
        is used, and said. maxclients is never lowered.
      - Where Redis has C(maxmemory-clients) (7.0+) and it is unset, it is set with the raise to the clients' memory
        now plus that headroom, so clients that outgrow it are disconnected instead of the server being killed.
      - What was assumed is returned in RV(assumed) and shown in the diff's header.
    type: dict
    suboptions:
      maxclients:
        description:
          - The maxclients wanted; the headroom may allow less. Default the current value times O(capacity.factor).
        type: int
      factor:
        description: Growth of maxclients when O(capacity.maxclients) is not given.
        type: float
        default: 1.5
      ceiling:
        description: Never raise maxclients above this.
        type: int
        default: 20000
      memory_limit:
        description: The Redis container's memory limit (bytes, or a quantity such as C(2Gi)), when known.
        type: str
      workload:
        description: Read the memory limit from this StatefulSet or Deployment's Redis container instead.
        type: dict
        suboptions:
          namespace:
            description: Namespace of the workload.
            type: str
            required: true
          name:
            description: Name of the workload.
            type: str
            required: true
          kind:
            description: Kind of the workload.
            type: str
            choices: [StatefulSet, Deployment]
            default: StatefulSet
          container:
            description: The Redis container's name; default C(redis), else the first container.
            type: str
      client_memory:
        description:
          - Memory assumed per client, at least (bytes or a size such as C(64kb)); more when Redis reports more.
          - An idle client takes about 40 KiB on Redis 7; a busy one's buffers far more.
        type: str
        default: 64kb
      reserve_percent:
        description: Part of each memory bound kept free.
        type: int
        default: 10
  state:
    description:
      - C(applied) sets O(settings); C(restored) puts back what the incident's ledger recorded for this Redis.
    type: str
    choices: [applied, restored]
    default: applied
  incident_id:
    description: The incident the change belongs to; names the ledger ConfigMap.
    type: str
    required: true
  ledger_namespace:
    description: Namespace of the ledger ConfigMap.
    type: str
    default: redis-storm
  force:
    description:
      - Restore even when a directive was changed by someone after us (drift). Without it such a restore is refused
        with the directive, the value we set and the value found.
    type: bool
    default: false
  rung:
    description: The ladder rung this change belongs to, recorded in the ledger entry.
    type: str
  allow_maxclients_below_connected:
    description:
      - Allow a C(maxclients) lower than the clients connected right now (every new connection would be refused).
    type: bool
    default: false
  kubeconfig:
    description:
      - Kubeconfig for the cluster that holds the ledger. Falls back to E(K8S_AUTH_KUBECONFIG),
        then C(~/.kube/config), then in-cluster.
    type: path
  context:
    description: The kubeconfig context to use. Falls back to E(K8S_AUTH_CONTEXT).
    type: str
  kube_host:
    description:
      - URL of the Kubernetes API server (C(host) of the kubernetes.core modules). Falls back to E(K8S_AUTH_HOST).
    type: str
  api_key:
    description: Bearer token for the API server. Falls back to E(K8S_AUTH_API_KEY).
    type: str
  kube_validate_certs:
    description:
      - Verify the API server's certificate (C(validate_certs) of the kubernetes.core modules). Falls back to
        E(K8S_AUTH_VERIFY_SSL).
    type: bool
  ca_cert:
    description: CA bundle that signed the API server's certificate. Falls back to E(K8S_AUTH_SSL_CA_CERT).
    type: path
    aliases: [ssl_ca_cert]
  request_timeout:
    description: Seconds to wait for each Kubernetes API call.
    type: float
    default: 10.0
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.redis
  - fintech.redis_storm.redis_sentinel
attributes:
  check_mode:
    support: full
    description: Reads CONFIG GET and the ledger only; no CONFIG SET and no ledger write. C(changed) and the diff are
      what a real run would report.
  diff_mode:
    support: full
    description: The directives' values before and after.
requirements:
  - kubernetes (the Python client, for the ledger)
seealso:
  - module: fintech.redis_storm.storm_rollback
  - module: fintech.redis_storm.redis_clients_info
"""

EXAMPLES = r"""
- name: Give Redis room for more clients and reap idle connections
  fintech.redis_storm.redis_runtime_config:
    host: "{{ storm_redis_host }}"
    password: "{{ storm_redis_password }}"
    kubeconfig: "{{ storm_kubeconfig }}"
    incident_id: "{{ incident_id }}"
    rung: redis_capacity
    settings:
      maxclients: 20000
      timeout: 300

- name: Put the original values back
  fintech.redis_storm.redis_runtime_config:
    host: "{{ storm_redis_host }}"
    password: "{{ storm_redis_password }}"
    incident_id: "{{ incident_id }}"
    state: restored
"""

RETURN = r"""
changed:
  description: Whether a directive was (or in check mode would be) changed.
  returned: always
  type: bool
  sample: true
before:
  description: Values of the directives before the change, as CONFIG GET shows them.
  returned: always
  type: dict
  sample: {maxclients: "1000", timeout: "0"}
after:
  description: Values after the change (what was set, or what restore put back).
  returned: always
  type: dict
  sample: {maxclients: "20000", timeout: "300"}
diff:
  description: C(before) and C(after) in diff mode.
  returned: when diff mode is on
  type: dict
  sample: {before: {maxclients: "1000"}, after: {maxclients: "20000"}}
ledger:
  description: The ledger ConfigMap and the entry written (C(entry_id) null when nothing was recorded).
  returned: always
  type: dict
  sample: {configmap: redis-storm-ledger-storm-20261126-0545, namespace: redis-storm, entry_id: entry-0004}
msg:
  description: What was done, in one line.
  returned: always
  type: str
  sample: "set maxclients=20000, timeout=300 on Redis at 10.0.0.5:6379"
assumed:
  description: With O(capacity), what the sizing assumed (cost per client, memory bounds, reserve, maxmemory-clients).
  returned: when capacity is given
  type: list
  elements: str
  sample: ["65536 bytes per client (the client_memory floor; Redis counts 113 per connected client now)"]
max_clients_allowed:
  description: The highest maxclients the server's open-files limit allows, when the requested one was too high.
  returned: on that failure
  type: int
  sample: 992
persisted:
  description: With O(sentinels), per changed node, V(true) when CONFIG REWRITE saved it, else why not.
  returned: with sentinels, when a node changed
  type: dict
  sample: {"10.0.0.5:6379": true, "10.0.0.6:6379": "not persisted: ERR The server is running without a config file"}
sentinel:
  description: The Sentinel group as the Sentinels gave it (name, sentinels, master, replicas, replicas_down).
  returned: with sentinels
  type: dict
  sample: {name: payments, master: "10.0.0.5:6379", replicas: ["10.0.0.6:6379"], replicas_down: []}
failover:
  description: A failover in the group since the incident first changed it (the master's run_id differs).
  returned: when one happened
  type: dict
  sample: {group: payments, master_was: "10.0.0.5:6379", master: "10.0.0.6:6379", msg: "failover in group ..."}
config_disabled:
  description: True when the server refuses CONFIG (renamed away, as managed Redis services do).
  returned: on that failure
  type: bool
  sample: true
replica:
  description: True when the module refused to write to a replica; RV(master) names its master.
  returned: on that failure
  type: bool
  sample: true
master:
  description: The master of the replica the module refused to write to.
  returned: on that failure
  type: str
  sample: "10.0.0.5:6379"
saturated:
  description: True when the failure is Redis refusing our connection at maxclients.
  returned: on that failure
  type: bool
  sample: true
"""

from typing import Optional, Union

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_cluster_rungs
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.group_config import GroupConfig
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, kubernetes_missing
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import fence_writes
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import Ledger
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_config import (
    RuntimeConfig,
    argument_spec,
    open_redis,
    renamed_kube_options,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    HAS_REDIS,
    REDIS_IMPORT_ERROR,
    endpoint,
    redis_options,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import (
    SENTINEL_ARG_SPEC,
    discover,
    given,
    refuse_replica,
)


def main() -> None:
    module = AnsibleModule(argument_spec=dict(argument_spec(), **SENTINEL_ARG_SPEC), supports_check_mode=True)
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    missing = kubernetes_missing()
    if missing:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=missing)
    params = module.params
    config: Optional[Union[GroupConfig, RuntimeConfig]] = None
    try:
        sentinel = given(params)  # cluster: true beside sentinels fails here, before the lock or Redis is touched
        kube = Kube(renamed_kube_options(params))
        ledger = Ledger(kube, params["incident_id"], params["ledger_namespace"])
        # CONFIG SET is no Kubernetes write: the lock is held before it, and again before each ledger write
        fence_writes(kube, params, module.check_mode)
        kwargs = {"check_mode": module.check_mode, "force": params["force"], "rung": params["rung"],
                  "allow_below_connected": params["allow_maxclients_below_connected"]}
        if sentinel:
            config = GroupConfig(discover(params), redis_options(params), ledger, **kwargs)
        elif params["cluster"]:
            result = redis_cluster_rungs.runtime_config(params, ledger, module.check_mode)
            where = "Redis Cluster at %s" % endpoint(redis_options(params))
        else:
            client, options = open_redis(params)
            config = RuntimeConfig(client, options, ledger, **kwargs)
            if params["state"] == "applied":
                refuse_replica(client, options, "CONFIG SET")
        if config is not None:
            where = config.where
            if params["state"] == "restored":
                result = config.restore()
            else:
                result = config.apply(params["settings"], params["capacity"])
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    finally:
        if config is not None:
            config.close()
    if result.get("failover"):
        module.warn(result["failover"]["msg"])
    header = result.pop("header", None)
    if module._diff:
        result["diff"] = {"before": result["before"], "after": result["after"]}
        if header:
            result["diff"]["after_header"] = header
        if result.get("assumed"):
            result["diff"]["after_header"] = "%s, assumed: %s" % (
                header or "Redis at %s" % where, "; ".join(result["assumed"]))
    module.exit_json(**result)


if __name__ == "__main__":
    main()
