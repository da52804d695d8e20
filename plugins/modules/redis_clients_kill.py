#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
module: redis_clients_kill
short_description: Disconnect the Redis clients of a connection storm (CLIENT KILL), never our own
description:
  - Reads C(CLIENT LIST) once, picks the clients that match every given filter (O(ips), O(idle_seconds_min),
    O(name_pattern)), most idle first, at most O(max_kill), and kills them one by one with C(CLIENT KILL ID).
  - Irreversible, so it is off unless O(enabled=true). In check mode it returns the candidates and kills none.
  - Our own connection is never a candidate (it is excluded by its C(CLIENT ID) and C(SKIPME yes)); replicas
    and the master link are never candidates either.
  - Clients that reconnect automatically come straight back; pair this with a mitigation of the source.
  - With O(cluster=true) every node of the Redis Cluster is read and its matching clients killed, node by node, at
    most O(max_kill) over the whole cluster; each candidate names its node (RV(candidates[].node)). A node that
    cannot be reached fails the task, naming it, after the other nodes were handled (RV(nodes)).
  - With O(sentinels), the filters are applied on the group's master and on each replica (clients that read from
    replicas are offenders too); RV(nodes) has each node's result. O(cluster=true) and O(sentinels) together are
    an error.
version_added: 0.1.0
author: fintech SRE (@fintech-sre)
extends_documentation_fragment:
  - fintech.redis_storm.redis
  - fintech.redis_storm.redis_sentinel
attributes:
  check_mode:
    support: full
    description: Lists the candidates and kills none; RV(changed) says whether a real run would kill any.
  diff_mode:
    support: none
    description: Killed connections have no before/after state; RV(candidates) lists them instead.
options:
  ips:
    description:
      - Source addresses or CIDR networks whose clients may be killed.
    type: list
    elements: str
  idle_seconds_min:
    description:
      - Only clients idle for at least this many seconds.
    type: int
  name_pattern:
    description:
      - Only clients whose C(CLIENT SETNAME) name matches this shell glob (case-sensitive), e.g. V(batch-*).
    type: str
  max_kill:
    description:
      - Kill at most this many clients in one run.
    type: int
    default: 100
  enabled:
    description:
      - Really kill. Without it, a run outside check mode is refused.
    type: bool
    default: false
notes:
  - At least one of O(ips), O(idle_seconds_min) or O(name_pattern) is required; the filters are combined with AND.
  - When Redis is at C(maxclients) it refuses our connection too, so nothing can be killed; the task fails and says so.
seealso:
  - module: fintech.redis_storm.redis_clients_info
"""

EXAMPLES = r"""
- name: Offenders | List the idle batch connections that would be dropped
  fintech.redis_storm.redis_clients_kill:
    host: redis.payments.svc
    password: "{{ storm_redis_password }}"
    ips: "{{ redis_view.top_sources[:2] | map(attribute='ip') }}"
    name_pattern: "batch-*"
    idle_seconds_min: 30
  check_mode: true
  register: kill_plan

- name: Offenders | Drop them
  fintech.redis_storm.redis_clients_kill:
    host: redis.payments.svc
    password: "{{ storm_redis_password }}"
    ips: 10.42.3.0/24
    idle_seconds_min: 30
    max_kill: 500
    enabled: true
"""

RETURN = r"""
changed:
  description: Whether any client was killed (in check mode, whether any would be).
  returned: always
  type: bool
  sample: true
killed:
  description: Number of clients killed (0 in check mode).
  returned: always
  type: int
  sample: 42
already_gone:
  description: Candidates that had disconnected before their C(CLIENT KILL).
  returned: always
  type: int
  sample: 0
matched:
  description: Clients matching the filters before the O(max_kill) cap.
  returned: always
  type: int
  sample: 57
candidates:
  description: The clients chosen (most idle first, at most O(max_kill)).
  returned: always
  type: list
  elements: dict
  sample: [{id: 1042, addr: "10.42.3.17:51234", name: batch-7, idle: 240}]
  contains:
    id:
      description: C(CLIENT ID).
      type: int
      returned: always
      sample: 1042
    addr:
      description: Client address and port.
      type: str
      returned: always
      sample: "10.42.3.17:51234"
    name:
      description: Client name (empty when unset).
      type: str
      returned: always
      sample: batch-7
    idle:
      description: Seconds idle when C(CLIENT LIST) was read.
      type: int
      returned: always
      sample: 240
    node:
      description: With O(cluster=true) or O(sentinels), the node the client is connected to.
      type: str
      returned: when O(cluster=true) or with sentinels
      sample: "10.0.0.6:6379"
nodes:
  description:
    - With O(cluster=true) or O(sentinels), each node's own result (C(node), C(killed), C(matched),
      C(already_gone), C(changed), and C(role) on a cluster, C(candidates) in a Sentinel group).
  returned: when O(cluster=true) or with sentinels
  type: list
  elements: dict
  sample: [{node: "10.0.0.6:6379", role: master, changed: true, killed: 12, already_gone: 0, matched: 12}]
sentinel:
  description: The Sentinel group as the Sentinels gave it.
  returned: with sentinels
  type: dict
  sample: {name: payments, master: "10.0.0.5:6379", replicas: ["10.0.0.6:6379"], replicas_down: []}
"""

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.group_clients import kill_on_every_node
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    HAS_REDIS,
    REDIS_ARG_SPEC,
    REDIS_IMPORT_ERROR,
)
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_sentinel import SENTINEL_ARG_SPEC


def main() -> None:
    argument_spec = dict(
        REDIS_ARG_SPEC,
        **SENTINEL_ARG_SPEC,
        ips={"type": "list", "elements": "str"},
        idle_seconds_min={"type": "int"},
        name_pattern={"type": "str"},
        max_kill={"type": "int", "default": 100},
        enabled={"type": "bool", "default": False},
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("ips", "idle_seconds_min", "name_pattern")],
    )
    if not HAS_REDIS:
        module.fail_json(msg=missing_required_lib("redis"), exception=REDIS_IMPORT_ERROR)
    params = module.params
    if not params["enabled"] and not module.check_mode:
        module.fail_json(msg="redis_clients_kill is irreversible and off by default: set enabled: true to kill the "
                             "matching clients, or run in check mode to list them first")
    try:
        result = kill_on_every_node(params, params["ips"], params["idle_seconds_min"], params["name_pattern"],
                                    params["max_kill"], module.check_mode)
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
