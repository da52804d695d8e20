"""A real Redis Cluster on loopback: redis-server nodes on free ports joined by `redis-cli --cluster create`.

``start_cluster(directory, masters=3, replicas=1)`` starts ``masters * (1 + replicas)`` nodes that
share one password, creates the cluster and waits (bounded) until every node reports
``cluster_state:ok`` and names every node in CLUSTER SLOTS. A long ``cluster-node-timeout`` keeps a
stopped master from being failed over while a drill or a test looks at it. ``stop()`` stops them all.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from stormctl.sandbox import procs

NODE_TIMEOUT_MS = 60000
START_SECONDS = 10.0
CONVERGE_SECONDS = 30.0


class ClusterStartError(RuntimeError):
    """A node did not start or the cluster did not form; the message carries the node's log or redis-cli's."""


@dataclass
class ClusterNode:
    host: str
    port: int
    directory: Path
    process: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> str:
        return "%s:%d" % (self.host, self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            procs.signal_group(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                procs.signal_group(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


@dataclass
class RedisClusterProcs:
    password: str
    maxclients: int
    nodes: list[ClusterNode] = field(default_factory=list)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ClusterStartError("%s is not installed: run `make setup` or `sudo apt-get install -y redis-server`"
                                % name)
    return path


def _start_node(directory: Path, password: str, maxclients: int, extra: dict[str, str]) -> ClusterNode:
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "redis.log"
    for _attempt in range(3):  # a free port can be taken between probing and binding
        port = procs.free_port()
        lines = {
            "bind": "127.0.0.1", "port": str(port), "requirepass": password, "masterauth": password,
            "maxclients": str(maxclients), "dir": str(directory), "logfile": str(log), "save": '""',
            "appendonly": "no", "daemonize": "no", "protected-mode": "yes", "timeout": "0",
            "cluster-enabled": "yes", "cluster-config-file": str(directory / "nodes.conf"),
            "cluster-node-timeout": str(NODE_TIMEOUT_MS),
            # the bus port defaults to port + 10000, past 65535 for a high free port
            "cluster-port": str(procs.free_port()),
        }
        lines.update(extra)
        conf = directory / "redis.conf"
        conf.write_text("".join("%s %s\n" % item for item in lines.items()))
        conf.chmod(0o600)
        process = subprocess.Popen([_binary("redis-server"), str(conf)], cwd=directory, start_new_session=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        node = ClusterNode("127.0.0.1", port, directory, process)
        deadline = time.monotonic() + START_SECONDS
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with redis.Redis(host=node.host, port=port, password=password, socket_timeout=1) as probe:
                    probe.ping()
                return node
            except redis.ConnectionError:
                time.sleep(0.02)
        node.stop()
        if "Address already in use" not in (log.read_text() if log.exists() else ""):
            break
    raise ClusterStartError("redis-server did not start:\n%s" % (log.read_text()[-2000:] if log.exists() else ""))


def _listed(node: ClusterNode, password: str) -> int:
    """How many distinct nodes the node's CLUSTER SLOTS names once it reports cluster_state:ok."""
    with redis.Redis(host=node.host, port=node.port, password=password, socket_timeout=5,
                     single_connection_client=True) as conn:
        if b"cluster_state:ok" not in conn.execute_command("CLUSTER", "INFO"):
            return 0
        return len({(m[0], m[1]) for entry in conn.execute_command("CLUSTER", "SLOTS") for m in entry[2:]})


def start_cluster(directory: Path, masters: int = 3, replicas: int = 1, maxclients: int = 200,
                  extra: dict[str, str] | None = None) -> RedisClusterProcs:
    """Start the nodes and create the cluster; on any failure every node started is stopped again."""
    cluster = RedisClusterProcs(secrets.token_hex(16), maxclients)
    try:
        for index in range(masters * (1 + replicas)):
            cluster.nodes.append(_start_node(directory / ("node-%d" % index), cluster.password, maxclients,
                                             dict(extra or {})))
        # REDISCLI_AUTH keeps the password off redis-cli's command line
        done = subprocess.run(
            [_binary("redis-cli"), "--cluster", "create", *[n.endpoint for n in cluster.nodes],
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            env=dict(os.environ, REDISCLI_AUTH=cluster.password), capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise ClusterStartError("redis-cli --cluster create failed:\n%s%s" % (done.stdout[-2000:],
                                                                                 done.stderr[-2000:]))
        deadline = time.monotonic() + CONVERGE_SECONDS
        while not all(_listed(node, cluster.password) == len(cluster.nodes) for node in cluster.nodes):
            if time.monotonic() > deadline:
                raise ClusterStartError("the Redis Cluster did not converge within %d s" % CONVERGE_SECONDS)
            time.sleep(0.05)
    except BaseException:
        cluster.stop()
        raise
    return cluster
