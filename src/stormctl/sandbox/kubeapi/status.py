"""Kubernetes `Status` failures with the messages, reasons and details the real API server uses."""

from __future__ import annotations

from typing import Any, Optional

from .resources import ResourceType

REASONS = {
    400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound", 405: "MethodNotAllowed",
    406: "NotAcceptable", 409: "Conflict", 410: "Expired", 415: "UnsupportedMediaType", 422: "Invalid",
    429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout",
}


class ApiError(Exception):
    """A request failure, carried to the HTTP layer as a Status body."""

    def __init__(self, code: int, message: str, reason: Optional[str] = None,
                 details: Optional[dict[str, Any]] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason or REASONS.get(code, "Unknown")
        self.details = details

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                                "message": self.message, "reason": self.reason}
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(rt: ResourceType, name: str, kind: Optional[str] = None) -> dict[str, Any]:
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    return details


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, '%s "%s" not found' % (rt.qualified, name), details=_details(rt, name))


def namespace_not_found(namespace: str) -> ApiError:
    return ApiError(404, 'namespaces "%s" not found' % namespace, details={"name": namespace, "kind": "namespaces"})


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, '%s "%s" already exists' % (rt.qualified, name), "AlreadyExists", _details(rt, name))


def conflict(rt: ResourceType, name: str) -> ApiError:
    message = ('Operation cannot be fulfilled on %s "%s": the object has been modified; '
               "please apply your changes to the latest version and try again" % (rt.qualified, name))
    return ApiError(409, message, "Conflict", _details(rt, name))


def forbidden(user: str, verb: str, rt: Optional[ResourceType], resource: str, subresource: str,
              namespace: Optional[str], name: str) -> ApiError:
    group = rt.group if rt is not None else ""
    qualified = rt.qualified if rt is not None else resource
    full = "%s/%s" % (resource, subresource) if subresource else resource
    subject = '%s "%s"' % (qualified, name) if name else qualified
    scope = 'in the namespace "%s"' % namespace if namespace else "at the cluster scope"
    message = '%s is forbidden: User "%s" cannot %s resource "%s" in API group "%s" %s' % (
        subject, user, verb, full, group, scope)
    details: dict[str, Any] = {}
    if name:
        details["name"] = name
    if group:
        details["group"] = group
    details["kind"] = resource
    return ApiError(403, message, details=details)


def forbidden_path(user: str, verb: str, path: str) -> ApiError:
    return ApiError(403, 'forbidden: User "%s" cannot %s path "%s"' % (user, verb, path), details={})


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized")


def invalid(kind: str, group: str, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """`causes` are (reason, field, message) as in field.ErrorList, e.g. ("FieldValueInvalid", "spec.replicas", ...)."""
    qualified = "%s.%s" % (kind, group) if group else kind
    texts = ["%s: %s" % (fld, msg) if fld else msg for _, fld, msg in causes]
    joined = texts[0] if len(texts) == 1 else "[%s]" % ", ".join(texts)
    details: dict[str, Any] = {"name": name}
    if group:
        details["group"] = group
    details["kind"] = kind
    details["causes"] = [{"reason": reason, "message": msg, "field": fld} for reason, fld, msg in causes]
    return ApiError(422, '%s "%s" is invalid: %s' % (qualified, name, joined), details=details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, message)


def server_not_found() -> ApiError:
    return ApiError(404, "the server could not find the requested resource", details={})


def method_not_allowed() -> ApiError:
    return ApiError(405, "the server does not allow this method on the requested resource", details={})


def unsupported_media_type(content_type: str, accepted: list[str]) -> ApiError:
    return ApiError(415, "the body of the request was in an unknown format - accepted media types include: %s"
                    % ", ".join(accepted), details={})


def injected(code: int, message: str) -> ApiError:
    if code == 500:
        return ApiError(500, "Internal error occurred: %s" % message, details={"causes": [{"message": message}]})
    return ApiError(code, message, details={})
