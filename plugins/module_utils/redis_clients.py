# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis' own view of a connection storm: who is connected, how fast they arrive, how slow Redis is.

CLIENT LIST is O(clients) on Redis' main thread and every other command waits behind it, so
one run reads it only at the two ends of its sampling window (a few more times only while the
reconnect wave of a just emptied Redis settles, within a bound) and derives everything (sources,
connections opened per source, kill candidates) from those answers.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
import math
import re
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ansible_collections.fintech.redis_storm.plugins.module_utils import client_churn, stale_cache
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_conn import (
    Connection,
    command_error,
    connect,
)

try:
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover - connect() reports the missing library
    RedisError = Exception  # type: ignore[misc,assignment]

Client = Dict[str, str]

SENTINEL_LINK = re.compile(r"^sentinel-[0-9a-f]{8}-(cmd|pubsub)$")

# What one read of Redis' clients takes besides the connection (redis_clients_info, storm_views_info).
READ_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "sample_seconds": {"type": "float", "default": 1.0},
    "latency_samples": {"type": "int", "default": 20},
    "top": {"type": "int", "default": 10},
    "wave_wait_seconds": {"type": "float", "default": 5.0},
}

DEFAULT_THRESHOLDS: Dict[str, Dict[str, float]] = {
    "utilization": {"warning": 0.8, "critical": 0.95},
    "new_connections_per_sec": {"warning": 100.0, "critical": 500.0},
    "rejected_per_sec": {"warning": 0.0, "critical": 1.0},
}

_LABELS = {
    "utilization": "client utilization (connected/maxclients)",
    "new_connections_per_sec": "new connections per second",
    "rejected_per_sec": "rejected connections per second",
}


# ---------------------------------------------------------------- CLIENT LIST

_FIELD = re.compile(r"([^ =\r\n]+)=([^ \r\n]*)")


def parse_client_list(text: str) -> List[Client]:
    """Every line of CLIENT LIST as a dict of its fields (unknown fields kept as they are)."""
    clients = []
    # field names and most values (flags, cmd, user, names, laddr) repeat on every line: keep one copy
    # of each, which halves the memory of a 100k-client list
    seen: Dict[str, str] = {}
    keep = seen.setdefault
    for line in text.splitlines():
        pairs = _FIELD.findall(line)
        if pairs:
            clients.append({keep(key, key): keep(value, value) for key, value in pairs})
    return clients


def field_int(client: Client, key: str, default: int = 0) -> int:
    try:
        return int(client.get(key, default))
    except (TypeError, ValueError):
        return default


