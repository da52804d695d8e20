"""The storm generator as drills use it: the CLI against a real redis-server, with a reconnect storm."""

import json
import subprocess
import sys
import time
from collections import Counter

import pytest

pytestmark = pytest.mark.integration


def test_cli_holds_connections_from_each_source_and_counts_rejected_reconnects(redis_factory, tmp_path):
    server = redis_factory(maxclients=30)
    password_file = tmp_path / "password"
    password_file.write_text(server.password + "\n")
    admin = server.client()
    admin.ping()
    done = subprocess.run(
        [sys.executable, "-m", "stormctl.sandbox.stormgen", "--port", str(server.port),
         "--password-file", str(password_file), "--source", "127.0.80.1=20", "--source", "127.0.80.2=15",
         "--name", "drill", "--reconnect", "--reconnect-delay", "0.05", "--duration", "1.5", "--interval", "0.5"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    during, final = lines[-2], lines[-1]
    # 29 slots left beside our admin connection: every source holds some, the rest keep being refused
    assert during["connected"] == 29
    assert during["connected_by_source"]["127.0.80.1"] + during["connected_by_source"]["127.0.80.2"] == 29
    assert final["rejected"] > 6 and final["failed"] == 0
    assert final["connected"] == 0
    assert int(admin.info("stats")["rejected_connections"]) >= final["rejected"]
    assert server.password not in done.stdout + done.stderr
    deadline = time.monotonic() + 10
    while Counter(c["name"] for c in server.client_list())["drill"]:
        assert time.monotonic() < deadline, "the generator's connections outlived it"
        time.sleep(0.02)


def test_cli_refuses_a_malformed_source():
    done = subprocess.run([sys.executable, "-m", "stormctl.sandbox.stormgen", "--port", "1", "--source", "pod-7"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert "expected IP=COUNT" in done.stderr
