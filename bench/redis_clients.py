"""redis_clients_info at 10,000 connected clients: wall time, connections it opens, CLIENT LIST calls and cost.

Starts a real redis-server (maxclients 11000), holds 10,000 connections from four 127.x
addresses with the storm generator, then runs the module's logic in-process and the module
through ansible-playbook, measuring each run with Redis' own counters (read over a connection
opened before the run, so it is not counted). Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict

import redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import collect  # noqa: E402

from stormctl.sandbox.stormgen import StormGen, raise_nofile_limit  # noqa: E402

SOURCES = [("127.0.10.1", 4000), ("127.0.10.2", 3000), ("127.0.10.3", 2000), ("127.0.10.4", 1000)]
MAXCLIENTS = 11000
SAMPLE_SECONDS = 0.5


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_redis(directory: Path, password: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    conf = directory / "redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\nrequirepass %s\nmaxclients %d\ndir %s\nsave \"\"\nappendonly no\n"
                    "logfile %s\n" % (port, password, MAXCLIENTS, directory, directory / "redis.log"))
    conf.chmod(0o600)
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    process = subprocess.Popen([binary, str(conf)], start_new_session=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with redis.Redis(port=port, password=password, socket_timeout=1) as probe:
                probe.ping()
                return process, port
        except redis.ConnectionError:
            time.sleep(0.02)
    _stop(process)
    raise RuntimeError("redis-server did not start: %s" % (directory / "redis.log").read_text()[-1000:])


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _counters(admin: redis.Redis) -> Dict[str, int]:
    stats = admin.info("stats")
    client_list = admin.info("commandstats").get("cmdstat_client|list", {})
    return {"connections": int(stats["total_connections_received"]),
            "client_list_calls": int(client_list.get("calls", 0)), "client_list_usec": int(client_list.get("usec", 0))}


def _measure(admin: redis.Redis, action: Callable[[], Any]) -> Dict[str, Any]:
    before = _counters(admin)
    started = time.monotonic()
    outcome = action()
    wall = time.monotonic() - started
    after = _counters(admin)
    return {"wall_s": round(wall, 3), "connections_opened": after["connections"] - before["connections"],
            "client_list_calls": after["client_list_calls"] - before["client_list_calls"],
            "client_list_redis_ms": round((after["client_list_usec"] - before["client_list_usec"]) / 1000.0, 2),
            "outcome": outcome}


def _summary(result: Dict[str, Any]) -> Dict[str, Any]:
    return {"reachable": result.get("reachable"), "connected": (result.get("clients") or {}).get("connected"),
            "top_sources": ["%s=%d" % (s["ip"], s["connections"]) for s in result.get("top_sources", [])],
            "severity": (result.get("verdict") or {}).get("severity")}


def _playbook_run(work: Path, args: Dict[str, Any], module: str = "fintech.redis_storm.redis_clients_info",
                  ) -> Dict[str, Any]:
    """One task, nothing else in the play; its result is read from the console (-v, JSON format)."""
    play = [{"name": "Bench redis_clients_info", "hosts": "localhost", "gather_facts": False,
             "vars": {"ansible_python_interpreter": "{{ ansible_playbook_python }}"},
             "tasks": [{"name": "Read Redis clients", module: args}]}]
    (work / "play.yml").write_text(json.dumps(play))
    (work / "hosts.yml").write_text(json.dumps({"all": {"hosts": {"localhost": {"ansible_connection": "local"}}}}))
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_CALLBACK_RESULT_FORMAT="json",
               ANSIBLE_NOCOLOR="1")
    done = subprocess.run([str(Path(sys.executable).parent / "ansible-playbook"), "-v", "-i", str(work / "hosts.yml"),
                           str(work / "play.yml")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    marker = done.stdout.find("ok: [localhost] => ")
    if done.returncode != 0 or marker < 0:
        raise RuntimeError("ansible-playbook failed:\n%s" % done.stdout[-3000:])
    result, _ = json.JSONDecoder().raw_decode(done.stdout[marker + len("ok: [localhost] => "):])
    return _summary(result) if module.endswith("redis_clients_info") else {}


def run() -> Dict[str, Any]:
    nofile = raise_nofile_limit()
    if nofile < MAXCLIENTS + 100:
        raise RuntimeError("open-file limit %d is below %d: raise `ulimit -Hn`" % (nofile, MAXCLIENTS + 100))
    password = secrets.token_hex(16)
    work = Path(tempfile.mkdtemp(prefix="bench-redis-clients-"))
    process, port = _start_redis(work, password)
    report: Dict[str, Any] = {"clients": sum(n for _, n in SOURCES), "sample_seconds": SAMPLE_SECONDS}
    try:
        options = {"host": "127.0.0.1", "port": port, "password": password, "socket_timeout": 5.0}
        started = time.monotonic()
        with StormGen(port, password=password, sources=SOURCES, name="bench-storm") as storm, \
                redis.Redis(port=port, password=password, single_connection_client=True) as admin:
            storm.wait_connected(timeout=120)
            report["storm_open_s"] = round(time.monotonic() - started, 2)
            report["connected_clients"] = int(admin.info("clients")["connected_clients"])
            report["in_process"] = _measure(admin, lambda: _summary(collect(options, SAMPLE_SECONDS)))
            report["in_process_no_window"] = _measure(admin, lambda: _summary(collect(options, 0.0)))
            args = dict(options, sample_seconds=SAMPLE_SECONDS)
            report["ansible_playbook"] = _measure(admin, lambda: _playbook_run(work, args))
            no_window = dict(options, sample_seconds=0.0)
            report["ansible_playbook_no_window"] = _measure(admin, lambda: _playbook_run(work, no_window))
            # ansible's own cost for one local task, to tell it apart from the module's
            report["ansible_playbook_ping_baseline"] = _measure(
                admin, lambda: _playbook_run(work, {}, "ansible.builtin.ping"))
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)
    for name in ("in_process", "in_process_no_window", "ansible_playbook", "ansible_playbook_no_window",
                 "ansible_playbook_ping_baseline"):
        entry = report[name]
        print("%-30s wall %.3f s, connections opened %d, CLIENT LIST calls %d, Redis time in CLIENT LIST %.2f ms"
              % (name, entry["wall_s"], entry["connections_opened"], entry["client_list_calls"],
                 entry["client_list_redis_ms"]), flush=True)
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
