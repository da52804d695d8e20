#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storm_rung
short_description: Cooldowns and attempt caps of the mitigation ladder, kept in the cluster
description:
  - Keeps, per incident, rung and O(target), how many times the rung started, when it last started and finished, and
    its outcome, in C(rungs.json) of the incident's ledger ConfigMap, so the limits hold across machines
    and AWX nodes.
  - V(query) says whether the rung may start now (C(allowed), C(reason)) and writes nothing.
  - V(started) counts an attempt, and is refused when O(max_attempts) are used up or the O(cooldown_seconds)
    since the last start have not passed (unless O(force=true)).
  - V(finished) records the outcome of the attempt.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  incident_id:
    description:
      - The incident.
    type: str
    required: true
  rung:
    description:
      - The rung, e.g. C(offender_scale_down).
    type: str
    required: true
  target:
    description:
      - What the rung acts for, e.g. the Redis deployment (the inventory host). Each target has its own
        record, so with several Redis hosts in one incident one host's cooldown does not hold back another's rung.
      - Without it the record is the rung's alone, for the whole incident.
    type: str
  state:
    description:
      - V(query), V(started) or V(finished).
    type: str
    choices: [query, started, finished]
    default: query
  max_attempts:
    description:
      - How many times the rung may start in one incident. No cap when omitted.
    type: int
  cooldown_seconds:
    description:
      - Seconds that must pass between two starts of the rung.
    type: int
    default: 0
  outcome:
    description:
      - With V(finished), how the attempt ended, e.g. C(recovered), C(not_recovered), C(failed).
    type: str
    default: done
  force:
    description:
      - With V(started), start even when the cap or cooldown says no.
    type: bool
    default: false
  ledger_namespace:
    description:
      - Namespace of the ledger ConfigMap.
    type: str
    default: redis-storm
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reports what would be recorded; writes nothing.
  diff_mode:
    support: full
    description: Shows the rung's record before and after.
"""

EXAMPLES = r"""
- name: May the scale-down rung run again?
  fintech.redis_storm.storm_rung:
    incident_id: "{{ incident_id }}"
    rung: offender_scale_down
    target: "{{ inventory_hostname }}"
    max_attempts: 2
    cooldown_seconds: 600
  register: rung

- name: Count the attempt
  fintech.redis_storm.storm_rung:
    incident_id: "{{ incident_id }}"
    rung: offender_scale_down
    target: "{{ inventory_hostname }}"
    state: started
    max_attempts: 2
    cooldown_seconds: 600
  when: rung.allowed
"""

RETURN = r"""
allowed:
  description: Whether the rung may start (for V(finished), the next start).
  returned: always
  type: bool
  sample: false
reason:
  description: Why, in words.
  returned: always
  type: str
  sample: "ran 5 min ago, cooldown 600 s (300 s left)"
target:
  description: The target the record belongs to (null without one).
  returned: always
  type: str
  sample: "payments-redis"
attempts:
  description: Starts counted so far in this incident.
  returned: always
  type: int
  sample: 1
last_started_at:
  description: When the rung last started (ISO 8601 UTC).
  returned: always
  type: str
  sample: "2026-11-26T05:50:00Z"
last_finished_at:
  description: When the rung last finished (ISO 8601 UTC).
  returned: always
  type: str
  sample: "2026-11-26T05:52:00Z"
outcome:
  description: The last recorded outcome (C(running) while an attempt is under way).
  returned: always
  type: str
  sample: "recovered"
refused:
  description: True when V(started) was refused.
  returned: when refused
  type: bool
  sample: true
diff:
  description: The rung's record (attempts, times, outcome) before and after.
  returned: when diff mode is on
  type: dict
  sample: {"before": {}, "after": {"attempts": 1, "last_started_at": "2026-11-26T05:50:00Z", "outcome": "running"}}
msg:
  description: What happened.
  returned: always
  type: str
  sample: "offender_scale_down: attempt 1 started"
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC, Kube, run_kube_module
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import LOCK_ARG_SPEC, fence_writes
from ansible_collections.fintech.redis_storm.plugins.module_utils.rung_records import Rungs


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            incident_id={"type": "str", "required": True},
            rung={"type": "str", "required": True},
            target={"type": "str"},
            state={"type": "str", "default": "query", "choices": ["query", "started", "finished"]},
            max_attempts={"type": "int"},
            cooldown_seconds={"type": "int", "default": 0},
            outcome={"type": "str", "default": "done"},
            force={"type": "bool", "default": False},
            ledger_namespace={"type": "str", "default": "redis-storm"},
            **LOCK_ARG_SPEC,
            **KUBE_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    params = module.params

    def work(kube: Kube) -> Dict[str, Any]:
        fence_writes(kube, params, module.check_mode)
        rungs = Rungs(kube, params["incident_id"], params["ledger_namespace"], check_mode=module.check_mode,
                      target=params["target"])
        limits = (params["max_attempts"], params["cooldown_seconds"])
        if params["state"] == "query":
            return rungs.query(params["rung"], *limits)
        if params["state"] == "started":
            return rungs.started(params["rung"], *limits, force=params["force"])
        return rungs.finished(params["rung"], params["outcome"], *limits)

    run_kube_module(module, work)


if __name__ == "__main__":
    main()
