#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: ingress_rate_limit
short_description: Rate-limit an Ingress during a Redis storm, undoably (ingress-nginx or Traefik)
description:
  - The first rung of the ladder; lowers the request rate reaching the workloads that open Redis connections.
  - O(provider=nginx) sets the ingress-nginx annotations C(nginx.ingress.kubernetes.io/limit-rps), C(limit-rpm),
    C(limit-connections), C(limit-burst-multiplier) and C(limit-whitelist) from O(rps), O(rpm), O(connections),
    O(burst_multiplier) and O(whitelist), as quoted strings. Only the annotations given are owned.
  - O(provider=traefik) creates or updates the Middleware C(redis-storm-ratelimit-<ingress>) (C(spec.rateLimit)
    C(average), C(period), C(burst)) in the Ingress' namespace and appends C(<namespace>-<middleware>@kubernetescrd)
    to the Ingress annotation C(traefik.ingress.kubernetes.io/router.middlewares), keeping the middlewares
    already listed there.
  - O(state=restored) puts back the annotations the ledger recorded and deletes a Middleware this incident created.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  namespace:
    description:
      - Namespace of the Ingress.
    type: str
    required: true
  name:
    description:
      - Name of the Ingress.
    type: str
    required: true
  provider:
    description:
      - The ingress controller that serves the Ingress.
    type: str
    choices: [nginx, traefik]
    default: nginx
  rps:
    description:
      - Requests per second per client address (nginx), or the Middleware's C(average) with C(period=1s) (traefik).
    type: int
  rpm:
    description:
      - Requests per minute per client address (nginx), or the Middleware's C(average) with C(period=1m) (traefik).
    type: int
  connections:
    description:
      - Concurrent connections per client address (nginx only).
    type: int
  burst_multiplier:
    description:
      - nginx C(limit-burst-multiplier) (ingress-nginx defaults to 5). For traefik, C(burst) is O(rps) or O(rpm)
        times this when O(burst) is not given.
    type: int
  burst:
    description:
      - The Middleware's C(burst) (traefik only). Defaults to the average times O(burst_multiplier) (or 1).
    type: int
  whitelist:
    description:
      - Client addresses or CIDRs exempt from the limits (nginx C(limit-whitelist)). Each entry is validated.
    type: list
    elements: str
  workload:
    description:
      - The workload behind the Ingress (C(name) or C(namespace/name)), checked against O(protected_workloads).
    type: str
  traefik_api_version:
    description:
      - API version of Traefik's Middleware kind (C(traefik.containo.us/v1alpha1) for Traefik v2).
    type: str
    default: traefik.io/v1alpha1
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.mitigation
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the objects and validates the change with a server-side dry run; writes nothing.
  diff_mode:
    support: full
    description: Shows the owned annotations (and the Middleware's rateLimit) before and after.
notes:
  - ingress-nginx enforces limits in each controller replica independently, so with N replicas a client can get up
    to N times the limit; the module warns about it. Rejected requests get 503 from ingress-nginx, 429 from Traefik.
"""

EXAMPLES = r"""
- name: Limit the trading API to 50 requests per second per client
  fintech.redis_storm.ingress_rate_limit:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    provider: nginx
    rps: 50
    burst_multiplier: 2
    whitelist: [10.0.0.0/8]
    allowed_namespaces: "{{ storm_namespaces }}"

- name: The same behind Traefik
  fintech.redis_storm.ingress_rate_limit:
    incident_id: "{{ incident_id }}"
    namespace: wallet
    name: wallet-api
    provider: traefik
    rps: 100
    burst: 200
    allowed_namespaces: "{{ storm_namespaces }}"

- name: Remove the limit again
  fintech.redis_storm.ingress_rate_limit:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: trading-api
    state: restored
"""

RETURN = r"""
before:
  description:
    - The owned fields before the change. For traefik, keyed by object (C(Middleware ns/name), C(Ingress ns/name)).
  returned: always
  type: dict
  sample: {"metadata": {"annotations": {}}}
after:
  description: The owned fields after the change (or what check mode would set).
  returned: always
  type: dict
  sample: {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50"}}}
diff:
  description: Before and after of the owned fields.
  returned: when diff mode is on
  type: dict
  sample: {"before": {}, "after": {"metadata": {"annotations": {"nginx.ingress.kubernetes.io/limit-rps": "50"}}}}
ledger:
  description: Where the change was recorded; C(entry_ids) lists every entry written or closed.
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0001",
           "entry_ids": ["entry-0001"]}
middleware:
  description: The Traefik Middleware reference added to the router annotation.
  returned: when provider is traefik
  type: str
  sample: wallet-redis-storm-ratelimit-wallet-api@kubernetescrd
msg:
  description: What was done.
  returned: always
  type: str
  sample: "set Ingress trading/trading-api: metadata.annotations.nginx.ingress.kubernetes.io/limit-rps"
"""

from typing import Any, Dict

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import (
    mitigation_argument_spec,
    run_module,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.owned import middleware_reference
from ansible_collections.fintech.redis_storm.plugins.module_utils.rate_limit import (
    ARG_SPEC,
    build_plans,
    middleware_name,
)


def main() -> None:
    module = AnsibleModule(argument_spec=mitigation_argument_spec(**ARG_SPEC), supports_check_mode=True)
    params = module.params

    def extra(result: Dict[str, Any]) -> Dict[str, Any]:
        if params["provider"] != "traefik":
            return {}
        return {"middleware": middleware_reference(params["namespace"], middleware_name(params["name"]))}

    run_module(module, build_plans, extra=extra)


if __name__ == "__main__":
    main()
