"""Sizing the maxclients raise from memory headroom (module_utils/capacity.py)."""

from __future__ import annotations

from typing import Any, Dict

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.capacity import parse_bytes, plan
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

MIB = 1024 * 1024


def facts(**extra: Any) -> Dict[str, Any]:
    base = {"maxclients": 1000, "connected": 1000, "used_memory": 100 * MIB, "used_memory_rss": 120 * MIB,
            "total_system_memory": 64 * 1024 * MIB, "mem_clients_normal": 2 * MIB, "maxmemory": 0,
            "maxmemory_clients": "0", "memory_limit": None}
    base.update(extra)
    return base


OPTIONS = {"factor": 1.5, "ceiling": 20000, "client_memory": "64kb", "reserve_percent": 10}


@pytest.mark.parametrize("extra, maxclients, cap, words", [
    # 1 GiB maxmemory: 0.9 GiB - 100 MiB of headroom holds far more than 500 more clients
    ({"maxmemory": 1024 * MIB}, "1500", str(2 * MIB + int(1024 * MIB * 0.9) - 100 * MIB), "maxmemory"),
    # a 160 MiB container with 120 MiB resident: 24 MiB of headroom, 384 clients of 64 KiB
    ({"memory_limit": 160 * MIB}, "1384", str(2 * MIB + 144 * MIB - 120 * MIB), "container memory limit"),
    # the tighter of the two bounds wins
    ({"maxmemory": 1024 * MIB, "memory_limit": 160 * MIB}, "1384", str(2 * MIB + 144 * MIB - 120 * MIB),
     "container memory limit"),
    # no headroom at all: maxclients stays, maxmemory-clients is left alone
    ({"maxmemory": 100 * MIB}, None, "absent", "stays 1000"),
    # Redis before 7.0: no maxmemory-clients to set, and the diff says so
    ({"maxmemory": 1024 * MIB, "maxmemory_clients": None}, "1500", "absent", "before 7.0"),
    # an operator's maxmemory-clients is kept
    ({"maxmemory": 1024 * MIB, "maxmemory_clients": "5%"}, "1500", "absent", "already 5%: kept"),
    # neither bound known: the host's memory, said so
    ({}, "1500", str(2 * MIB + int(64 * 1024 * MIB * 0.9) - 120 * MIB), "no container memory limit known"),
])
def test_raise_fits_the_memory_headroom(extra: Dict[str, Any], maxclients: Any, cap: Any, words: str) -> None:
    sized = plan(facts(**extra), OPTIONS)
    assert sized["settings"].get("maxclients") == maxclients
    assert sized["settings"].get("maxmemory-clients", cap) == cap
    assert words in sized["msg"] + " ".join(sized["assumed"]), sized


def test_measured_client_memory_above_the_floor_is_used() -> None:
    sized = plan(facts(maxmemory=1024 * MIB, mem_clients_normal=1000 * MIB), OPTIONS)
    assert "1048576 bytes per client (as measured" in sized["assumed"][0]


def test_the_cap_is_set_before_the_raise() -> None:
    assert list(plan(facts(maxmemory=1024 * MIB), OPTIONS)["settings"]) == ["maxmemory-clients", "maxclients"]


@pytest.mark.parametrize("text, value", [("2Gi", 2 * 1024 * MIB), ("512Mi", 512 * MIB), ("64kb", 65536),
                                         ("1000", 1000), ("1G", 10 ** 9)])
def test_memory_quantities(text: str, value: int) -> None:
    assert parse_bytes(text, "memory_limit") == value


def test_a_bad_quantity_says_what_to_give() -> None:
    with pytest.raises(StormError, match="give bytes or a size such as 512Mi"):
        parse_bytes("lots", "capacity.memory_limit")
