"""playbooks/verify.yml (the AWX workflow's recovery check node) against a real redis-server:
it succeeds when Redis has room and fails the job when Redis is still saturated."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Callable

import redis
import yaml

from tests.fixtures.redis import RedisServer

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin"


def run_verify(server: RedisServer, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(yaml.safe_dump({"all": {"hosts": {"sandbox-redis": {
        "ansible_connection": "local", "ansible_python_interpreter": str(VENV_BIN / "python"),
        "storm_redis_host": server.host, "storm_redis_port": server.port, "storm_redis_password": server.password,
        "storm_prometheus_url": "", "recovery_check_app_p99_query": "",
        "storm_recovery_hold_seconds": 0, "storm_recovery_timeout_seconds": 2}}}}))
    inventory.chmod(0o600)
    return subprocess.run([str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "playbooks/verify.yml"],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_NOCOLOR="1"))


def test_verify_passes_when_redis_has_room(redis_factory: Callable[..., RedisServer], tmp_path: Path) -> None:
    server = redis_factory(maxclients=20)
    result = run_verify(server, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Redis on sandbox-redis has recovered" in result.stdout
    assert server.password not in result.stdout + result.stderr


def test_verify_fails_the_job_while_redis_is_saturated(redis_factory: Callable[..., RedisServer],
                                                       tmp_path: Path) -> None:
    server = redis_factory(maxclients=20)
    held = []
    try:
        for _ in range(18):
            conn = redis.Redis(host=server.host, port=server.port, password=server.password,
                               single_connection_client=True, socket_timeout=5)
            conn.ping()
            held.append(conn)
        result = run_verify(server, tmp_path)
    finally:
        for conn in held:
            conn.close()
    assert result.returncode != 0, result.stdout[-3000:]
    assert "Redis on sandbox-redis has not recovered" in result.stdout
    assert server.password not in result.stdout + result.stderr
