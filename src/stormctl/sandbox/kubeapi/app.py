"""Assemble the emulator: state dir, tokens, audit file, seed objects, and the aiohttp application."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from pathlib import Path
from typing import Any, Optional

import yaml
from aiohttp import web

from .api import ApiServer
from .audit import AuditLog
from .faults import Faults
from .handlers import Handlers
from .rbac import TokenFile
from .resources import Registry
from .sandbox import SandboxHandlers, seed_objects, system_namespaces
from .store import Store
from .tls import ensure_certificates, server_context

TOKENS_FILE = "tokens.json"
AUDIT_FILE = "kubeapi-audit.jsonl"
READY_FILE = "kubeapi.json"
API_KEY = web.AppKey("api", ApiServer)
HANDLERS_KEY = web.AppKey("handlers", Handlers)


def load_objects(path: Path) -> list[Any]:
    """A seed file: YAML documents or JSON, each an object, a list of objects, or a List with items."""
    text = path.read_text(encoding="utf-8")
    objects: list[Any] = []
    for doc in yaml.safe_load_all(text):
        if isinstance(doc, list):
            objects.extend(doc)
        elif isinstance(doc, dict) and isinstance(doc.get("items"), list) and doc.get("kind", "").endswith("List"):
            objects.extend(doc["items"])
        elif doc is not None:
            objects.append(doc)
    return objects


def build_app(state_dir: Path, server_address: str, seed: Optional[Path] = None) -> web.Application:
    state_dir.mkdir(parents=True, exist_ok=True)
    registry = Registry()
    store = Store()
    audit = AuditLog(state_dir / AUDIT_FILE)
    api = ApiServer(registry, store, audit)
    seed_objects(registry, api, system_namespaces())
    if seed is not None:
        seed_objects(registry, api, load_objects(seed))
    tokens = TokenFile(state_dir / TOKENS_FILE)
    faults = Faults()
    handlers = Handlers(registry, api, tokens, faults, audit, server_address)
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.add_routes(SandboxHandlers(registry, api, tokens, faults, audit).routes())
    app.router.add_route("*", "/{tail:.*}", handlers.dispatch)

    async def on_startup(_: web.Application) -> None:
        store.changed = asyncio.Condition()

    app.on_startup.append(on_startup)
    app[API_KEY] = api
    app[HANDLERS_KEY] = handlers
    return app


async def serve(host: str, port: int, state_dir: Path, seed: Optional[Path] = None, tls: bool = False,
                tls_listen: Optional[tuple[str, int]] = None) -> None:
    """Serve until SIGTERM or SIGINT; `state_dir/kubeapi.json` gives the bound URLs (and CA file) once listening.

    `tls` makes the one listener https; `tls_listen` adds an https listener next to the plain one, so
    in-sandbox clients can stay on http while the kubeconfig for kubectl points at https.
    """
    app = build_app(state_dir, "%s:%d" % (host, port), seed)
    ready: dict[str, Any] = {"pid": os.getpid()}
    context = None
    if tls or tls_listen:
        ca, cert, key = ensure_certificates(state_dir, tls_listen[0] if tls_listen else host)
        context = server_context(cert, key)
        ready["ca_file"] = str(ca)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=1.0, ssl_context=context if tls else None)
    await site.start()
    bound = runner.addresses[0]
    address = "%s:%d" % (bound[0], bound[1])
    app[HANDLERS_KEY].server_address = address
    ready["url"] = ("https://" if tls else "http://") + address
    if tls_listen:
        tls_site = web.TCPSite(runner, tls_listen[0], tls_listen[1], shutdown_timeout=1.0, ssl_context=context)
        await tls_site.start()
        tls_bound = runner.addresses[-1]
        ready["tls_url"] = "https://%s:%d" % (tls_bound[0], tls_bound[1])
    tmp = state_dir / "kubeapi.json.tmp"
    tmp.write_text(json.dumps(ready), encoding="utf-8")
    os.replace(tmp, state_dir / READY_FILE)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
