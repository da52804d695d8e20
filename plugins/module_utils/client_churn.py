# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections opened per source address, from CLIENT LIST reads a sampling window apart.

Redis gives every new connection the next client id, so a client whose id is above the highest id of
the window's first read was opened inside the window; a client of the first read whose ``age`` is 0
was opened in the second before it. Those clients are a sample of the connections each address
opens; INFO's count of accepted connections over the same window scales the sample to a rate (a
pool that reconnects every few milliseconds shows only its live clients at any read).

When Redis was just emptied (a network blip, a CLIENT KILL, a restart), before the window or in it,
every client is young and every pool reconnects at once: that wave says nothing about who storms.
The reads go on until the wave settles, and the window is the last two reads, after it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

# Every application client younger than this: Redis was just emptied and the clients are its reconnect wave.
EMPTIED_AGE_SECONDS = 10
# The wave has settled when a read finds fewer new clients than this share of those seen so far.
WAVE_SETTLED_SHARE = 0.05
# Redis was emptied between two reads when this share of the first read's long-lived clients is gone.
DROPPED_SHARE = 0.5

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


def dropped(before: Sequence[Dict[str, str]], after: Sequence[Dict[str, str]]) -> bool:
    """Most of the long-lived clients of one read are gone at the next: Redis dropped them (a blip, a CLIENT KILL)
    between the two, however long the dropping took. Short-lived clients come and go and do not count."""
    old = {_int(c, "id") for c in before if _int(c, "age") >= EMPTIED_AGE_SECONDS}
    gone = old - {_int(c, "id") for c in after}
    return bool(old) and len(gone) >= DROPPED_SHARE * len(old)


def emptied_at(reads: Sequence[Read]) -> Optional[int]:
    """The first read at which Redis had just been emptied (or was being emptied), or None."""
    return next((index for index, (_at, clients) in enumerate(reads)
                 if just_emptied(clients) or (index and dropped(reads[index - 1][1], clients))), None)


def _opened_ids(first: Sequence[Dict[str, str]], later: Sequence[Dict[str, str]]) -> Dict[int, str]:
    """id -> address of every client opened in the window: newer than the first read, or just opened at it."""
    floor = max((_int(c, "id") for c in first), default=-1)
    opened = {_int(c, "id"): c.get("addr", "") for c in first if _int(c, "age") == 0}
    opened.update({_int(c, "id"): c.get("addr", "") for c in later if _int(c, "id") > floor})
    return opened


def _replaced(ip: str, first: Sequence[Dict[str, str]], last: Sequence[Dict[str, str]], source_ip: Any) -> int:
    """Connections an address opened only to replace others. An address whose connections all live under a
    second replaces every one it opens; one with older connections replaces only as many as it lost young
    ones (a pool refilling keeps what it opens; an idle pool closing its oldest is shrinking, not churning)."""
    floor = max((_int(c, "id") for c in first), default=-1)
    still = {_int(c, "id") for c in last}
    mine = [c for c in first if source_ip(c.get("addr", "")) == ip]
    new = sum(1 for c in last if source_ip(c.get("addr", "")) == ip and _int(c, "id") > floor)
    gone = sum(1 for c in mine if _int(c, "age") < EMPTIED_AGE_SECONDS and _int(c, "id") not in still)
    if all(_int(c, "age") == 0 for c in mine):
        return gone + new
    return gone + new if gone else 0


def wave_settled(reads: Sequence[Read]) -> bool:
    """The last read found (almost) no client the earlier reads had not seen, and lost (almost) none."""
    if len(reads) < 2:
        return False
    before = {_int(c, "id") for _at, clients in reads[:-1] for c in clients}
    new = [c for c in reads[-1][1] if _int(c, "id") not in before]
    shrinking = len(reads[-1][1]) < (1 - WAVE_SETTLED_SHARE) * len(reads[-2][1])
    return bool(before) and len(new) <= WAVE_SETTLED_SHARE * len(before) and not shrinking


def churn(reads: Sequence[Read], source_ip: Any,
          received: Sequence[int] = ()) -> Tuple[Dict[str, Tuple[int, float]], Dict[str, Any]]:
    """Per source IP: connections opened in the window that a read saw, and connections opened per second to
    replace others (churn: what a pool opens only to grow itself is not counted in the rate).

    The window is the last two reads. ``source_ip`` maps a CLIENT LIST ``addr`` to its IP; ``received``
    is INFO's ``total_connections_received`` at each read. The summary says how long the window was,
    how many reads it took, whether Redis was just emptied and its reconnect wave settled before the
    window, and the rate the addresses share.
    """
    emptied = emptied_at(reads)
    if len(reads) < 2:
        return {}, {"window_seconds": 0.0, "reads": len(reads), "emptied": False, "wave_settled": None,
                    "waited_seconds": 0.0, "opened": None, "opened_per_sec": None}
    (start, first), (end, last) = reads[-2], reads[-1]
    opened = _opened_ids(first, last)
    seen: Dict[str, int] = {}
    for addr in opened.values():
        ip = source_ip(addr)
        seen[ip] = seen.get(ip, 0) + 1
    replaced = {ip: _replaced(ip, first, last, source_ip) for ip in seen}
    seconds = end - start
    accepted = (received[-1] - received[-2]) / seconds if len(received) == len(reads) and seconds > 0 else 0.0
    rate = max(accepted, len(opened) / seconds if seconds > 0 else 0.0)
    per_ip = {ip: (count, round(rate * replaced[ip] / len(opened), 2)) for ip, count in seen.items()}
    return per_ip, {
        "window_seconds": round(seconds, 3), "reads": len(reads), "emptied": emptied is not None,
        "wave_settled": wave_settled(reads[emptied:-1]) if emptied is not None else None,
        "waited_seconds": round(start - reads[0][0], 3), "opened": len(opened), "opened_per_sec": round(rate, 2),
    }
