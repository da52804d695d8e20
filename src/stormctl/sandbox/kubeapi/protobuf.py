"""Just enough of the Kubernetes protobuf envelope to read a SelfSubjectAccessReview (`kubectl auth can-i`)."""

from __future__ import annotations

from typing import Any, Optional

from .status import bad_request

MAGIC = b"k8s\x00"
PROTOBUF = "application/vnd.kubernetes.protobuf"


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while True:
        if pos >= len(data):
            raise bad_request("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def fields(data: bytes) -> dict[int, list[Any]]:
    """Field number -> values (ints for varints, bytes for length-delimited) of one message."""
    out: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise bad_request("unsupported protobuf wire type %d" % wire)
        out.setdefault(number, []).append(value)
    return out


def _text(message: dict[int, list[Any]], number: int) -> str:
    values = message.get(number)
    return values[-1].decode() if values else ""


def _message(message: dict[int, list[Any]], number: int) -> Optional[dict[int, list[Any]]]:
    values = message.get(number)
    return fields(values[-1]) if values else None


def decode_access_review(data: bytes) -> dict[str, Any]:
    """A SelfSubjectAccessReview in the protobuf envelope as the JSON object it stands for."""
    if not data.startswith(MAGIC):
        raise bad_request("protobuf body without the k8s envelope")
    envelope = fields(data[len(MAGIC):])
    raw = envelope.get(2, [b""])[-1]
    spec_fields = _message(fields(raw), 2) or {}
    spec: dict[str, Any] = {}
    resource = _message(spec_fields, 1)
    if resource is not None:
        spec["resourceAttributes"] = {name: _text(resource, i + 1) for i, name in enumerate(
            ("namespace", "verb", "group", "version", "resource", "subresource", "name"))}
    non_resource = _message(spec_fields, 2)
    if non_resource is not None:
        spec["nonResourceAttributes"] = {"path": _text(non_resource, 1), "verb": _text(non_resource, 2)}
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": spec}
