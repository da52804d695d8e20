#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: feature_flag
short_description: Set feature flags kept in a ConfigMap, undoably
description:
  - Sets flag keys in a ConfigMap, for "disable aggressive retries" and "force the circuit breaker open".
  - V(plain) format sets each key to its value as a string.
  - V(flagd) format edits the flagd flag document in O(flagd_key), setting each flag's C(defaultVariant)
    to the variant whose value (or name) matches.
  - The prior values go to the incident's undo ledger; O(state=restored) puts them back.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  namespace:
    description:
      - Namespace of the ConfigMap.
    type: str
    required: true
  name:
    description:
      - Name of the ConfigMap.
    type: str
    required: true
  flags:
    description:
      - Flag keys and the values to set, for example key C(redis.retry.aggressive) with value C(false).
        Booleans are written as C(true) or C(false).
      - Required with O(state=applied).
    type: dict
  format:
    description:
      - How the ConfigMap holds the flags.
    type: str
    choices: [plain, flagd]
    default: plain
  flagd_key:
    description:
      - With O(format=flagd), the ConfigMap key holding the flagd JSON document.
    type: str
    default: flags.json
  workload:
    description:
      - The workload that reads these flags (C(name) or C(namespace/name)), checked against O(protected_workloads).
    type: str
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.mitigation
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the ConfigMap and validates the change with a server-side dry run; writes nothing.
  diff_mode:
    support: full
    description: Shows the owned keys before and after.
notes:
  - Apps read mounted ConfigMaps with a delay (kubelet sync period plus cache); values given as
    environment variables need a restart.
  - With V(flagd), the whole document key is owned, so any later edit of it counts as drift on restore.
"""

EXAMPLES = r"""
- name: Turn aggressive retries off
  fintech.redis_storm.feature_flag:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api-flags
    flags:
      redis.retry.aggressive: "false"
    workload: trading-api
    allowed_namespaces: "{{ storm_namespaces }}"
    protected_workloads: "{{ storm_protected_workloads }}"

- name: Force the circuit breaker open in a flagd document
  fintech.redis_storm.feature_flag:
    incident_id: "{{ incident_id }}"
    namespace: payments
    name: payments-flags
    format: flagd
    flags:
      redis.circuit_breaker.force_open: true
    allowed_namespaces: "{{ storm_namespaces }}"
"""

RETURN = r"""
before:
  description: The owned ConfigMap keys before.
  returned: always
  type: dict
  sample: {"data": {"redis.retry.aggressive": "true"}}
after:
  description: The owned ConfigMap keys after.
  returned: always
  type: dict
  sample: {"data": {"redis.retry.aggressive": "false"}}
diff:
  description: Before and after of the owned keys.
  returned: when diff mode is on
  type: dict
  sample: {"before": {"data": {"redis.retry.aggressive": "true"}},
           "after": {"data": {"redis.retry.aggressive": "false"}}}
ledger:
  description: Where the change was recorded; O(state=restored) lists the entries it closed in C(entry_ids).
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0001",
           "entry_ids": ["entry-0001"]}
msg:
  description: What was done.
  returned: always
  type: str
  sample: "set ConfigMap trading/trading-api-flags: data.redis.retry.aggressive"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.flags import flag_plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import (
    mitigation_argument_spec,
    run_module,
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=mitigation_argument_spec(
            namespace={"type": "str", "required": True},
            name={"type": "str", "required": True},
            flags={"type": "dict"},
            format={"type": "str", "default": "plain", "choices": ["plain", "flagd"]},
            flagd_key={"type": "str", "default": "flags.json", "no_log": False},
            workload={"type": "str"},
        ),
        required_if=[["state", "applied", ["flags"]]],
        supports_check_mode=True,
    )
    run_module(module, flag_plan)


if __name__ == "__main__":
    main()