def source_ip(addr: str) -> str:
    """The IP part of ``addr`` (``10.0.0.7:5123``, ``[::1]:5123``; a unix socket path stays whole)."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit():
        return addr
    if host.startswith("[") and host.endswith("]"):
        return host[1:-1]
    return host


def is_replication_link(client: Client) -> bool:
    """Replicas (flag S) and our master (flag M) are not application clients."""
    flags = client.get("flags", "")
    return "S" in flags or "M" in flags


def is_sentinel_link(client: Client) -> bool:
    """A Sentinel monitoring this node (it names its two links with the first 8 characters of its run id)."""
    return SENTINEL_LINK.match(client.get("name", "")) is not None


def application_clients(clients: Iterable[Client], own_id: Optional[int]) -> List[Client]:
    own = str(own_id) if own_id is not None else None
    return [c for c in clients if c.get("id") != own and not is_replication_link(c) and not is_sentinel_link(c)]


def top_sources(clients: Iterable[Client], top: int = 10,
                opened: Optional[Dict[str, Tuple[int, float]]] = None) -> List[Dict[str, Any]]:
    """Connections grouped by source IP, most connections first (``top`` <= 0: all of them).

    With ``opened`` (per IP: connections opened in the sampling window, and opened per second), an
    IP among the ``top`` that opened the most is kept too, and each source says how many it opened.
    """
    groups: Dict[str, Dict[str, Any]] = {}

    def group_of(ip: str) -> Dict[str, Any]:
        if ip not in groups:
            groups[ip] = {"ip": ip, "connections": 0, "names": set(), "lib_names": set(),
                          "idle_max": 0, "age_min": None, "age_max": 0}
        return groups[ip]

    for client in clients:
        group = group_of(source_ip(client.get("addr", "")))
        group["connections"] += 1
        if client.get("name"):
            group["names"].add(client["name"])
        if client.get("lib-name"):
            group["lib_names"].add(client["lib-name"])
        group["idle_max"] = max(group["idle_max"], field_int(client, "idle"))
        age = field_int(client, "age")
        group["age_min"] = age if group["age_min"] is None else min(group["age_min"], age)
        group["age_max"] = max(group["age_max"], age)
    for ip in opened or {}:
        group_of(ip)
    for group in groups.values():
        count, rate = opened.get(group["ip"], (0, 0.0)) if opened is not None else (None, None)
        group["opened"] = count
        group["opened_per_sec"] = rate
    for group in groups.values():
        group["names"] = sorted(group["names"])
        group["lib_names"] = sorted(group["lib_names"])
        group["age_min"] = group["age_min"] or 0
    return ranked_sources(list(groups.values()), top)


def ranked_sources(sources: List[Dict[str, Any]], top: int) -> List[Dict[str, Any]]:
    """Most connections first, cut to ``top`` (<= 0: all) plus any of the ``top`` that opened the most."""
    ranked = sorted(sources, key=lambda g: (-g["connections"], _ip_key(g["ip"])))
    if top > 0:
        churning = sorted(sources, key=lambda g: (-(g["opened"] or 0), _ip_key(g["ip"])))[:top]
        kept = {id(g) for g in ranked[:top]} | {id(g) for g in churning if g["opened"]}
        ranked = [g for g in ranked if id(g) in kept]
    return ranked


def _ip_key(ip: str) -> Tuple[int, Any]:
    try:
        parsed = ipaddress.ip_address(ip)
        return (parsed.version, int(parsed))
    except ValueError:
        return (9, ip)


# ---------------------------------------------------------------- INFO, rates, latency

def clients_view(info: Dict[str, Any], maxclients: Optional[int]) -> Dict[str, Any]:
    connected = int(info.get("connected_clients", 0))
    utilization = round(connected / maxclients, 4) if maxclients else None
    return {"connected": connected, "max": maxclients, "utilization": utilization,
            "blocked": int(info.get("blocked_clients", 0))}


def stats_view(info: Dict[str, Any]) -> Dict[str, Any]:
    return {
        "total_connections_received": int(info.get("total_connections_received", 0)),
        "rejected_connections": int(info.get("rejected_connections", 0)),
        "evicted_clients": int(info.get("evicted_clients", 0)),
        "ops_per_sec": int(info.get("instantaneous_ops_per_sec", 0)),
    }


def rates(first: Dict[str, Any], second: Dict[str, Any], seconds: float) -> Dict[str, Optional[float]]:
    """Per-second rates between two INFO samples (None when there was no interval)."""
    if seconds <= 0:
        return {"new_connections_per_sec": None, "rejected_per_sec": None}

    def per_sec(key: str) -> float:
        delta = int(second.get(key, 0)) - int(first.get(key, 0))
        return round(max(delta, 0) / seconds, 2)

    return {"new_connections_per_sec": per_sec("total_connections_received"),
            "rejected_per_sec": per_sec("rejected_connections")}


def percentile(sorted_values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        raise ValueError("no values")
    rank = math.ceil(round(fraction * len(sorted_values), 9))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def latency_summary(samples_ms: Sequence[float]) -> Dict[str, Optional[float]]:
    if not samples_ms:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(samples_ms)
    return {"p50": round(percentile(ordered, 0.50), 3), "p99": round(percentile(ordered, 0.99), 3),
            "max": round(ordered[-1], 3)}


def probe_latency(ping: Callable[[], Any], samples: int) -> Dict[str, Optional[float]]:
    measured = []
    for _sample in range(max(samples, 0)):
        started = time.perf_counter()
        ping()
        measured.append((time.perf_counter() - started) * 1000.0)
    return latency_summary(measured)


# ---------------------------------------------------------------- verdict

def merge_thresholds(thresholds: Optional[Dict[str, Any]]) -> Dict[str, Dict[str, float]]:
    merged = {name: dict(levels) for name, levels in DEFAULT_THRESHOLDS.items()}
    for name, levels in (thresholds or {}).items():
        if name not in merged:
            raise StormError("unknown threshold %r: use one of %s" % (name, ", ".join(sorted(merged))))
        for level, value in (levels or {}).items():
            if level not in ("warning", "critical"):
                raise StormError("threshold %s has unknown level %r: use warning or critical" % (name, level))
            if value is not None:
                merged[name][level] = float(value)
    return merged


def verdict(measured: Dict[str, Optional[float]], thresholds: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Severity from each measured value against its thresholds; a level is reached above its value."""
    limits = merge_thresholds(thresholds)
    severity = "none"
    reasons = []
    for name, levels in limits.items():
        value = measured.get(name)
        if value is None:
            continue
        for level in ("critical", "warning"):
            if value > levels[level]:
                reasons.append("%s is %s, above the %s threshold %s" % (_LABELS[name], _fmt(value), level,
                                                                        _fmt(levels[level])))
                if level == "critical" or severity == "none":
                    severity = level
                break
    return {"storm": severity != "none", "severity": severity, "reasons": reasons}


