# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Which Redis server a connection reached, and how much room for clients it has.

Ledger entries of CONFIG SET changes carry the server's own identity (``run_id`` from INFO server,
``replid`` from INFO replication), so rollback recognises the server however its address is
spelled (``localhost`` or ``127.0.0.1``, a Service name or a pod IP) and never restores one
server's settings on another. ``run_id`` changes when Redis restarts; the replication id of a
master that restarted from its RDB (or of a promoted replica, as ``master_replid2``) still ties it
to the data set the entry was recorded on.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

SAME, RESTARTED, OTHER = "same", "restarted", "other"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def config_get(client: Any, name: str) -> Optional[str]:
    """A directive's value as CONFIG GET gives it (a string), or None when the server has no such directive."""
    reply = client.config_get(name)
    value = reply.get(name) if isinstance(reply, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None else str(value)


def identity(client: Any) -> Dict[str, str]:
    """``{run_id, replid}`` of the server ``client`` is connected to."""
    server = client.info("server")
    replication = client.info("replication")
    return {"run_id": _text(server.get("run_id")), "replid": _text(replication.get("master_replid"))}


def replication_ids(client: Any) -> Tuple[str, str]:
    replication = client.info("replication")
    return _text(replication.get("master_replid")), _text(replication.get("master_replid2"))


def match(target: Dict[str, Any], found: Dict[str, str], found_replids: Tuple[str, ...], endpoint: str) -> str:
    """``same`` server, the same data set after a ``restarted`` server or failover, or an ``other`` server.

    Entries recorded before identities were kept fall back to the address as spelled."""
    if not target.get("run_id"):
        return SAME if target.get("endpoint") == endpoint else OTHER
    if target["run_id"] == found.get("run_id"):
        return SAME
    if target.get("replid") and target["replid"] in [r for r in found_replids if r]:
        return RESTARTED
    return OTHER


def clients(client: Any) -> Tuple[int, int]:
    """(connected_clients, maxclients) right now."""
    info = client.info("clients")
    reply = client.config_get("maxclients")
    value: Optional[Any] = reply.get("maxclients") if isinstance(reply, dict) else None
    return int(info.get("connected_clients", 0)), int(_text(value) or 0)
