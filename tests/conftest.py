"""Shared pytest set-up: fixtures live in tests/fixtures/ as plugins."""

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("ANSIBLE_CONFIG", str(REPO / "ansible.cfg"))

pytest_plugins = [
    "tests.fixtures.services",
    "tests.fixtures.redis",
    "tests.fixtures.redis_cluster",
    "tests.fixtures.sentinel",
    "tests.fixtures.kubeapi",
    "tests.fixtures.sandbox",
    "tests.fixtures.compat",
    "tests.fixtures.control_plane",
]
