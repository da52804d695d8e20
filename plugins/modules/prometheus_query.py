#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: prometheus_query
short_description: Run an instant or range PromQL query and check the answer
description:
  - Queries the Prometheus HTTP API (C(/api/v1/query) or C(/api/v1/query_range)) and returns the answer typed
    (vector, matrix, scalar, string) with float values and epoch times.
  - Short queries are sent with GET, long ones as a POST form.
  - O(expect) checks every series' last value against a threshold and returns O(expect) as RV(ok).
  - O(queries) runs several named queries in one call (one task instead of one per query); a PromQL
    error then stays with its query in RV(answers) while the others still answer.
  - Read-only; safe in check mode.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  url:
    description:
      - Base URL of Prometheus, V(http(s\)://host:port) plus any path prefix, without C(/api/v1).
    type: str
    required: true
  query:
    description:
      - The PromQL expression.
      - Exactly one of O(query) and O(queries) is required.
    type: str
  queries:
    description:
      - Several PromQL expressions by name, run at the same O(time) or range.
      - Each answer is in RV(answers) under its name.
    type: dict
  time:
    description:
      - Evaluation time of an instant query; default now.
      - Epoch seconds, V(now), V(now-15m) (or V(-15m)), or RFC 3339 such as V(2026-11-26T05:00:00Z).
    type: str
  start:
    description:
      - Start of a range query (same formats as O(time)); makes the query a range query.
    type: str
  end:
    description:
      - End of a range query (same formats as O(time)); default now.
    type: str
  step:
    description:
      - Resolution of a range query, seconds or a duration such as V(15s); required with O(start).
    type: str
  timeout:
    description:
      - Seconds to wait for Prometheus' answer.
    type: float
    default: 10
  bearer_token:
    description:
      - Token sent in the C(Authorization) header as a bearer token (for example an OAuth proxy's token).
    type: str
  username:
    description:
      - User for HTTP basic auth.
    type: str
  password:
    description:
      - Password for HTTP basic auth.
    type: str
  validate_certs:
    description:
      - Verify the server certificate of an https URL.
    type: bool
    default: true
  ca_path:
    description:
      - PEM file of the CA that signed Prometheus' certificate.
    type: path
  expect:
    description:
      - A threshold every series' last value must satisfy; the outcome is RV(ok).
      - An empty answer is not ok.
    type: dict
    suboptions:
      op:
        description: Comparison of the observed value against O(expect.value).
        type: str
        required: true
        choices: [">", ">=", "<", "<=", "==", "!="]
      value:
        description: The threshold.
        type: float
        required: true
attributes:
  check_mode:
    support: full
    description: Only reads from Prometheus, so it runs the same in check mode.
  diff_mode:
    support: none
    description: Changes nothing, so there is no diff.
notes:
  - NaN and +/-Inf samples are returned as null, since JSON cannot carry them.
"""

EXAMPLES = r"""
- name: Redis connection utilisation now
  fintech.redis_storm.prometheus_query:
    url: "{{ storm_prometheus_url }}"
    query: max(redis_connected_clients / redis_config_maxclients)
    expect: {op: "<", value: 0.9}
  register: utilisation

- name: Rejected connections over the last 15 minutes, every 30 s
  fintech.redis_storm.prometheus_query:
    url: https://prometheus.example.com
    query: increase(redis_rejected_connections_total[1m])
    start: -15m
    step: 30s
    bearer_token: "{{ prometheus_token }}"
    ca_path: /etc/pki/monitoring-ca.pem

- name: Several signals in one call
  fintech.redis_storm.prometheus_query:
    url: "{{ storm_prometheus_url }}"
    username: triage
    password: "{{ vault_prometheus_password }}"
    queries:
      redis_up: min(redis_up)
      app_error_ratio: sum(rate(http_requests_total{code=~"5.."}[1m])) / sum(rate(http_requests_total[1m]))
"""

RETURN = r"""
result_type:
  description: Prometheus' result type.
  returned: when O(query) is given
  type: str
  sample: vector
series:
  description:
    - One item per series, C(metric) with its labels.
    - Instant answers have C(value) (float) and C(time) (epoch seconds); range answers have C(values),
      a list of C([time, value]) pairs.
  returned: when O(query) is given
  type: list
  elements: dict
  sample: [{"metric": {"instance": "redis:9121"}, "time": 1795670400.0, "value": 0.97}]
value:
  description:
    - The number when the answer is one number (a scalar, or a vector with exactly one series);
      the text of a string answer; null otherwise.
  returned: when O(query) is given
  type: raw
  sample: 0.97
ok:
  description: Whether every series' last value satisfies O(expect); null without O(expect).
  returned: when O(query) is given
  type: bool
  sample: false
answers:
  description:
    - The answer of each of O(queries) by name, each with RV(result_type), RV(series), RV(value), RV(ok)
      and C(query); a query Prometheus rejected has C(error) and C(errorType) instead.
  returned: when O(queries) is given
  type: dict
  sample: {"redis_up": {"query": "min(redis_up)", "result_type": "vector", "series": [], "value": null, "ok": null}}
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.prometheus import (
    PROMETHEUS_ARG_SPEC,
    Prometheus,
    hide_url_password,
    run_queries,
    run_query,
)


def main() -> None:
    argument_spec = dict(
        PROMETHEUS_ARG_SPEC,
        query={"type": "str"},
        queries={"type": "dict"},
        time={"type": "str"},
        start={"type": "str"},
        end={"type": "str"},
        step={"type": "str"},
        expect={
            "type": "dict",
            "options": {
                "op": {"type": "str", "required": True, "choices": [">", ">=", "<", "<=", "==", "!="]},
                "value": {"type": "float", "required": True},
            },
        },
    )
    module = AnsibleModule(
        argument_spec=argument_spec,
        supports_check_mode=True,
        required_one_of=[("query", "queries")],
        mutually_exclusive=[("query", "queries"), ("time", "start"), ("time", "end"), ("time", "step")],
        required_by={"start": ("step",), "step": ("start",), "end": ("start",)},
    )
    params = module.params
    hide_url_password(module, params["url"])
    try:
        client = Prometheus.from_params(params)
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    try:
        if params["queries"] is not None:
            queries = {str(name): str(query) for name, query in params["queries"].items()}
            answers, _answered = run_queries(client, queries, params)
            module.exit_json(changed=False, answers=answers)
        answer = run_query(client, params)
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
    module.exit_json(changed=False, **answer)


if __name__ == "__main__":
    main()
