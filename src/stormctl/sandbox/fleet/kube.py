"""The fleet's view of the cluster: plain Kubernetes REST calls with the controller's bearer token."""

from __future__ import annotations

import contextlib
import json
import ssl
from typing import Any, Optional

import aiohttp

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"


class KubeError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__("HTTP %d: %s" % (status, message))
        self.status = status


def collection_path(api_version: str, plural: str, namespace: Optional[str] = None) -> str:
    base = "/api/v1" if api_version == "v1" else "/apis/%s" % api_version
    if namespace:
        return "%s/namespaces/%s/%s" % (base, namespace, plural)
    return "%s/%s" % (base, plural)


def object_path(api_version: str, plural: str, namespace: Optional[str], name: str, sub: str = "") -> str:
    path = "%s/%s" % (collection_path(api_version, plural, namespace), name)
    return "%s/%s" % (path, sub) if sub else path


class Kube:
    def __init__(self, api: str, token: str, ca_file: Optional[str] = None) -> None:
        self.api = api.rstrip("/")
        self.token = token
        self.ssl: Optional[ssl.SSLContext] = ssl.create_default_context(cafile=ca_file) if ca_file else None
        self._session: Optional[aiohttp.ClientSession] = None

    async def __aenter__(self) -> Kube:
        self._session = aiohttp.ClientSession(
            headers={"Authorization": "Bearer %s" % self.token, "Accept": "application/json",
                     "User-Agent": "sandbox-fleet-controller/1.0"},
            timeout=aiohttp.ClientTimeout(total=10),
            connector=aiohttp.TCPConnector(limit=16, ssl=self.ssl if self.ssl is not None else True),
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(self, method: str, path: str, body: Any = None, content_type: str = "application/json",
                      raw: Optional[bytes] = None) -> Any:
        assert self._session is not None
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._session.request(method, self.api + path, data=data, headers=headers) as resp:
            text = await resp.text()
            if resp.status >= 400:
                message = text
                with contextlib.suppress(ValueError, AttributeError):
                    message = json.loads(text).get("message", text)
                raise KubeError(resp.status, message)
            if not text:
                return None
            try:
                return json.loads(text)
            except ValueError:
                return text

    async def items(self, api_version: str, plural: str, namespace: Optional[str] = None) -> list[dict[str, Any]]:
        result = await self.request("GET", collection_path(api_version, plural, namespace))
        items: list[dict[str, Any]] = result.get("items") or []
        return items

    async def get(self, api_version: str, plural: str, namespace: Optional[str], name: str) -> dict[str, Any]:
        result: dict[str, Any] = await self.request("GET", object_path(api_version, plural, namespace, name))
        return result

    async def create(self, api_version: str, plural: str, namespace: Optional[str], body: dict[str, Any]) -> Any:
        return await self.request("POST", collection_path(api_version, plural, namespace), body)

    async def patch(self, api_version: str, plural: str, namespace: Optional[str], name: str, body: Any,
                    sub: str = "", content_type: str = MERGE) -> Any:
        return await self.request("PATCH", object_path(api_version, plural, namespace, name, sub), body,
                                  content_type=content_type)

    async def replace(self, api_version: str, plural: str, namespace: Optional[str], name: str, body: Any,
                      sub: str = "") -> Any:
        return await self.request("PUT", object_path(api_version, plural, namespace, name, sub), body)

    async def delete(self, api_version: str, plural: str, namespace: Optional[str], name: str,
                     grace_seconds: Optional[int] = None) -> None:
        query = "" if grace_seconds is None else "?gracePeriodSeconds=%d" % grace_seconds
        try:
            await self.request("DELETE", object_path(api_version, plural, namespace, name) + query)
        except KubeError as exc:
            if exc.status != 404:
                raise

    async def append_log(self, namespace: str, pod: str, text: str) -> None:
        await self.request("POST", "/_sandbox/pods/%s/%s/log" % (namespace, pod), raw=text.encode(),
                           content_type="text/plain")

    async def put_pod_metrics(self, namespace: str, pod: str, body: dict[str, Any]) -> None:
        await self.request("PUT", "/_sandbox/podmetrics/%s/%s" % (namespace, pod), body)

    async def seed(self, objects: list[dict[str, Any]]) -> Any:
        return await self.request("POST", "/_sandbox/objects", objects)
