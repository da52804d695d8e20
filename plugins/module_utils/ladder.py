# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The ladder's rungs in order, written from meta/ladder.yml by tools/ladder.py (make ladder): edit
the registry, not this file."""

from __future__ import annotations

from typing import Any, Dict, Tuple

RUNGS: Tuple[Dict[str, Any], ...] = (
    {"name": "ingress_rate_limit", "stage": "mitigate", "acts_on": "workload",
     "modules": ["ingress_rate_limit"]},
    {"name": "client_retries", "stage": "mitigate", "acts_on": "workload",
     "modules": ["feature_flag"]},
    {"name": "circuit_breaker", "stage": "mitigate", "acts_on": "workload",
     "modules": ["feature_flag", "mesh_circuit_breaker"]},
    {"name": "redis_capacity", "stage": "mitigate", "acts_on": "redis",
     "modules": ["redis_runtime_config", "workload_scale"]},
    {"name": "offender_scale_down", "stage": "mitigate", "acts_on": "workload",
     "modules": ["hpa_pause", "workload_scale"]},
    {"name": "hpa_pause", "stage": "stabilise", "acts_on": "workload",
     "modules": ["hpa_pause"]},
)
# Rung names in ladder order.
LADDER: Tuple[str, ...] = tuple(str(rung["name"]) for rung in RUNGS)
