#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: hpa_pause
short_description: Stop an autoscaler from scaling a Redis client up, undoably
description:
  - For a HorizontalPodAutoscaler (autoscaling/v2), sets C(spec.behavior.scaleUp.selectPolicy) to
    C(Disabled) and pins C(spec.maxReplicas) to the current replicas (C(status.currentReplicas), else the
    target's scale subresource), so retries and load cannot add pods that open more Redis connections.
  - For a KEDA ScaledObject, sets the annotation C(autoscaling.keda.sh/paused) to C("true").
  - The prior values go to the incident's undo ledger; O(state=restored) puts them back.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  kind:
    description:
      - The autoscaler kind.
    type: str
    choices: [HorizontalPodAutoscaler, ScaledObject]
    default: HorizontalPodAutoscaler
  namespace:
    description:
      - Namespace of the autoscaler.
    type: str
    required: true
  name:
    description:
      - Name of the autoscaler.
    type: str
    required: true
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.mitigation
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the autoscaler and validates the change with a server-side dry run; writes nothing.
  diff_mode:
    support: full
    description: Shows the owned fields before and after.
notes:
  - O(protected_workloads) is checked against both the autoscaler and its scale target.
  - Once paused, a second run keeps the pinned C(maxReplicas) even if the current replicas changed.
"""

EXAMPLES = r"""
- name: Pause the worst offender's HPA
  fintech.redis_storm.hpa_pause:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    allowed_namespaces: "{{ storm_namespaces }}"

- name: Pause a KEDA ScaledObject
  fintech.redis_storm.hpa_pause:
    incident_id: "{{ incident_id }}"
    kind: ScaledObject
    namespace: payments
    name: payments-worker
    allowed_namespaces: "{{ storm_namespaces }}"

- name: Resume it
  fintech.redis_storm.hpa_pause:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    state: restored
    allowed_namespaces: "{{ storm_namespaces }}"
"""

RETURN = r"""
paused:
  description: Whether the autoscaler is paused afterwards (or would be, in check mode).
  returned: always
  type: bool
  sample: true
max_replicas:
  description: The HPA's C(maxReplicas) afterwards (null for a ScaledObject).
  returned: always
  type: int
  sample: 6
before:
  description: The owned fields before.
  returned: always
  type: dict
  sample: {"spec": {"maxReplicas": 20}}
after:
  description: The owned fields after.
  returned: always
  type: dict
  sample: {"spec": {"maxReplicas": 6, "behavior": {"scaleUp": {"selectPolicy": "Disabled"}}}}
diff:
  description: Before and after of the owned fields.
  returned: when diff mode is on
  type: dict
  sample: {"before": {"spec": {"maxReplicas": 20}},
           "after": {"spec": {"maxReplicas": 6, "behavior": {"scaleUp": {"selectPolicy": "Disabled"}}}}}
ledger:
  description: Where the change was recorded; O(state=restored) lists the entries it closed in C(entry_ids).
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0003",
           "entry_ids": ["entry-0003"]}
msg:
  description: What was done.
  returned: always
  type: str
  sample: "set HorizontalPodAutoscaler trading/trading-api: spec.behavior.scaleUp.selectPolicy, spec.maxReplicas"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import (
    mitigation_argument_spec,
    run_module,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.workloads import hpa_plan, paused_of


def main() -> None:
    module = AnsibleModule(
        argument_spec=mitigation_argument_spec(
            kind={"type": "str", "default": "HorizontalPodAutoscaler",
                  "choices": ["HorizontalPodAutoscaler", "ScaledObject"]},
            namespace={"type": "str", "required": True},
            name={"type": "str", "required": True},
        ),
        supports_check_mode=True,
    )
    run_module(module, hpa_plan, extra=lambda result: paused_of(result, module.params["kind"], module.params["state"]))


if __name__ == "__main__":
    main()
