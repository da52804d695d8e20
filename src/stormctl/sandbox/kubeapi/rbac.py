"""Bearer-token identities from `tokens.json` and an authorizer with the RBAC rule semantics."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Union

import yaml

Rules = Union[str, list[dict[str, Any]]]


@dataclass(frozen=True)
class Identity:
    """A user, its rules (limited to `namespaces` when given) and rules of namespaced Roles, each in its namespace."""

    user: str
    rules: Rules
    namespaces: Optional[tuple[str, ...]] = None
    role_rules: tuple[tuple[str, tuple[dict[str, Any], ...]], ...] = ()

    @property
    def admin(self) -> bool:
        return self.rules == "*"


def _matches(values: Any, wanted: str) -> bool:
    values = values or []
    return "*" in values or wanted in values


def _resource_matches(rule_resources: Any, resource: str, subresource: str) -> bool:
    combined = "%s/%s" % (resource, subresource) if subresource else resource
    for entry in rule_resources or []:
        if entry in ("*", combined):
            return True
        if subresource and entry == "*/" + subresource:
            return True
    return False


def rule_allows(rule: dict[str, Any], verb: str, group: str, resource: str, subresource: str, name: str) -> bool:
    if not _matches(rule.get("verbs"), verb) or not _matches(rule.get("apiGroups"), group):
        return False
    if not _resource_matches(rule.get("resources"), resource, subresource):
        return False
    names = rule.get("resourceNames") or []
    return not names or name in names


def non_resource_allows(rule: dict[str, Any], verb: str, path: str) -> bool:
    if not _matches(rule.get("verbs"), verb):
        return False
    for entry in rule.get("nonResourceURLs") or []:
        if entry == "*" or entry == path or (entry.endswith("*") and path.startswith(entry[:-1])):
            return True
    return False


def authorize(identity: Identity, verb: str, group: str, resource: str, subresource: str, namespace: Optional[str],
              name: str) -> bool:
    if any(namespace == role_namespace and any(rule_allows(rule, verb, group, resource, subresource, name)
                                               for rule in rules)
           for role_namespace, rules in identity.role_rules):
        return True
    if identity.namespaces is not None and (not namespace or namespace not in identity.namespaces):
        return False
    if identity.rules == "*":
        return True
    rules = identity.rules if isinstance(identity.rules, list) else []
    return any(rule_allows(rule, verb, group, resource, subresource, name) for rule in rules)


def load_role(path: str, role: str) -> tuple[list[dict[str, Any]], Optional[str]]:
    """The rules of the Role or ClusterRole named `role` in a (multi-document) YAML file, and a Role's namespace."""
    with open(path, encoding="utf-8") as handle:
        documents = [doc for doc in yaml.safe_load_all(handle) if isinstance(doc, dict)]
    for doc in list(documents):
        if doc.get("kind", "").endswith("List"):
            documents.extend(item for item in doc.get("items") or [] if isinstance(item, dict))
    for doc in documents:
        if doc.get("kind") in ("Role", "ClusterRole") and (doc.get("metadata") or {}).get("name") == role:
            namespace = doc["metadata"].get("namespace") if doc["kind"] == "Role" else None
            return list(doc.get("rules") or []), namespace
    raise ValueError("no Role or ClusterRole named %r in %s" % (role, path))


def parse_tokens(data: dict[str, Any], base: Optional[Path] = None) -> dict[str, Identity]:
    """Identities by token; a relative `rules_from` is read from `base` (the directory of tokens.json)."""
    identities: dict[str, Identity] = {}
    for token, spec in data.items():
        rules: Rules = spec.get("rules", [])
        namespaces = spec.get("namespaces")
        role_rules: list[tuple[str, tuple[dict[str, Any], ...]]] = []
        if spec.get("rules_from"):
            source = Path(spec["rules_from"])
            path = str(base / source if base and not source.is_absolute() else source)
            rules = []
            roles = spec["role"] if isinstance(spec["role"], list) else [spec["role"]]
            for role in roles:
                loaded, role_namespace = load_role(path, role)
                if role_namespace and namespaces is None:
                    role_rules.append((role_namespace, tuple(loaded)))
                else:
                    rules.extend(loaded)
        identities[token] = Identity(str(spec.get("user", "anonymous")), rules,
                                     tuple(namespaces) if namespaces is not None else None, tuple(role_rules))
    return identities


class TokenFile:
    """`tokens.json`, re-read whenever it changes so a test can add an identity to a running server."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Optional[tuple[int, int, int]] = None
        self._identities: dict[str, Identity] = {}

    def _refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            self._identities, self._stamp = {}, None
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            try:
                self._identities = parse_tokens(json.loads(self.path.read_text(encoding="utf-8") or "{}"),
                                                self.path.parent)
            except (OSError, ValueError, KeyError, yaml.YAMLError) as exc:
                # a half-written or bad file keeps the identities we had; the next change is read again
                print("kubeapi: cannot read %s: %s" % (self.path, exc), file=sys.stderr, flush=True)
            self._stamp = stamp

    def identify(self, authorization: Optional[str]) -> Optional[Identity]:
        if not authorization or not authorization.lower().startswith("bearer "):
            return None
        self._refresh()
        return self._identities.get(authorization[7:].strip())
