"""An HTTPS proxy in front of the apiserver that answers chosen requests with a fault.

    with FaultProxy(plane.url, ca=plane.ca, serving=plane.apiserver_cert) as proxy:
        proxy.add(Fault("PATCH", r"/deployments/[^/]+/scale$", status=409, count=1))
        # point a client at proxy.url: its first scale patch gets a 409 Conflict, the rest pass

A fault is 409, 429 (with Retry-After), 500 or 503 as a Kubernetes Status, ``drop`` (the connection
closes without an answer) or ``stall`` (the request waits ``seconds`` before it goes on). It matches
on the method and a regular expression searched in the path; ``after`` lets that many matching requests
through first, then ``count`` of them (None: all) or each with ``probability`` get the fault.

Requests pass through with their own Authorization header, so a bearer token keeps its identity; a
client certificate ends at the proxy (its requests reach the apiserver anonymous).
"""

from __future__ import annotations

import asyncio
import random
import re
import ssl
import threading
from dataclasses import dataclass, field
from typing import Any, NoReturn

import aiohttp
from aiohttp import web

from stormctl.sandbox import procs
from stormctl.sandbox.kube.pki import Pair

REASONS = {409: "Conflict", 429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "upgrade", "content-length", "host",
               "content-encoding"}


@dataclass
class Fault:
    method: str  # "*" for any
    path: str  # a regular expression searched in the request path
    status: int | None = None  # 409, 429, 500, 503
    drop: bool = False
    stall: bool = False
    seconds: float = 0.0  # how long a stall waits
    after: int = 0
    count: int | None = None
    probability: float = 1.0
    seen: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        kinds = [self.status is not None, self.drop, self.stall]
        if sum(kinds) != 1:
            raise ValueError("a fault is exactly one of status=409|429|500|503, drop=True or stall=True")
        if self.status is not None and self.status not in REASONS:
            raise ValueError("fault status %s is not one of %s" % (self.status, sorted(REASONS)))
        if not 0.0 <= self.probability <= 1.0:
            raise ValueError("fault probability %s is not between 0 and 1" % self.probability)
        re.compile(self.path)

    def matches(self, method: str, path: str) -> bool:
        return self.method in ("*", method.upper()) and re.search(self.path, path) is not None


def _hang_up(request: web.Request) -> NoReturn:
    """Close the connection without an answer (aiohttp ends a handler cancelled this way quietly)."""
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError()


class FaultProxy:
    def __init__(self, upstream: str, ca: Pair, serving: Pair, seed: int = 0) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = procs.free_port()
        self.url = "https://127.0.0.1:%d" % self.port
        self.faults: list[Fault] = []
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server_ssl.load_cert_chain(str(serving.cert), str(serving.key))
        self._upstream_ssl = ssl.create_default_context(cafile=str(ca.cert))
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self.faults = []

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if not fault.matches(method, path):
                    continue
                fault.seen += 1
                if fault.seen <= fault.after or (fault.count is not None and fault.fired >= fault.count):
                    continue
                if fault.probability < 1.0 and self._random.random() >= fault.probability:
                    continue
                fault.fired += 1
                return fault
        return None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        fault = self._pick(request.method, request.path)
        if fault is not None and fault.status is not None:
            return web.json_response(
                {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                 "message": "injected by the sandbox fault proxy", "reason": REASONS[fault.status],
                 "code": fault.status},
                status=fault.status, headers={"Retry-After": "1"} if fault.status == 429 else None,
            )
        if fault is not None and fault.drop:
            _hang_up(request)
        if fault is not None and fault.stall:
            await asyncio.sleep(fault.seconds)
            if request.transport is None or request.transport.is_closing():
                _hang_up(request)  # the client gave up waiting
        return await self._forward(request)

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_HEADERS}
        body = await request.read()
        async with self._session.request(
            request.method, self.upstream + request.rel_url.raw_path_qs, headers=headers, data=body or None,
            ssl=self._upstream_ssl, allow_redirects=False, auto_decompress=False,
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for key, value in upstream.headers.items():
                if key.lower() not in HOP_HEADERS:
                    response.headers.add(key, value)
            await response.prepare(request)
            # chunk by chunk, so watches stream through
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=10))
        app = web.Application(client_max_size=64 * 2**20)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # open watches are cut at stop rather than waited for
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, procs.LOOPBACK, self.port, ssl_context=self._server_ssl).start()

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        # handlers still streaming (watches) end here, not when the loop closes under them
        pending = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
