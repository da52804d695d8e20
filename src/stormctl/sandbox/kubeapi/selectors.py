"""Label and field selectors with the grammar of k8s.io/apimachinery/pkg/labels and fields."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

from .status import ApiError, bad_request

_TOKEN = re.compile(r"\s*(!=|==|=|!|\(|\)|,|[^\s!=(),]+)")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, Any]) -> bool:
        if self.op == "exists":
            return self.key in labels
        if self.op == "!":
            return self.key not in labels
        if self.op in ("=", "==", "in"):
            return self.key in labels and labels[self.key] in self.values
        # `!=` and `notin` also match objects without the key, as in the real selector
        return self.key not in labels or labels[self.key] not in self.values


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None or match.end() == pos:
            break
        out.append(match.group(1))
        pos = match.end()
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


def parse_label_selector(text: str) -> list[Requirement]:
    tokens = _tokens(text)
    reqs: list[Requirement] = []
    i = 0

    def fail(found: str, expected: str) -> ApiError:
        return bad_request("unable to parse requirement: found '%s', expected: %s" % (found, expected))

    while i < len(tokens):
        tok = tokens[i]
        if tok == "!":
            if i + 1 >= len(tokens):
                raise fail("", "identifier")
            reqs.append(Requirement(tokens[i + 1], "!"))
            i += 2
        else:
            key = tok
            if key in ("=", "==", "!=", "(", ")", ","):
                raise fail(key, "!, identifier")
            nxt = tokens[i + 1] if i + 1 < len(tokens) else ","
            if nxt == ",":
                reqs.append(Requirement(key, "exists"))
                i += 1
            elif nxt in ("=", "==", "!="):
                if i + 2 >= len(tokens) or tokens[i + 2] in (",", "(", ")"):
                    reqs.append(Requirement(key, nxt, ("",)))
                    i += 2
                else:
                    reqs.append(Requirement(key, nxt, (tokens[i + 2],)))
                    i += 3
            elif nxt in ("in", "notin"):
                if i + 2 >= len(tokens) or tokens[i + 2] != "(":
                    raise fail(tokens[i + 2] if i + 2 < len(tokens) else "", "'('")
                j = i + 3
                values: list[str] = []
                while j < len(tokens) and tokens[j] != ")":
                    if tokens[j] != ",":
                        values.append(tokens[j])
                    j += 1
                if j >= len(tokens):
                    raise fail("", "')'")
                reqs.append(Requirement(key, nxt, tuple(values)))
                i = j + 1
            else:
                raise fail(nxt, "'=', '!=', '==', 'in', notin'")
        if i < len(tokens):
            if tokens[i] != ",":
                raise fail(tokens[i], "','")
            i += 1
    return reqs


def label_matcher(text: str) -> Callable[[dict[str, Any]], bool]:
    reqs = parse_label_selector(text)

    def match(obj: dict[str, Any]) -> bool:
        labels = obj.get("metadata", {}).get("labels") or {}
        return all(req.matches(labels) for req in reqs)

    return match


def selector_string(selector: Mapping[str, Any]) -> str:
    """A LabelSelector (matchLabels, matchExpressions) as the string `kubectl` and Scale.status show."""
    parts = ["%s=%s" % (k, v) for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        op = str(expr.get("operator", "")).lower()
        key = expr.get("key", "")
        if op == "exists":
            parts.append(key)
        elif op == "doesnotexist":
            parts.append("!" + key)
        else:
            parts.append("%s %s (%s)" % (key, op, ",".join(sorted(expr.get("values") or []))))
    return ",".join(parts)


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if path == "status.podIPs" and isinstance(cur, list):
        return ",".join(str(i.get("ip", "")) for i in cur if isinstance(i, dict))
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):
        return str(cur.get("component", ""))
    return str(cur)


def field_matcher(text: str, supported: tuple[str, ...]) -> Callable[[dict[str, Any]], bool]:
    terms: list[tuple[str, str, str]] = []
    for raw in text.split(","):
        raw = raw.strip()
        if not raw:
            continue
        match = re.match(r"^([^!=]+)(!=|==|=)(.*)$", raw)
        if match is None:
            raise bad_request("invalid selector: '%s'; can't understand '%s'" % (text, raw))
        key, op, value = match.group(1).strip(), match.group(2), match.group(3).strip()
        if key not in supported:
            raise bad_request('field label not supported: %s' % key)
        terms.append((key, op, value))

    def match_fields(obj: dict[str, Any]) -> bool:
        for key, op, value in terms:
            actual = _field_value(obj, key)
            if (actual == value) != (op != "!="):
                return False
        return True

    return match_fields
