# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""A small JSON client for the Kubernetes API, built from kubernetes.core's connection options.

The modules speak to the API by path (``/apis/apps/v1/namespaces/ns/deployments/x``) and get
plain dicts back, so no generated model classes, discovery round trips, or version-specific
client signatures are involved. Every non-2xx answer becomes a ``KubeApiError`` (a
``StormError``) whose message says which verb on which object failed and what to do.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from typing import Any, Callable, Dict, List, NoReturn, Optional, Tuple
from urllib.parse import quote, urlencode

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError


@functools.cache
def kubernetes_library() -> Any:
    """The kubernetes package, imported on first use; raises ImportError when it is not installed.

    Importing it takes about 0.2 s; storm_views_info overlaps that with Redis' sampling window.
    """
    import kubernetes.client
    import kubernetes.client.exceptions
    import kubernetes.config
    import kubernetes.config.config_exception

    return kubernetes


def kubernetes_missing() -> Optional[str]:
    """Why the kubernetes library cannot be used, or None when it can."""
    try:
        kubernetes_library()
    except ImportError as exc:
        return str(exc)
    return None


def _env(name: str) -> Optional[str]:
    return os.environ.get(name)


# The connection options and environment fallbacks of kubernetes.core, so AWX's
# "OpenShift or Kubernetes API Bearer Token" credential and K8S_AUTH_* variables work as they are.
KUBE_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "kubeconfig": {"type": "path", "fallback": (_env, ["K8S_AUTH_KUBECONFIG"])},
    "context": {"type": "str", "fallback": (_env, ["K8S_AUTH_CONTEXT"])},
    "host": {"type": "str", "fallback": (_env, ["K8S_AUTH_HOST"])},
    "api_key": {"type": "str", "no_log": True, "fallback": (_env, ["K8S_AUTH_API_KEY"])},
    "validate_certs": {"type": "bool", "aliases": ["verify_ssl"]},
    "ca_cert": {"type": "path", "aliases": ["ssl_ca_cert"]},
    "request_timeout": {"type": "float", "default": 10.0},
}

_BOOL_ENV = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


class KubeApiError(StormError):
    """An API call that did not succeed; ``status`` is the HTTP status (0 when none came back)."""

    def __init__(self, message: str, status: int = 0, reason: str = "", **details: Any) -> None:
        super().__init__(message, **details)
        self.status = status
        self.reason = reason


