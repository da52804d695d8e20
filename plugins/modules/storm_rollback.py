#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storm_rollback
short_description: Undo every mitigation of an incident from its ledger
description:
  - Reads the incident's undo ledger ConfigMap and restores its open entries in dependency order, putting back
    the recorded values of the fields each mitigation changed (and deleting objects it created), Kubernetes entries
    newest first, then Redis entries. An entry waits for the newer entries of the same object or server, for the
    entries that reference an object it created (the Ingress naming a Traefik Middleware), and a Redis entry waits
    for every entry that adds clients.
  - An entry that cannot be restored (drifted, failed, refused, deferred, skipped) holds back the entries that wait
    for it (blocked); independent entries are still restored. The module then fails, listing what is left (RV(left))
    and the command that finishes it (RV(next)).
  - Drift (a field changed after the mitigation) is not restored unless O(force=true).
  - Only what the mitigations write is restored (the kinds, fields and Redis directives they own), within
    O(allowed_namespaces) and outside O(protected_workloads); anything else is refused, naming the entry.
  - With O(redis), Redis entries are matched by the server's own run_id and replication id, whatever the spelling
    of its address; entries that add clients (scale-ups, autoscalers unpaused) run only while Redis has headroom, a
    scale-up in steps checked against Redis; maxclients goes back down only when the connected clients are below
    the old value with a margin, else it stays raised and the entry stays pending (deferred) for a later rollback.
    When Redis cannot be reached, its entries are left and the Kubernetes entries still restored.
  - A second rollback changes nothing.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  incident_id:
    description:
      - The incident to roll back.
    type: str
    required: true
  ledger_namespace:
    description:
      - Namespace of the undo ledger ConfigMap.
    type: str
    default: redis-storm
  force:
    description:
      - Restore over drift.
    type: bool
    default: false
  allowed_namespaces:
    description:
      - Namespaces a restore may write to (the guard rail the mitigations use); an entry elsewhere is refused.
    type: list
    elements: str
    default: []
  protected_workloads:
    description:
      - C(namespace/name) or C(namespace/*) of workloads never scaled or unpaused; their entries are refused.
    type: list
    elements: str
    default: []
  headroom_percent:
    description:
      - Redis must keep this share of its client limit free. Entries that add clients run only while
        C(connected_clients) is below (100 - this)% of C(maxclients); C(maxclients) is lowered only when
        C(connected_clients) is below (100 - this)% of the old value.
    type: int
    default: 20
  scale_up_step_percent:
    description:
      - A scale-up on the way back adds at most this percentage of the current replicas per step (at least one).
    type: int
    default: 50
  scale_up_settle_seconds:
    description:
      - Seconds given to the new pods of a scale-up step to open their connections before Redis is checked again.
    type: float
    default: 10.0
  redis:
    description:
      - How to reach Redis, to restore runtime configuration entries and to check its headroom before anything
        that adds clients. Without it Redis entries are left (the module fails) and scale-ups are not checked.
    type: dict
    suboptions:
      host:
        description: Redis host.
        type: str
        default: 127.0.0.1
      port:
        description: Redis port.
        type: int
        default: 6379
      username:
        description: ACL user name.
        type: str
      password:
        description: Password.
        type: str
      tls:
        description: Connect with TLS.
        type: bool
        default: false
      ca_path:
        description: CA bundle to verify the server certificate.
        type: path
      validate_certs:
        description: Verify the server certificate.
        type: bool
        default: true
      socket_timeout:
        description: Seconds to wait for Redis.
        type: float
        default: 3.0
      cluster:
        description:
          - Redis is a Redis Cluster and O(redis.host)/O(redis.port) name one node. Each Redis entry is restored on
            the node it was recorded on (the address in its target, matched by that node's run_id), with the same
            credentials; headroom before scale-ups is judged on O(redis.host)/O(redis.port).
          - Not with O(redis.sentinels).
        type: bool
        default: false
      sentinels:
        description:
          - The Sentinels of a Redis group, C(host:port) each. Every node of the group (master and replicas) is
            connected, and each Redis entry is restored on the node whose run_id it recorded, whichever is the
            master after a failover.
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
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Judges every entry against the live objects and validates deletes and patches with a
      server-side dry run; writes nothing, not even the ledger.
  diff_mode:
    support: full
    description: Shows, per object, the fields put back as they are now and as they will be.
"""

EXAMPLES = r"""
- name: Roll back everything this incident changed
  fintech.redis_storm.storm_rollback:
    incident_id: "{{ incident_id }}"
    redis:
      host: "{{ storm_redis_host }}"
      port: "{{ storm_redis_port }}"
      password: "{{ storm_redis_password }}"
  register: rollback

- name: Roll back over later human changes
  fintech.redis_storm.storm_rollback:
    incident_id: "{{ incident_id }}"
    force: true
"""

RETURN = r"""
summary:
  description: How many open entries ended in each outcome.
  returned: always
  type: dict
  sample: {"restored": 3, "drifted": 0, "missing": 0, "skipped": 1, "failed": 0, "unapplied": 0, "blocked": 0,
           "deferred": 0, "refused": 0}
entries:
  description:
    - One item per open entry, newest first, with its C(outcome) (restored, drifted, missing, skipped, failed,
      unapplied), C(changed), C(msg), C(fields) ({path, live, restored}) and C(drift) ({field, set, found}).
  returned: always
  type: list
  elements: dict
  sample: [{"entry_id": "entry-0002", "module": "workload_scale", "target": "Deployment trading/api/scale",
            "outcome": "restored", "changed": true, "msg": "entry-0002: put back spec.replicas",
            "fields": [{"path": ["spec", "replicas"], "live": 3, "restored": 6}], "drift": []}]
left:
  description: The entries not restored, each with its C(outcome) and the C(reason).
  returned: always
  type: list
  elements: dict
  sample: [{"entry_id": "entry-0001", "target": "Redis 10.0.0.5:6379", "outcome": "deferred",
            "reason": "entry-0001: deferred: maxclients stays at 1500: 1200 clients are connected, not below 800"}]
next:
  description: What to do about what is left, with the command that finishes the rollback.
  returned: when something is left
  type: list
  elements: str
  sample: ["drifted: check who changed those fields; to restore over their change run ansible-playbook ..."]
ledger:
  description: The ledger ConfigMap.
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0001"}
diff:
  description: The restored fields, by object, before (live) and after (as recorded in the ledger).
  returned: when diff mode is on
  type: dict
  sample: {"before": {"Deployment trading/api/scale": {"spec": {"replicas": 3}}},
           "after": {"Deployment trading/api/scale": {"spec": {"replicas": 6}}}}
msg:
  description: Counts, and what blocked the rollback when something did.
  returned: always
  type: str
  sample: "rollback of incident inc-1: 3 restored"
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import GUARD_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC, Kube, run_kube_module
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import LOCK_ARG_SPEC, fence_writes
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import REDIS_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import SENTINEL_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.rollback import rollback


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            incident_id={"type": "str", "required": True},
            ledger_namespace={"type": "str", "default": "redis-storm"},
            force={"type": "bool", "default": False},
            redis={"type": "dict", "options": dict(REDIS_ARG_SPEC, **SENTINEL_ARG_SPEC)},
            headroom_percent={"type": "int", "default": 20},
            scale_up_step_percent={"type": "int", "default": 50},
            scale_up_settle_seconds={"type": "float", "default": 10.0},
            **GUARD_ARG_SPEC,
            **LOCK_ARG_SPEC,
            **KUBE_ARG_SPEC,
        ),
        supports_check_mode=True,
    )

    def work(kube: Kube) -> Dict[str, Any]:
        fence_writes(kube, module.params, module.check_mode)
        return rollback(kube, module.params, module.check_mode)

    run_kube_module(module, work)


if __name__ == "__main__":
    main()