def _fmt(value: float) -> str:
    return ("%.4f" % value).rstrip("0").rstrip(".") if value != int(value) else str(int(value))


def saturated_verdict(error: str) -> Dict[str, Any]:
    return {"storm": True, "severity": "critical",
            "reasons": ["Redis is saturated: " + error]}


# ---------------------------------------------------------------- one triage run

def _command(options: Dict[str, Any], what: str, call: Callable[[], Any]) -> Any:
    try:
        return call()
    except (RedisError, OSError) as exc:
        raise command_error(exc, options, what) from exc


def read_client_list(conn: Connection, options: Dict[str, Any]) -> Tuple[int, List[Client]]:
    """Our own CLIENT ID and the one CLIENT LIST of this run."""
    client = conn.live_client()
    own_id = int(_command(options, "CLIENT ID", lambda: client.execute_command("CLIENT", "ID")))
    raw = _command(options, "CLIENT LIST", lambda: client.execute_command("CLIENT", "LIST"))
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else str(raw)
    return own_id, parse_client_list(text)


def _maxclients(conn: Connection, options: Dict[str, Any], info: Dict[str, Any]) -> Optional[int]:
    if "maxclients" in info:  # INFO clients has it since Redis 6.2
        return int(info["maxclients"])
    client = conn.live_client()
    try:
        answer = client.config_get("maxclients")
    except RedisError:  # no CONFIG permission: utilization stays unknown rather than failing triage
        return None
    value = answer.get("maxclients") or answer.get(b"maxclients")
    return int(value) if value is not None else None


def _info(conn: Connection, options: Dict[str, Any]) -> Dict[str, Any]:
    client = conn.live_client()
    sample: Dict[str, Any] = {}
    for section in ("clients", "stats"):
        sample.update(_command(options, "INFO %s" % section, functools.partial(client.info, section)))
    return sample


def unreachable_result(conn: Connection) -> Dict[str, Any]:
    error = conn.error or "Redis is not reachable"
    if conn.saturated:
        judged = saturated_verdict(error)
    else:
        judged = {"storm": False, "severity": "none", "reasons": ["nothing measured: " + error]}
    return {"reachable": False, "saturated": conn.saturated, "error": error, "clients": None, "stats": None,
            "rates": None, "latency_ms": None, "top_sources": [], "churn": None, "stale_cache": None,
            "verdict": judged}


def read_window(conn: Connection, options: Dict[str, Any], sample_seconds: float,
                wave_wait_seconds: float) -> Tuple[List[client_churn.Read], List[int]]:
    """CLIENT LIST reads ``sample_seconds`` apart, each with INFO's count of accepted connections.

    Two reads make the window. When Redis was just emptied (before the window or in it), the reads go
    on every ``sample_seconds`` until the reconnect wave settles (or ``wave_wait_seconds`` have passed),
    and the window is the last two reads, after the wave: pools refilled, what still reconnects is the storm.
    """
    client = conn.live_client()
    reads: List[client_churn.Read] = []
    received: List[int] = []

    def read() -> None:
        at = time.monotonic()
        own_id, listed = read_client_list(conn, options)
        stats = _command(options, "INFO stats", functools.partial(client.info, "stats"))
        reads.append((at, application_clients(listed, own_id)))
        received.append(int(stats.get("total_connections_received", 0)))

    def read_later() -> None:
        pause = reads[-1][0] + sample_seconds - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        read()

    read()
    if sample_seconds <= 0:
        return reads, received
    deadline = reads[0][0] + sample_seconds + wave_wait_seconds
    read_later()
    emptied = client_churn.emptied_at(reads)
    if emptied is not None:  # before the window or in it
        while not client_churn.wave_settled(reads[emptied:]) and reads[-1][0] + sample_seconds <= deadline:
            read_later()
        read_later()
    return reads, received


