# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The log lines that tell a Redis client's trouble (timeouts, resets, refusals, retries, an open breaker)."""

from __future__ import annotations

import re
from typing import Dict, Pattern

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

DEFAULT_LOG_SIGNATURES: Dict[str, str] = {
    "redis_timeout": r"RedisTimeoutException",
    "connection_reset": r"Connection reset by peer",
    "too_many_connections": r"Too many connections",
    "max_clients_reached": r"max number of clients reached",
    "retry": r"(?i)retry(ing)?",
    "circuit_breaker_open": r"(?i)circuit.?breaker.*open",
}


def compile_signatures(signatures: Dict[str, str]) -> Dict[str, Pattern[str]]:
    compiled: Dict[str, Pattern[str]] = {}
    for name, pattern in signatures.items():
        try:
            compiled[name] = re.compile(pattern)
        except re.error as exc:
            raise StormError(
                "log_signatures.%s is not a valid regular expression (%s): %r" % (name, exc, pattern)) from exc
    return compiled


def count_signatures(text: str, signatures: Dict[str, Pattern[str]]) -> Dict[str, int]:
    """How many log lines match each signature (a line counts once per signature)."""
    counts = dict.fromkeys(signatures, 0)
    for line in text.splitlines():
        for name, pattern in signatures.items():
            if pattern.search(line):
                counts[name] += 1
    return counts
