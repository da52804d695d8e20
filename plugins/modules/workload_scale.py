#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: workload_scale
short_description: Scale a Deployment or StatefulSet through its scale subresource, undoably
description:
  - Sets the replicas of a Deployment or StatefulSet through C(/scale), after recording the current
    replicas in the incident's undo ledger. Used to scale down the noisiest Redis clients, and to scale
    Redis itself.
  - Guard rails refuse namespaces outside O(allowed_namespaces), workloads in O(protected_workloads),
    a result below O(min_replicas) and a cut larger than O(max_reduction_percent).
  - O(state=restored) puts back the replicas the ledger recorded.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  kind:
    description:
      - Kind of the workload.
    type: str
    choices: [Deployment, StatefulSet]
    default: Deployment
  namespace:
    description:
      - Namespace of the workload.
    type: str
    required: true
  name:
    description:
      - Name of the workload.
    type: str
    required: true
  replicas:
    description:
      - The replica count to set. Mutually exclusive with O(reduce_by_percent).
    type: int
  reduce_by_percent:
    description:
      - Cut this percentage of the current replicas (the cut is rounded down; never below O(min_replicas)).
    type: float
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.mitigation
  - fintech.redis_storm.mitigation.replicas
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the workload and validates the change with a server-side dry run; writes nothing.
  diff_mode:
    support: full
    description: Shows the replicas before and after.
notes:
  - A Redis StatefulSet's new replicas each need a full sync from the master (fork and RDB transfer),
    which loads the master during a storm; the module warns about it.
"""

EXAMPLES = r"""
- name: Scale the noisiest client down by a third
  fintech.redis_storm.workload_scale:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    reduce_by_percent: 33
    min_replicas: 2
    allowed_namespaces: "{{ storm_namespaces }}"
    protected_workloads: "{{ storm_protected_workloads }}"

- name: Put the replicas back
  fintech.redis_storm.workload_scale:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    state: restored
    allowed_namespaces: "{{ storm_namespaces }}"
"""

RETURN = r"""
replicas_before:
  description: Replicas before the change (the live value when nothing changed).
  returned: always
  type: int
  sample: 6
replicas_after:
  description: Replicas after the change (or that check mode would set).
  returned: always
  type: int
  sample: 4
before:
  description: The owned fields before, as they appear in the scale object.
  returned: always
  type: dict
  sample: {"spec": {"replicas": 6}}
after:
  description: The owned fields after.
  returned: always
  type: dict
  sample: {"spec": {"replicas": 4}}
diff:
  description: Before and after of the owned fields.
  returned: when diff mode is on
  type: dict
  sample: {"before": {"spec": {"replicas": 6}}, "after": {"spec": {"replicas": 4}}}
ledger:
  description: Where the change was recorded; O(state=restored) lists the entries it closed in C(entry_ids).
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0002",
           "entry_ids": ["entry-0002"]}
msg:
  description: What was done.
  returned: always
  type: str
  sample: "set Deployment trading/trading-api/scale: spec.replicas"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.guards import REPLICA_GUARD_ARG_SPEC
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import (
    mitigation_argument_spec,
    run_module,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.workloads import replicas_of, scale_plan


def main() -> None:
    module = AnsibleModule(
        argument_spec=mitigation_argument_spec(
            kind={"type": "str", "default": "Deployment", "choices": ["Deployment", "StatefulSet"]},
            namespace={"type": "str", "required": True},
            name={"type": "str", "required": True},
            replicas={"type": "int"},
            reduce_by_percent={"type": "float"},
            **REPLICA_GUARD_ARG_SPEC,
        ),
        mutually_exclusive=[["replicas", "reduce_by_percent"]],
        required_if=[["state", "applied", ["replicas", "reduce_by_percent"], True]],
        supports_check_mode=True,
    )
    run_module(module, scale_plan, extra=replicas_of)


if __name__ == "__main__":
    main()