def collect(options: Dict[str, Any], sample_seconds: float = 1.0, latency_samples: int = 20, top: int = 10,
            thresholds: Optional[Dict[str, Any]] = None, wave_wait_seconds: float = 5.0) -> Dict[str, Any]:
    """One read-only triage of Redis' clients: the redis_clients_info result."""
    # bad options fail before we touch Redis
    for name, value in (("sample_seconds", sample_seconds), ("latency_samples", latency_samples), ("top", top),
                        ("wave_wait_seconds", wave_wait_seconds)):
        if value < 0:
            raise StormError("%s must be 0 or more (got %s)" % (name, value))
    merge_thresholds(thresholds)
    conn = connect(options)
    if not conn.reachable:
        return unreachable_result(conn)
    try:
        client = conn.live_client()
        latency = probe_latency(lambda: _command(options, "PING", client.ping), latency_samples)
        first = _info(conn, options)
        first_at = time.monotonic()
        # the window's CLIENT LIST reads end next to the second INFO sample, so top_sources and
        # clients.connected describe the same moment
        reads, received = read_window(conn, options, sample_seconds, wave_wait_seconds)
        second = _info(conn, options) if sample_seconds > 0 else first
        elapsed = time.monotonic() - first_at if sample_seconds > 0 else 0.0
        maxclients = _maxclients(conn, options, second)
    finally:
        conn.close()
    clients = clients_view(second, maxclients)
    measured = rates(first, second, elapsed)
    judged = verdict({"utilization": clients["utilization"], **measured}, thresholds)
    opened, window = client_churn.churn(reads, source_ip, received)
    return {
        "reachable": True, "saturated": False, "error": None,
        "clients": clients, "stats": stats_view(second), "rates": measured, "latency_ms": latency,
        "top_sources": top_sources(reads[-1][1], top, opened if len(reads) > 1 else None),
        "churn": window,
        "stale_cache": stale_cache.reading(first, second, elapsed) if sample_seconds > 0 else None,
        "verdict": judged,
    }


# ---------------------------------------------------------------- CLIENT KILL

def _networks(ips: Iterable[str]) -> List[Any]:
    networks = []
    for entry in ips:
        try:
            networks.append(ipaddress.ip_network(entry.strip(), strict=False))
        except ValueError as exc:
            raise StormError("ips entry %r is not an IP address or CIDR network" % entry) from exc
    return networks


def kill_candidates(clients: Iterable[Client], own_id: Optional[int], ips: Optional[Sequence[str]] = None,
                    idle_seconds_min: Optional[int] = None, name_pattern: Optional[str] = None,
                    max_kill: Optional[int] = None) -> Tuple[List[Dict[str, Any]], int]:
    """Clients matching every given filter, most idle first, capped at ``max_kill``; and how many matched."""
    networks = _networks(ips or [])
    matched: List[Dict[str, Any]] = []
    for client in application_clients(clients, own_id):
        if networks:
            try:
                address = ipaddress.ip_address(source_ip(client.get("addr", "")))
            except ValueError:
                continue
            if not any(address in network for network in networks):
                continue
        if idle_seconds_min is not None and field_int(client, "idle") < idle_seconds_min:
            continue
        if name_pattern is not None and not fnmatch.fnmatchcase(client.get("name", ""), name_pattern):
            continue
        matched.append({"id": field_int(client, "id"), "addr": client.get("addr", ""),
                        "name": client.get("name", ""), "idle": field_int(client, "idle")})
    matched.sort(key=lambda c: (-int(c["idle"]), int(c["id"])))
    chosen = matched if max_kill is None else matched[:max_kill]
    return chosen, len(matched)


def kill_clients(options: Dict[str, Any], ips: Optional[Sequence[str]] = None,
                 idle_seconds_min: Optional[int] = None, name_pattern: Optional[str] = None,
                 max_kill: int = 100, check_mode: bool = False) -> Dict[str, Any]:
    """CLIENT KILL the matching clients one ID at a time (none in check mode); never our own connection."""
    if not ips and idle_seconds_min is None and name_pattern is None:
        raise StormError("give at least one filter (ips, idle_seconds_min or name_pattern): refusing to kill "
                         "every client")
    if max_kill < 1:
        raise StormError("max_kill must be at least 1 (got %s)" % max_kill)
    _networks(ips or [])
    conn = connect(options)
    if not conn.reachable:
        raise StormError("cannot kill clients: %s" % conn.error, saturated=conn.saturated)
    try:
        client = conn.live_client()
        own_id, listed = read_client_list(conn, options)
        candidates, matched = kill_candidates(listed, own_id, ips, idle_seconds_min, name_pattern, max_kill)
        killed = 0
        gone = 0
        if not check_mode:
            for candidate in candidates:
                count = _command(options, "CLIENT KILL ID %s" % candidate["id"], functools.partial(
                    client.execute_command, "CLIENT", "KILL", "ID", candidate["id"], "SKIPME", "yes"))
                if int(count):
                    killed += 1
                else:
                    gone += 1
    finally:
        conn.close()
    return {"changed": killed > 0 if not check_mode else bool(candidates), "killed": killed,
            "already_gone": gone, "matched": matched, "candidates": candidates}
