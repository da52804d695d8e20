# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections opened per source address, from CLIENT LIST reads a sampling window apart.

Redis gives every new connection the next client id, so a client whose id is above the highest id of
the window's first read was opened inside the window. When Redis was just emptied (a network blip,
a CLIENT KILL, a restart) every client is young: the whole reconnect wave is then the measure, from
its first client on.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

# Every application client younger than this: Redis was just emptied and the clients are its reconnect wave.
EMPTIED_AGE_SECONDS = 10
# The wave has settled when a read finds fewer new clients than this share of those seen so far.
WAVE_SETTLED_SHARE = 0.05

# One CLIENT LIST read: when it was taken (monotonic seconds) and its application clients.
Read = Tuple[float, List[Dict[str, str]]]


def _int(client: Dict[str, str], key: str) -> int:
    try:
        return int(client.get(key, 0))
    except (TypeError, ValueError):
        return 0


def just_emptied(clients: Sequence[Dict[str, str]]) -> bool:
    """No client older than EMPTIED_AGE_SECONDS: what Redis holds is a reconnect wave (or nothing yet)."""
    return all(_int(c, "age") < EMPTIED_AGE_SECONDS for c in clients)


def _opened_ids(reads: Sequence[Read], emptied: bool) -> Dict[int, str]:
    """id -> address of every client opened in the window, over all reads after the first (all reads when emptied)."""
    first = reads[0][1]
    floor = -1 if emptied or not first else max(_int(c, "id") for c in first)
    opened: Dict[int, str] = {}
    for _, clients in (reads if emptied else reads[1:]):
        for client in clients:
            client_id = _int(client, "id")
            if client_id > floor:
                opened[client_id] = client.get("addr", "")
    return opened


def window_seconds(reads: Sequence[Read], emptied: bool) -> float:
    """From the first read to the last; when emptied, from the wave's oldest client."""
    span = reads[-1][0] - reads[0][0]
    if emptied and reads[0][1]:
        span += max(_int(c, "age") for c in reads[0][1])
    return span


def wave_settled(reads: Sequence[Read]) -> bool:
    """The last read found (almost) no client the earlier reads had not seen."""
    if len(reads) < 3:
        return False
    before = {_int(c, "id") for _, clients in reads[:-1] for c in clients}
    new = [c for c in reads[-1][1] if _int(c, "id") not in before]
    return bool(before) and len(new) <= WAVE_SETTLED_SHARE * len(before)


def churn(reads: Sequence[Read], source_ip: Any) -> Tuple[Dict[str, Tuple[int, float]], Dict[str, Any]]:
    """Per source IP: connections opened in the window that a read saw, and connections opened per second.

    A connection opened and closed between two reads takes an id no read shows: Redis gave out
    ``ids_given`` ids in the window, so each address's rate is its seen share of those ids (a pool
    that reconnects every few milliseconds shows only its live clients, yet every one of them is new).
    ``source_ip`` maps a CLIENT LIST ``addr`` to its IP. The summary says how long the window was,
    how many reads it took and whether Redis was just emptied.
    """
    if len(reads) < 2:
        return {}, {"window_seconds": 0.0, "reads": len(reads), "emptied": False, "opened": None,
                    "opened_per_sec": None, "ids_given": None}
    emptied = just_emptied(reads[0][1])
    opened = _opened_ids(reads, emptied)
    seen: Dict[str, int] = {}
    for addr in opened.values():
        ip = source_ip(addr)
        seen[ip] = seen.get(ip, 0) + 1
    seconds = window_seconds(reads, emptied)
    ids = [_int(c, "id") for _, clients in reads for c in clients]
    first_ids = [_int(c, "id") for c in reads[0][1]]
    low: Optional[int] = (min(ids) - 1 if ids else None) if emptied else (max(first_ids) if first_ids else None)
    given = max(ids) - low if ids and low is not None else None
    total = max(given or 0, len(opened))
    scale = total / len(opened) if opened else 0.0
    per_ip = {ip: (count, round(count * scale / seconds, 2) if seconds > 0 else 0.0) for ip, count in seen.items()}
    return per_ip, {
        "window_seconds": round(seconds, 3), "reads": len(reads), "emptied": emptied, "opened": len(opened),
        "opened_per_sec": round(total / seconds, 2) if seconds > 0 else None, "ids_given": given,
    }
