"""redis_clients_info at 10,000 connected clients, and its logic at 10k, 50k and 100k beside Redis' own floor.

Starts a real redis-server (maxclients 11000), holds 10,000 connections from four 127.x
addresses with the storm generator, then runs the module's logic in-process and the module
through ansible-playbook, measuring each run with Redis' own counters (read over a connection
opened before the run, so it is not counted). Then, for each of SCALES, a fresh Redis holds that
many connections and the module's logic (no sampling window) is timed against the floor: one raw
CLIENT LIST fetched unparsed; its peak Python memory is read with tracemalloc in a separate run.
Targets: module time <= 3x the floor, peak memory <= 100 MB. A scale the open-file hard limit cannot hold
is reported as such, and the most it can hold is measured instead. Prints numbers; asserts nothing.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any, Callable, Dict

import redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.fintech.redis_storm.plugins.module_utils.redis_clients import collect  # noqa: E402

from stormctl.sandbox.procs import free_port  # noqa: E402
from stormctl.sandbox.stormgen import StormGen, raise_nofile_limit  # noqa: E402

SOURCES = [("127.0.10.1", 4000), ("127.0.10.2", 3000), ("127.0.10.3", 2000), ("127.0.10.4", 1000)]
MAXCLIENTS = 11000
SAMPLE_SECONDS = 0.5
SCALES = (10_000, 50_000, 100_000)
# one source address holds about 28k ephemeral ports: spread each scale over this many
SCALE_SOURCES = 8
TARGET_FLOOR_FACTOR = 3.0
TARGET_PEAK_MB = 100.0


def _start_redis(directory: Path, password: str, maxclients: int = MAXCLIENTS) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    conf = directory / "redis.conf"
    conf.write_text("bind 127.0.0.1\nport %d\nrequirepass %s\nmaxclients %d\ndir %s\nsave \"\"\nappendonly no\n"
                    "logfile %s\n" % (port, password, maxclients, directory, directory / "redis.log"))
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


def _fits(clients: int) -> str | None:
    """None when this process and redis-server (our child, it inherits the limit) can each hold `clients`
    sockets; else why not. Raising the hard limit needs CAP_SYS_RESOURCE."""
    want = clients + 1000
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return None
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        return ("not measurable here: each process needs %d open files, the hard limit is %d "
                "(raise it with `ulimit -Hn %d` as root)" % (want, hard, want))
    return None


def _raw_client_list(admin: redis.Redis) -> int:
    """The floor: one CLIENT LIST fetched as Redis sends it, unparsed; its size in bytes."""
    connection = admin.connection_pool.get_connection("CLIENT")
    try:
        connection.send_command("CLIENT", "LIST")
        return len(connection.read_response())
    finally:
        admin.connection_pool.release(connection)


def _best_of(rounds: int, action: Callable[[], Any]) -> float:
    best = float("inf")
    for _ in range(rounds):
        started = time.monotonic()
        action()
        best = min(best, time.monotonic() - started)
    return best


def _scale(clients: int, password: str) -> Dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench-redis-clients-%d-" % clients))
    process, port = _start_redis(work, password, maxclients=clients + 1000)
    per_source = clients // SCALE_SOURCES
    sources = [("127.0.11.%d" % (i + 1), per_source) for i in range(SCALE_SOURCES)]
    options = {"host": "127.0.0.1", "port": port, "password": password, "socket_timeout": 30.0}
    try:
        with StormGen(port, password=password, sources=sources, name="bench-scale", concurrency=1024) as storm, \
                redis.Redis(port=port, password=password, single_connection_client=True) as admin:
            storm.wait_connected(timeout=600)
            before = _counters(admin)
            floor_bytes = _raw_client_list(admin)
            floor = _best_of(3, lambda: _raw_client_list(admin))
            module = _best_of(3, lambda: collect(options, 0.0, latency_samples=1))
            tracemalloc.start()
            collect(options, 0.0, latency_samples=1)
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            after = _counters(admin)
            calls = after["client_list_calls"] - before["client_list_calls"]
            redis_ms = (after["client_list_usec"] - before["client_list_usec"]) / 1000.0 / max(calls, 1)
            return {"clients": int(admin.info("clients")["connected_clients"]) - 1,
                    "client_list_bytes": floor_bytes, "redis_client_list_ms": round(redis_ms, 1),
                    "floor_raw_fetch_s": round(floor, 3), "module_s": round(module, 3),
                    "module_over_floor": round(module / floor, 2), "module_peak_mb": round(peak / 1e6, 1)}
    finally:
        _stop(process)
        shutil.rmtree(work, ignore_errors=True)


def scales(password: str) -> Dict[str, Any]:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    blocked = {clients: _fits(clients) for clients in SCALES}
    if any(blocked.values()):
        blocked[hard - 1000] = None  # the most this machine can hold, so the trend is still measured
    report: Dict[str, Any] = {}
    for clients, why_not in blocked.items():
        if why_not:
            report[str(clients)] = {"skipped": why_not}
            print("%6d clients: %s" % (clients, why_not), flush=True)
            continue
        entry = _scale(clients, password)
        report[str(clients)] = entry
        print("%6d clients: Redis CLIENT LIST %.1f ms (%d kB), raw fetch %.3f s, module %.3f s = %.2fx floor "
              "(target <= %.0fx), peak %.1f MB (target <= %.0f MB)"
              % (entry["clients"], entry["redis_client_list_ms"], entry["client_list_bytes"] // 1000,
                 entry["floor_raw_fetch_s"], entry["module_s"], entry["module_over_floor"], TARGET_FLOOR_FACTOR,
                 entry["module_peak_mb"], TARGET_PEAK_MB), flush=True)
    measured = [e for e in report.values() if "module_s" in e]
    report["within_target"] = bool(measured) and all(
        e["module_over_floor"] <= TARGET_FLOOR_FACTOR and e["module_peak_mb"] <= TARGET_PEAK_MB for e in measured)
    return report


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
    report["scales"] = scales(password)
    for name in ("in_process", "in_process_no_window", "ansible_playbook", "ansible_playbook_no_window",
                 "ansible_playbook_ping_baseline"):
        entry = report[name]
        print("%-30s wall %.3f s, connections opened %d, CLIENT LIST calls %d, Redis time in CLIENT LIST %.2f ms"
              % (name, entry["wall_s"], entry["connections_opened"], entry["client_list_calls"],
                 entry["client_list_redis_ms"]), flush=True)
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
