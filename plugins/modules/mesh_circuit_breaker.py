#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: mesh_circuit_breaker
short_description: Cap connections to Redis and eject failing endpoints with an Istio DestinationRule, undoably
description:
  - Sets C(spec.trafficPolicy.connectionPool.tcp.maxConnections) and the C(spec.trafficPolicy.outlierDetection)
    keys given (C(consecutive5xxErrors), C(consecutiveGatewayErrors), C(interval), C(baseEjectionTime),
    C(maxEjectionPercent)) in the DestinationRule O(namespace)/O(name) for O(redis_host).
  - Creates the DestinationRule when it does not exist (recorded in the ledger as a creation, so restore deletes it).
    An existing rule for another host is refused.
  - Only the fields given are owned; other settings of the rule are left alone.
  - O(state=restored) puts back what the ledger recorded.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  namespace:
    description:
      - Namespace of the DestinationRule (the client workloads' namespace, or the mesh root namespace).
    type: str
    required: true
  name:
    description:
      - Name of the DestinationRule.
    type: str
    required: true
  redis_host:
    description:
      - The Redis service host the rule applies to (the rule's C(spec.host)), e.g. C(redis.redis.svc.cluster.local).
        Required with O(state=applied).
      - Not C(host), which is the Kubernetes API server of the connection options.
    type: str
  max_connections:
    description:
      - C(connectionPool.tcp.maxConnections) per client Envoy.
    type: int
  consecutive_5xx_errors:
    description:
      - C(outlierDetection.consecutive5xxErrors); for opaque TCP such as Redis, connect timeouts and failures count.
    type: int
  consecutive_gateway_errors:
    description:
      - C(outlierDetection.consecutiveGatewayErrors).
    type: int
  interval:
    description:
      - C(outlierDetection.interval), a duration such as C(10s).
    type: str
  base_ejection_time:
    description:
      - C(outlierDetection.baseEjectionTime), a duration such as C(30s).
    type: str
  max_ejection_percent:
    description:
      - C(outlierDetection.maxEjectionPercent), 0 to 100.
    type: int
  workload:
    description:
      - The client workload the rule protects (C(name) or C(namespace/name)), checked against O(protected_workloads).
    type: str
  api_version:
    description:
      - API version of the DestinationRule kind.
    type: str
    default: networking.istio.io/v1beta1
extends_documentation_fragment:
  - fintech.redis_storm.lock
  - fintech.redis_storm.mitigation
  - fintech.redis_storm.kube
attributes:
  check_mode:
    support: full
    description: Reads the rule and validates the change with a server-side dry run; writes nothing.
  diff_mode:
    support: full
    description: Shows the owned fields before and after.
notes:
  - Each client pod's Envoy enforces C(maxConnections) on its own, with no coordination, so the cap Redis sees is
    about O(max_connections) times the number of client pods; the module warns about it.
"""

EXAMPLES = r"""
- name: Cap each client Envoy at 20 connections to Redis and eject failing endpoints
  fintech.redis_storm.mesh_circuit_breaker:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: redis-circuit-breaker
    redis_host: redis.redis.svc.cluster.local
    max_connections: 20
    consecutive_5xx_errors: 5
    interval: 10s
    base_ejection_time: 30s
    max_ejection_percent: 50
    allowed_namespaces: "{{ storm_namespaces }}"

- name: Put the rule back
  fintech.redis_storm.mesh_circuit_breaker:
    incident_id: "{{ incident_id }}"
    namespace: trading
    name: redis-circuit-breaker
    state: restored
"""

RETURN = r"""
before:
  description: The owned fields before the change (empty when the rule was created).
  returned: always
  type: dict
  sample: {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 100}}}}}
after:
  description: The owned fields after the change (or what check mode would set).
  returned: always
  type: dict
  sample: {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 20}},
           "outlierDetection": {"consecutive5xxErrors": 5}}}}
diff:
  description: Before and after of the owned fields.
  returned: when diff mode is on
  type: dict
  sample: {"before": {}, "after": {"spec": {"trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 20}}}}}}
ledger:
  description: Where the change was recorded; C(entry_ids) lists every entry written or closed.
  returned: always
  type: dict
  sample: {"configmap": "redis-storm-ledger-inc-1", "namespace": "redis-storm", "entry_id": "entry-0003",
           "entry_ids": ["entry-0003"]}
msg:
  description: What was done.
  returned: always
  type: str
  sample: "set DestinationRule trading/redis-circuit-breaker: spec.trafficPolicy.connectionPool.tcp.maxConnections"
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.mesh import ARG_SPEC, build_plans
from ansible_collections.fintech.redis_storm.plugins.module_utils.mitigation import (
    mitigation_argument_spec,
    run_module,
)


def main() -> None:
    module = AnsibleModule(argument_spec=mitigation_argument_spec(**ARG_SPEC), supports_check_mode=True)
    run_module(module, build_plans)


if __name__ == "__main__":
    main()
