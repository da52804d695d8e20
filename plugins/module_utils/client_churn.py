# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Connections each source address opens to replace others, from CLIENT LIST reads across a sampling window.

Redis gives every new connection the next client id, so a client above the highest id of the window's
first read (or of ``age`` 0 at it) was opened inside the window. An address *churns* when it also
closes what it just opened: a young client one read saw is gone at the window's last read. A pool
that opens and keeps (refilling after a blip, growing under load) shows every connection it opens
and closes few or none, so it does not churn however many it opened. A pool whose connections live a few
milliseconds shows only a few live ones at any read, so the window takes WINDOW_READS reads, and
INFO's count of accepted connections, less what the keeping pools opened, scales the churners'
sample to a rate.

When Redis was just emptied (a network blip, a CLIENT KILL, a restart), before the window or in it,
every pool reconnects at once: that wave says nothing about who storms. The reads go on until a
window of them starts after the emptying and holds as many clients at its end as at its start.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

# Every application client younger than this: Redis was just emptied and the clients are its reconnect wave...
EMPTIED_AGE_SECONDS = 10
# ...but for this share of survivors (an operator's session, a monitor that a CLIENT KILL spared).
EMPTIED_SURVIVORS_SHARE = 0.05
# The wave has settled when a window's last read holds within this share of the clients its first read held.
WAVE_SETTLED_SHARE = 0.05
# Redis was emptied between two reads when this share of the first read's long-lived clients is gone.
DROPPED_SHARE = 0.5
# CLIENT LIST reads in one window: enough that a pool of millisecond connections shows some at one read or another.
WINDOW_READS = 4
# An address churns when it closed at least this share of what it opened in the window: a churner closes most
# (about 3 in 4 over four reads), a pool refilling after a blip keeps nearly all (a timeout drops a few, 1 in 8).
CHURN_CLOSED_SHARE = 0.25

# One CLIENT LIST read: when it was taken (monotonic seconds) and its application clients.
Read = Tuple[float, List[Dict[str, str]]]


def _int(client: Dict[str, str], key: str) -> int:
    try:
        return int(client.get(key, 0))
    except (TypeError, ValueError):
        return 0


def just_emptied(clients: Sequence[Dict[str, str]]) -> bool:
    """(Almost) no client older than EMPTIED_AGE_SECONDS: what Redis holds is a reconnect wave (or nothing yet)."""
    survivors = sum(1 for c in clients if _int(c, "age") >= EMPTIED_AGE_SECONDS)
    return survivors <= EMPTIED_SURVIVORS_SHARE * len(clients)


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


def window_of(reads: Sequence[Read]) -> Sequence[Read]:
    return reads[-WINDOW_READS:]


def wave_settled(window: Sequence[Read]) -> bool:
    """The window's last read holds about as many clients as its first, and the first read is not itself in the
    second of a refill (CLIENT LIST ages are whole seconds: a pool that refilled then would count as opened)."""
    if len(window) < 2:
        return False
    first, last = len(window[0][1]), len(window[-1][1])
    kept = {_int(c, "id") for c in window[-1][1]}
    refilling = sum(1 for c in window[0][1] if _int(c, "age") == 0 and _int(c, "id") in kept)
    return bool(first) and abs(last - first) <= WAVE_SETTLED_SHARE * first and refilling <= WAVE_SETTLED_SHARE * first


def waiting_for_wave(reads: Sequence[Read]) -> bool:
    """Redis was just emptied and no full window yet starts after it on a settled population."""
    emptied = emptied_at(reads)
    if emptied is None:
        return False
    return len(reads) - WINDOW_READS < emptied or not wave_settled(window_of(reads))


def _per_address(window: Sequence[Read], source_ip: Any) -> Dict[str, Tuple[int, int, int]]:
    """Per IP: clients opened in the window, young clients an earlier read saw that are gone at the last read
    (closed soon after opening), and clients opened in the window that the last read still holds."""
    floor = max((_int(c, "id") for c in window[0][1]), default=-1)
    last = {_int(c, "id") for c in window[-1][1]}
    opened: Dict[str, Set[int]] = {}
    closed: Dict[str, Set[int]] = {}
    for index, (_at, clients) in enumerate(window):
        for client in clients:
            ident, ip = _int(client, "id"), source_ip(client.get("addr", ""))
            new = ident > floor or (index == 0 and _int(client, "age") == 0)
            if new:
                opened.setdefault(ip, set()).add(ident)
            if ident not in last and (new or _int(client, "age") < EMPTIED_AGE_SECONDS):
                closed.setdefault(ip, set()).add(ident)
    return {ip: (len(opened.get(ip, set())), len(closed.get(ip, set())), len(opened.get(ip, set()) & last))
            for ip in set(opened) | set(closed)}


def churn(reads: Sequence[Read], source_ip: Any,
          received: Sequence[int] = ()) -> Tuple[Dict[str, Tuple[int, float]], Dict[str, Any]]:
    """Per source IP: connections opened in the window that a read saw, and connections opened per second to
    replace others (churn: what a pool opens and keeps is not counted in the rate).

    The window is the last WINDOW_READS reads. ``source_ip`` maps a CLIENT LIST ``addr`` to its IP;
    ``received`` is INFO's ``total_connections_received`` at each read. The summary says how long the
    window was, how many reads were taken, whether Redis was just emptied and its reconnect wave settled
    before the window, and the rate the addresses share.
    """
    emptied = emptied_at(reads)
    window = window_of(reads)
    if len(window) < 2:
        return {}, {"window_seconds": 0.0, "reads": len(reads), "emptied": False, "wave_settled": None,
                    "waited_seconds": 0.0, "opened": None, "opened_per_sec": None}
    seconds = window[-1][0] - window[0][0]
    counts = _per_address(window, source_ip)
    opened = sum(count for count, _closed, _kept in counts.values())
    accepted = received[-1] - received[-len(window)] if len(received) == len(reads) else opened
    # a churner's share is what it closed and still holds of its own; it opened the rest unseen
    evidence = {ip: closed + kept if closed and closed >= CHURN_CLOSED_SHARE * count else 0
                for ip, (count, closed, kept) in counts.items()}
    kept_by_pools = sum(kept for ip, (_count, _closed, kept) in counts.items() if not evidence[ip])
    shown = sum(evidence.values())
    budget = max(accepted - kept_by_pools, shown)
    per_ip = {ip: (count, round(budget * evidence[ip] / shown / seconds, 2) if shown and seconds > 0 else 0.0)
              for ip, (count, _closed, _kept) in counts.items() if count}
    return per_ip, {
        "window_seconds": round(seconds, 3), "reads": len(reads), "emptied": emptied is not None,
        "wave_settled": (not waiting_for_wave(reads)) if emptied is not None else None,
        "waited_seconds": round(window[0][0] - reads[0][0], 3), "opened": opened,
        "opened_per_sec": round(max(accepted, opened) / seconds, 2) if seconds > 0 else 0.0,
    }
