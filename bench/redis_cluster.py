"""Budget: triage of a 6-node Redis Cluster holding 10,000 clients in all <= 1.5x triage of one standalone Redis
holding 10,000 clients, measured in the same run.

Starts a standalone redis-server and a Redis Cluster of 3 masters and 3 replicas, holds 10,000
connections on each (on the cluster, spread over the six nodes) from the same four 127.x addresses
with the storm generator, then times Redis' view of triage (redis_clients_info's logic, the read
triage.yml makes through storm_views_info) on each, alternately, ROUNDS times, and once each through
ansible-playbook. Prints the medians side by side and their ratio against the budget; asserts nothing.
"""

from __future__ import annotations

import json
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable, Dict, List

import redis

REPO = Path(__file__).resolve().parents[1]
if str(REPO / "collections") not in sys.path:
    sys.path.insert(0, str(REPO / "collections"))

from ansible_collections.fintech.redis_storm.plugins.module_utils import redis_clients, redis_cluster  # noqa: E402

from bench.redis_clients import SAMPLE_SECONDS, SOURCES, _playbook_run, _start_redis, _stop  # noqa: E402
from stormctl.sandbox.redis_cluster import start_cluster  # noqa: E402
from stormctl.sandbox.stormgen import StormGen, raise_nofile_limit  # noqa: E402

NODES = 6
CLIENTS = sum(count for _ip, count in SOURCES)
# each node holds its sixth of the clients with room to spare
NODE_MAXCLIENTS = CLIENTS // NODES + 1000
ROUNDS = 5
BUDGET_RATIO = 1.5


def _split(count: int, index: int) -> int:
    """Node ``index``'s share of ``count`` connections (the shares add up to ``count``)."""
    return count // NODES + (1 if index < count % NODES else 0)


def _hold_elsewhere(work: Path, port: int, password: str) -> subprocess.Popen[bytes]:
    """The standalone Redis' clients, held by a storm generator process of its own: one process cannot hold
    both storms' 20,000 sockets under a 20,000 open-files limit."""
    secret = work / "standalone.password"
    secret.write_text(password)
    secret.chmod(0o600)
    return subprocess.Popen(
        [sys.executable, "-m", "stormctl.sandbox.stormgen", "--port", str(port), "--password-file", str(secret),
         "--name", "bench-storm", "--interval", "60", *["--source=%s=%d" % source for source in SOURCES]],
        stdout=subprocess.DEVNULL, start_new_session=True)


def _wait_connected(port: int, password: str, clients: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    with redis.Redis(port=port, password=password, socket_timeout=5, single_connection_client=True) as admin:
        while int(admin.info("clients")["connected_clients"]) < clients:
            if time.monotonic() > deadline:
                raise RuntimeError("the standalone Redis did not reach %d clients within %d s" % (clients, timeout))
            time.sleep(0.2)


def _time(read: Callable[[], Dict[str, Any]]) -> tuple[float, Dict[str, Any]]:
    started = time.monotonic()
    result = read()
    return time.monotonic() - started, result


def _check(result: Dict[str, Any]) -> None:
    """A timed read that did not see every client measures nothing."""
    held = sum(source["connections"] for source in result["top_sources"])
    if held < CLIENTS or result.get("error"):
        raise RuntimeError("triage saw %d of %d clients: %s" % (held, CLIENTS, result.get("error")))


def run() -> Dict[str, Any]:
    nofile = raise_nofile_limit()
    if nofile < CLIENTS + 500:
        raise RuntimeError("open-file limit %d is below %d: raise `ulimit -Hn`" % (nofile, CLIENTS + 500))
    work = Path(tempfile.mkdtemp(prefix="bench-redis-cluster-"))
    password = secrets.token_hex(16)
    report: Dict[str, Any] = {"clients": CLIENTS, "nodes": NODES, "sample_seconds": SAMPLE_SECONDS,
                              "rounds": ROUNDS, "budget_ratio": BUDGET_RATIO}
    with ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        process, port = _start_redis(work, password)
        stack.callback(_stop, process)
        cluster = start_cluster(work / "cluster", masters=NODES // 2, replicas=1, maxclients=NODE_MAXCLIENTS)
        stack.callback(cluster.stop)
        standalone = {"host": "127.0.0.1", "port": port, "password": password, "socket_timeout": 5.0}
        startup = cluster.nodes[0]
        clustered = {"host": startup.host, "port": startup.port, "password": cluster.password,
                     "socket_timeout": 5.0, "cluster": True}
        holder = _hold_elsewhere(work, port, password)
        stack.callback(_stop, holder)
        storms: List[StormGen] = []
        for index, node in enumerate(cluster.nodes):
            storms.append(stack.enter_context(StormGen(
                node.port, password=cluster.password, name="bench-storm",
                sources=[(ip, _split(count, index)) for ip, count in SOURCES])))
        for storm in storms:
            storm.wait_connected(timeout=180)
        _wait_connected(port, password, CLIENTS)
        timings: Dict[str, List[float]] = {"standalone": [], "cluster": []}
        for _round in range(ROUNDS):  # alternately, so load on the shared machine hits both alike
            for name, read in (("standalone", lambda: redis_clients.collect(standalone, SAMPLE_SECONDS)),
                               ("cluster", lambda: redis_cluster.collect(clustered, SAMPLE_SECONDS))):
                seconds, result = _time(read)
                _check(result)
                timings[name].append(seconds)
        report["in_process_s"] = {name: round(statistics.median(values), 3) for name, values in timings.items()}
        report["in_process_rounds_s"] = {name: [round(v, 3) for v in values] for name, values in timings.items()}
        report["ansible_playbook_s"] = {
            name: round(_time(lambda args=args: _playbook_run(work, dict(args, sample_seconds=SAMPLE_SECONDS)))[0], 3)
            for name, args in (("standalone", standalone), ("cluster", clustered))}
    medians = report["in_process_s"]
    report["ratio"] = round(medians["cluster"] / medians["standalone"], 2)
    report["within_budget"] = report["ratio"] <= BUDGET_RATIO
    print("%-26s %12s %12s %8s" % ("triage of 10,000 clients", "standalone", "6-node", "ratio"), flush=True)
    print("%-26s %10.3f s %10.3f s %7.2fx (budget %.1fx: %s)" % (
        "in process (median)", medians["standalone"], medians["cluster"], report["ratio"], BUDGET_RATIO,
        "within" if report["within_budget"] else "OVER"), flush=True)
    playbook = report["ansible_playbook_s"]
    print("%-26s %10.3f s %10.3f s %7.2fx" % ("ansible-playbook (once)", playbook["standalone"], playbook["cluster"],
                                              playbook["cluster"] / playbook["standalone"]), flush=True)
    return report


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