def kube_options(params: Dict[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Pick the connection options out of a module's params (``prefix`` for renamed ones)."""
    return {key: params.get(prefix + key) for key in KUBE_ARG_SPEC}


class Kube:
    """JSON requests to one API server with one identity."""

    def __init__(self, options: Dict[str, Any]) -> None:
        try:
            self.library = kubernetes_library()
        except ImportError as exc:
            raise StormError("the kubernetes Python library is required: pip install kubernetes") from exc
        self.timeout = float(options.get("request_timeout") or 10.0)
        self.configuration = self._configure(self.library, options)
        self.api = self.library.client.ApiClient(self.configuration)
        # called with (method, path) before every write: the incident lock's fence (lease.fence_writes)
        self.before_write: Optional[Callable[[str, str], None]] = None

    @staticmethod
    def _configure(library: Any, options: Dict[str, Any]) -> Any:
        configuration = library.client.Configuration()
        kubeconfig = options.get("kubeconfig")
        host = options.get("host")
        api_key = options.get("api_key")
        loaded = False
        try:
            if kubeconfig or not (host and api_key):
                loaded = True
                if kubeconfig or os.path.exists(os.path.expanduser("~/.kube/config")):
                    library.config.load_kube_config(
                        config_file=kubeconfig, context=options.get("context"),
                        client_configuration=configuration,
                    )
                else:
                    library.config.load_incluster_config(client_configuration=configuration)
        except (library.config.config_exception.ConfigException, OSError, TypeError, ValueError) as exc:
            raise StormError(
                "cannot load Kubernetes credentials (%s): set kubeconfig (or K8S_AUTH_KUBECONFIG), "
                "or host and api_key" % exc
            ) from exc
        credential_destination(host, api_key, configuration.host if loaded else None)
        if host:
            configuration.host = host
        if api_key:
            configuration.api_key = {"authorization": "Bearer " + api_key}
        validate = options.get("validate_certs")
        if validate is None and os.environ.get("K8S_AUTH_VERIFY_SSL"):
            validate = _BOOL_ENV.get(os.environ["K8S_AUTH_VERIFY_SSL"].lower())
        if validate is not None:
            configuration.verify_ssl = bool(validate)
        ca_cert = options.get("ca_cert") or os.environ.get("K8S_AUTH_SSL_CA_CERT")
        if ca_cert:
            configuration.ssl_ca_cert = ca_cert
        return configuration

    @property
    def identity(self) -> str:
        """The user the kubeconfig names, for lock holders and ledger entries (never the token)."""
        return str(getattr(self.configuration, "username", "") or "")

    def _headers(self, content_type: Optional[str]) -> Dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "fintech.redis_storm"}
        if content_type:
            headers["Content-Type"] = content_type
        # kubernetes>=28 keeps a kubeconfig token under "BearerToken", older ones under "authorization"
        token = (self.configuration.get_api_key_with_prefix("authorization")
                 or self.configuration.get_api_key_with_prefix("BearerToken"))
        if token:
            headers["Authorization"] = token
        return headers

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        query: Optional[Dict[str, Any]] = None,
        content_type: Optional[str] = None,
    ) -> Dict[str, Any]:
        """One call; returns the decoded JSON body (``{}`` for an empty one)."""
        if method != "GET" and self.before_write is not None:
            self.before_write(method, path)
        url = self.configuration.host.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        if body is not None and content_type is None:
            content_type = "application/json"
        # the kubernetes REST client JSON-encodes bodies sent with a JSON content type itself
        data = json.loads(body) if isinstance(body, str) and "json" in (content_type or "") else body
        target = describe(method, path)
        try:
            response = self.api.rest_client.request(
                method, url, headers=self._headers(content_type), body=data,
                _request_timeout=self.timeout,
            )
            status, payload = response.status, _read(response)
        except self.library.client.exceptions.ApiException as exc:
            status, payload = exc.status or 0, exc.body or b""
        except (socket.timeout, TimeoutError) as exc:
            raise KubeApiError("Kubernetes API timed out after %ss on %s" % (self.timeout, target)) from exc
        except Exception as exc:  # urllib3 wraps refused/reset/DNS errors in several types
            if _timed_out(exc):  # urllib3 retries, then reports a read timeout inside MaxRetryError
                raise KubeApiError("Kubernetes API timed out after %ss on %s" % (self.timeout, target)) from exc
            raise KubeApiError(
                "cannot reach the Kubernetes API at %s (%s) for %s: check host/kubeconfig and the network"
                % (self.configuration.host, _root_cause(exc), target)
            ) from exc
        decoded = _decode(payload)
        if 200 <= status < 300:
            return decoded if isinstance(decoded, dict) else {"items": decoded}
        raise api_error(method, path, status, decoded)

    def get(self, path: str, query: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        return self.request("GET", path, query=query)

    def find(self, path: str) -> Optional[Dict[str, Any]]:
        """GET that returns None for a 404 instead of raising."""
        try:
            return self.get(path)
        except KubeApiError as exc:
            if exc.status == 404:
                return None
            raise

    def text(self, path: str, query: Optional[Dict[str, Any]] = None) -> str:
        """GET of a plain-text resource such as pods/log."""
        url = self.configuration.host.rstrip("/") + path
        if query:
            url += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        try:
            response = self.api.rest_client.request(
                "GET", url, headers=self._headers(None), _request_timeout=self.timeout
            )
            status, payload = response.status, _read(response)
        except self.library.client.exceptions.ApiException as exc:
            status, payload = exc.status or 0, exc.body or b""
        except Exception as exc:
            raise KubeApiError(
                "cannot reach the Kubernetes API at %s (%s) for %s"
                % (self.configuration.host, _root_cause(exc), describe("GET", path))
            ) from exc
        if 200 <= status < 300:
            return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else str(payload)
        raise api_error("GET", path, status, _decode(payload))


def _server(url: str) -> str:
    return url.strip().rstrip("/").lower()


def credential_destination(host: Optional[str], api_key: Optional[str], named: Optional[str]) -> None:
    """Raise unless the credentials go only where they are meant to.

    ``named`` is the server the kubeconfig (or the in-cluster config) names when its credentials are
    used. A token from the environment (AWX's Kubernetes credential: K8S_AUTH_API_KEY) goes only to
    the K8S_AUTH_HOST of the same credential, kubeconfig credentials only to the kubeconfig's
    server, and a bearer token over plain http:// only when that credential itself names the http URL.
    """
    env_host, env_key = os.environ.get("K8S_AUTH_HOST"), os.environ.get("K8S_AUTH_API_KEY")
    hint = ("take the API server from the credential (leave storm_kube_host unset) or give host and api_key "
            "together from the inventory")
    if host and api_key and env_key and api_key == env_key and env_host and _server(host) != _server(env_host):
        raise StormError("refusing to send the API token of the Kubernetes credential (K8S_AUTH_API_KEY) to %s: "
                         "the credential names %s; %s" % (host, env_host, hint))
    if host and named and _server(host) != _server(named):
        raise StormError("refusing to send the kubeconfig's credentials to %s: the kubeconfig names %s; set the "
                         "server in the kubeconfig, or %s" % (host, named, hint))
    if host and api_key and _server(host).startswith("http://"):
        from_credential = env_key == api_key and env_host and _server(env_host) == _server(host)
        if not from_credential:
            raise StormError("refusing to send an API token over plain http:// to %s: use https://, or a credential "
                             "(K8S_AUTH_HOST with K8S_AUTH_API_KEY) that names this http:// server itself" % host)


# Items per list request: a namespace with thousands of pods is read in pages, never in one answer.
LIST_PAGE_SIZE = 500


def list_items(kube: Any, path: str, query: Optional[Dict[str, Any]] = None,
               page_size: int = LIST_PAGE_SIZE) -> List[Dict[str, Any]]:
    """Every item of a collection, read ``page_size`` at a time with ``limit`` and ``continue``.

    A continue token the server no longer knows (410 Gone: it compacted past it) starts the list over,
    once, so the answer is one consistent list rather than pages from two points in time.
    """
    for attempt in (1, 2):
        items: List[Dict[str, Any]] = []
        token: Optional[str] = None
        try:
            while True:
                page = kube.get(path, dict(query or {}, limit=page_size, **({"continue": token} if token else {})))
                items.extend(page.get("items") or [])
                token = (page.get("metadata") or {}).get("continue") or None
                if token is None:
                    return items
        except KubeApiError as exc:
            if exc.status != 410 or token is None or attempt == 2:
                raise
    raise StormError("unreachable")  # pragma: no cover


def _read(response: Any) -> Any:
    data = getattr(response, "data", None)
    if data is None and hasattr(response, "read"):
        data = response.read()
    return data if data is not None else b""


def _decode(payload: Any) -> Any:
    if isinstance(payload, bytes):
        payload = payload.decode("utf-8", "replace")
    if not payload:
        return {}
    try:
        return json.loads(payload)
    except ValueError:
        return {"message": str(payload)[:500]}


def _timed_out(exc: BaseException) -> bool:
    """True when a timeout is somewhere in the chain (causes, or urllib3's ``reason``)."""
    seen: List[BaseException] = []
    pending: List[Optional[BaseException]] = [exc]
    while pending:
        item = pending.pop()
        if item is None or item in seen:
            continue
        seen.append(item)
        if isinstance(item, (socket.timeout, TimeoutError)) or type(item).__name__ in ("ReadTimeoutError",
                                                                                       "ConnectTimeoutError"):
            return True
        reason = getattr(item, "reason", None)
        pending += [item.__cause__, item.__context__, reason if isinstance(reason, BaseException) else None]
    return False


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "%s: %s" % (type(exc).__name__, exc)


def split_path(path: str) -> Tuple[str, str, str, str]:
    """(group/version, resource, namespace, name) of an API path, '' where absent."""
    parts = [p for p in path.split("?")[0].split("/") if p]
    if parts[:1] == ["api"]:
        group_version, rest = parts[1], parts[2:]
    else:
        group_version, rest = "/".join(parts[1:3]), parts[3:]
    namespace = ""
    if len(rest) >= 2 and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource = rest[0] if rest else ""
    name = rest[1] if len(rest) > 1 else ""
    if len(rest) > 2:
        resource = resource + "/" + rest[2]
    return group_version, resource, namespace, name


_VERBS = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


def describe(method: str, path: str) -> str:
    """'patch deployments/scale payments/payments-api (apps/v1)' for messages."""
    group_version, resource, namespace, name = split_path(path)
    verb = _VERBS.get(method.upper(), method.lower())
    if method.upper() == "GET" and not name:
        verb = "list"
    target = "/".join(x for x in (namespace, name) if x)
    return "%s %s %s (%s)" % (verb, resource, target or "(all)", group_version)


def api_error(method: str, path: str, status: int, body: Any) -> KubeApiError:
    """The clear message for one failed call, from the Status object the API returned."""
    group_version, resource, namespace, name = split_path(path)
    verb = _VERBS.get(method.upper(), method.lower())
    if method.upper() == "GET" and not name:
        verb = "list"
    message = body.get("message", "") if isinstance(body, dict) else ""
    reason = body.get("reason", "") if isinstance(body, dict) else ""
    where = "in namespace %s" % namespace if namespace else "cluster-wide"
    group = group_version.split("/")[0] if "/" in group_version else ""
    if status == 401:
        text = "the Kubernetes API rejected our credentials (401): the token or certificate is missing or expired"
    elif status == 403:
        text = (
            "forbidden (403): this identity may not %s %s%s %s; grant it in its Role "
            "(see deploy/rbac.yml) or use a credential that has it. API said: %s"
            % (verb, resource, " (group %s)" % group if group else "", where, message)
        )
    elif status == 404:
        text = "not found (404): %s %s %s does not exist; check the name and namespace" % (
            resource, name or "", where) if name else "not found (404): %s %s is not served by this API server (%s)" % (
            resource, where, message)
    elif status == 409:
        text = "conflict (409) on %s: %s" % (describe(method, path), message)
    elif status == 422:
        text = "invalid (422) %s: %s" % (describe(method, path), message)
    elif status == 429 or status >= 500:
        text = "the Kubernetes API failed (%s) on %s: %s; retry when the API server is healthy" % (
            status, describe(method, path), message or reason)
    else:
        text = "Kubernetes API answered %s on %s: %s" % (status, describe(method, path), message or reason)
    return KubeApiError(text, status=status, reason=reason)


def path_for(api_version: str, plural: str, namespace: Optional[str] = None, name: Optional[str] = None,
             subresource: Optional[str] = None) -> str:
    """The REST path of a resource: path_for('apps/v1', 'deployments', 'ns', 'x', 'scale')."""
    base = "/api/" + api_version if "/" not in api_version else "/apis/" + api_version
    parts: List[str] = [base]
    if namespace:
        parts.append("namespaces/" + quote(namespace, safe=""))
    parts.append(plural)
    if name:
        parts.append(quote(name, safe=""))
    if subresource:
        parts.append(subresource)
    return "/".join(parts)


def run_kube_module(module: Any, work: Callable[[Kube], Dict[str, Any]]) -> NoReturn:
    """The ``main()`` of a module that works through the API after AnsibleModule: run ``work``, exit or fail.

    A ``StormError`` becomes ``fail_json(msg=..., **details)``; ``diff`` is returned in diff mode
    only; ``warnings`` become module warnings; a result with ``failed`` fails the task.
    """
    from ansible.module_utils.basic import missing_required_lib

    missing = kubernetes_missing()
    if missing:
        module.fail_json(msg=missing_required_lib("kubernetes"), exception=missing)
    try:
        result = work(Kube(kube_options(module.params)))
    except StormError as exc:
        module.fail_json(msg=exc.message, **exc.details)
        raise  # fail_json exits; this line is only reached in tests that stub it
    if not module._diff:
        result.pop("diff", None)
    for warning in result.pop("warnings", []):
        module.warn(warning)
    if result.get("failed"):
        module.fail_json(**result)
    module.exit_json(**result)
    raise SystemExit(0)  # exit_json exits; keeps the NoReturn promise for stubs
