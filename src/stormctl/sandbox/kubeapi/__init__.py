"""The sandbox's Kubernetes API emulator (aiohttp), for the kubernetes client and kubectl.

Run: `python -m stormctl.sandbox.kubeapi --state-dir DIR [--listen HOST:PORT] [--tls | --listen-tls HOST:PORT]
[--seed FILE]`. Port 0 picks a free port. kubectl sends bearer tokens only over https, so a kubeconfig for
kubectl needs `--tls` (one https listener) or `--listen-tls` (https next to plain http) and the CA.

The state dir holds:
- `tokens.json` (read by us, re-read on change): `{"<token>": {"user": "...", "rules": "*" | [PolicyRule...],
  "namespaces": [...]?}}`, or `"rules_from": "rbac.yml", "role": "<name>" | ["<name>", ...]` instead of
  rules (Roles or ClusterRoles; a Role with a namespace grants only there);
- `kubeapi.json` (written once listening): `{"url", "pid", "ca_file"?, "tls_url"?}`;
- `kubeapi-audit.jsonl` (every write request) and, with TLS, `kubeapi-ca.crt`, `kubeapi.crt`, `kubeapi.key`.

`/_sandbox/*` (a token with rules "*"): `GET audit?since=SEQ`, `GET|POST|DELETE faults`, `DELETE faults/{id}`,
`POST pods/{ns}/{name}/log[?container=&previous=true]` (text), `PUT podmetrics/{ns}/{name}`, `POST objects`
(create or replace, status kept, not audited), `POST reset` (back to the system namespaces only).
`write_kubeconfig()` writes a kubeconfig for a URL and token.
"""

from __future__ import annotations

from .kubeconfig import write_kubeconfig

__all__ = ["write_kubeconfig"]
