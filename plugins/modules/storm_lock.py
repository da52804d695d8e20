#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: storm_lock
short_description: Take or release the incident lock (a Kubernetes Lease)
description:
  - Guards an incident's mitigations against two runs acting at once (two operators, or AWX and EDA).
  - The lock is the coordination.k8s.io/v1 Lease C(redis-storm-lock-<name>) in O(ledger_namespace).
    Writes carry a resourceVersion precondition, so of two simultaneous acquirers exactly one wins.
  - A lock held by someone else is refused with who holds it and until when.
  - Expiry is judged by this machine's clock, as client-go's leader election does, never by the holder's
    C(renewTime) (written with the holder's clock). A lock that looks expired is watched, and taken over only
    once it has stayed unchanged for its whole duration; if its holder renews it meanwhile, the acquirer is refused.
  - Acquiring a lock already held by the same O(holder) renews it. While a run lives, its mutating modules renew
    it before each write (their O(fintech.redis_storm.feature_flag#module:lock) option).
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  incident_id:
    description:
      - The incident; names the lock unless O(name) is given.
    type: str
    required: true
  name:
    description:
      - Lock name, e.g. the Redis deployment, so that runs of different incidents on the same Redis exclude
        each other. Defaults to O(incident_id).
    type: str
  state:
    description:
      - V(acquired) takes (or renews) the lock; V(released) gives it back.
    type: str
    choices: [acquired, released]
    default: acquired
  holder:
    description:
      - Who holds the lock. Defaults to C(<user>@<hostname>) of the machine running the module.
    type: str
  ttl_seconds:
    description:
      - How long the lock holds without renewal; after that anyone may take it over.
    type: int
    default: 900
  takeover_wait_seconds:
    description:
      - At most how long to watch a lock that looks expired before taking it over. A lock whose duration is longer
        is refused at once, saying so. Defaults to the lock's own duration.
    type: int
  force:
    description:
      - Take over or release a lock held by someone else at once. Only when you know that run is gone.
    type: bool
    default: false
  ledger_namespace:
    description:
      - Namespace of the Lease.
    type: str
    default: redis-storm
extends_documentation_fragment:
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the Lease and reports whether the lock would be taken or refused; writes nothing.
  diff_mode:
    support: full
    description: Shows the lock's holder and expiry before and after.
"""

EXAMPLES = r"""
- name: Lock the incident for this run
  fintech.redis_storm.storm_lock:
    incident_id: "{{ incident_id }}"
    name: "{{ inventory_hostname }}"
    ttl_seconds: 1800

- name: Unlock
  fintech.redis_storm.storm_lock:
    incident_id: "{{ incident_id }}"
    name: "{{ inventory_hostname }}"
    state: released
"""

RETURN = r"""
acquired:
  description: Whether this run holds the lock afterwards.
  returned: always
  type: bool
  sample: true
holder:
  description: Who holds (or held) the lock.
  returned: always
  type: str
  sample: "sre@bastion-1"
lease_transitions:
  description: How many times the lock changed hands; the run's modules refuse to write once it differs.
  returned: always
  type: int
  sample: 0
expires_at:
  description: When the lock expires unless renewed (ISO 8601 UTC, by the holder's clock); null when released.
  returned: always
  type: str
  sample: "2026-11-26T06:15:00Z"
refused:
  description: True when the lock is held by someone else (the task fails).
  returned: when refused
  type: bool
  sample: true
lease:
  description: The Lease object.
  returned: success
  type: dict
  sample: {"namespace": "redis-storm", "name": "redis-storm-lock-payments-redis"}
diff:
  description: The lock's holder and expiry before and after.
  returned: when diff mode is on
  type: dict
  sample: {"before": {}, "after": {"holder": "sre@bastion-1", "expires_at": "2026-11-26T06:15:00Z"}}
msg:
  description: What happened.
  returned: always
  type: str
  sample: "acquired lock redis-storm/redis-storm-lock-payments-redis"
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import KUBE_ARG_SPEC, Kube, run_kube_module
from ansible_collections.fintech.redis_storm.plugins.module_utils.lease import Lock


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            incident_id={"type": "str", "required": True},
            name={"type": "str"},
            state={"type": "str", "default": "acquired", "choices": ["acquired", "released"]},
            holder={"type": "str"},
            ttl_seconds={"type": "int", "default": 900},
            takeover_wait_seconds={"type": "int"},
            force={"type": "bool", "default": False},
            ledger_namespace={"type": "str", "default": "redis-storm"},
            **KUBE_ARG_SPEC,
        ),
        supports_check_mode=True,
    )
    params = module.params

    def work(kube: Kube) -> Dict[str, Any]:
        lock = Lock(kube, params["ledger_namespace"], params["name"] or params["incident_id"],
                    holder=params["holder"], check_mode=module.check_mode,
                    takeover_wait=params["takeover_wait_seconds"])
        if params["state"] == "acquired":
            return lock.acquire(params["ttl_seconds"], force=params["force"])
        return lock.release(force=params["force"])

    run_kube_module(module, work)


if __name__ == "__main__":
    main()
