"""`stormctl sandbox up --kube control-plane`: the sandbox on the real Kubernetes control plane, with the
fleet as its node agent, checked as a user would with kubectl and Redis' CLIENT LIST."""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import urllib.request
from typing import Any, Iterator

import pytest

from stormctl.sandbox.kube import build
from stormctl.sandbox.state import CONTROL_PLANE
from tests.fixtures.sandbox import Sandbox, start_sandbox, stop_sandbox, wait_for

pytestmark = pytest.mark.integration

NODE = "sandbox-node-1"
LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


@pytest.fixture(scope="module")
def plane_sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    state_dir = tmp_path_factory.mktemp("plane-sandbox") / "run"
    previous = os.environ.get("STORM_SANDBOX_DIR")
    os.environ["STORM_SANDBOX_DIR"] = str(state_dir)
    box = start_sandbox(state_dir, maxclients=1000, owner_pid=os.getpid(), kube=CONTROL_PLANE)
    try:
        yield box
    finally:
        try:
            stop_sandbox(box)
        finally:
            if previous is None:
                os.environ.pop("STORM_SANDBOX_DIR", None)
            else:
                os.environ["STORM_SANDBOX_DIR"] = previous


def kubectl(box: Sandbox, *args: str, admin: bool = True, check: bool = True) -> subprocess.CompletedProcess[str]:
    config = box["kube"]["admin_kubeconfig"] if admin else box.kubeconfig
    result = subprocess.run([str(build.installed()["kubectl"]), "--kubeconfig", config, *args],
                            capture_output=True, text=True, timeout=60)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def get(box: Sandbox, *args: str) -> Any:
    return json.loads(kubectl(box, "get", *args, "-o", "json").stdout)


def client_addresses(box: Sandbox) -> set[str]:
    client = box.redis()
    try:
        return {str(c["addr"]).rsplit(":", 1)[0] for c in client.client_list()}
    finally:
        client.close()


def running_pods(box: Sandbox, namespace: str, prefix: str) -> list[dict[str, Any]]:
    return [p for p in get(box, "pods", "-n", namespace)["items"]
            if p["metadata"]["name"].startswith(prefix + "-") and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")]


def test_the_real_controllers_pods_run_on_the_node_agent_with_pod_ips_that_redis_sees(plane_sandbox: Sandbox) -> None:
    box = plane_sandbox
    assert box["kube"]["backend"] == CONTROL_PLANE
    node = get(box, "node", NODE)
    assert {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"] == "True"
    assert node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"] > 0

    assert len(get(box, "deployments", "-A")["items"]) == 4

    def all_running() -> list[dict[str, Any]]:
        pods = []
        for deploy in get(box, "deployments", "-A")["items"]:  # the HPA may have scaled one meanwhile
            meta = deploy["metadata"]
            running = [p for p in running_pods(box, meta["namespace"], meta["name"])
                       if all(c["ready"] for c in p["status"]["containerStatuses"])]
            if len(running) != deploy["spec"]["replicas"]:
                return []
            pods += running
        return pods

    pods = wait_for(all_running, 60, "every Deployment's pods Running and ready on the node agent")
    ips = [p["status"]["podIP"] for p in pods]
    assert len(set(ips)) == len(ips)
    assert all(ipaddress.ip_address(ip) in LOOPBACK for ip in ips)
    for pod in pods:
        assert pod["spec"]["nodeName"] == NODE
        # the real ReplicaSet controller made it; the agent only bound it
        assert [o["kind"] for o in pod["metadata"]["ownerReferences"]] == ["ReplicaSet"]
    # each pod's client connects from its own pod IP
    wait_for(lambda: set(ips) <= client_addresses(box), 30, "Redis to see a client from every pod IP")
    reasons = {e["reason"] for e in get(box, "events", "-n", "payments")["items"]
               if e["involvedObject"]["kind"] == "Pod"}
    assert {"Scheduled", "Started"} <= reasons


def test_kubectl_logs_reads_a_pod_log_from_the_node_agent_through_the_apiserver(plane_sandbox: Sandbox) -> None:
    box = plane_sandbox
    pod = wait_for(lambda: running_pods(box, "payments", "payments-api"), 60, "a running payments-api pod")[0]
    name = pod["metadata"]["name"]
    logs = wait_for(lambda: kubectl(box, "-n", "payments", "logs", name, "--tail", "50").stdout, 30,
                    "kubectl logs of %s to show lines" % name)
    assert "Redis pool ready: %s:%d" % (box.redis_host, box.redis_port) in logs
    assert "[payments-api]" in logs
    missing = kubectl(box, "-n", "payments", "logs", "payments-api-none", check=False)
    assert missing.returncode != 0 and 'pods "payments-api-none" not found' in missing.stderr


def test_a_pod_the_controllers_delete_stops_its_client_and_is_gone(plane_sandbox: Sandbox) -> None:
    """Graceful deletion: with no kubelet to confirm it, a deleted pod would stay Terminating for good.
    wallet-service has no autoscaler that would scale it straight back."""
    box = plane_sandbox
    before = wait_for(lambda: len(running_pods(box, "wallet", "wallet-service")) == 2
                      and running_pods(box, "wallet", "wallet-service"), 60, "two running wallet-service pods")
    kubectl(box, "-n", "wallet", "scale", "deployment/wallet-service", "--replicas=1")
    try:
        def one_left() -> list[dict[str, Any]]:
            pods = [p for p in get(box, "pods", "-n", "wallet")["items"]
                    if p["metadata"]["name"].startswith("wallet-service-")]
            return pods if len(pods) == 1 else []

        left = wait_for(one_left, 20, "the scaled-down wallet-service pod to be gone, not Terminating")
        gone = {p["status"]["podIP"] for p in before} - {left[0]["status"]["podIP"]}
        assert len(gone) == 1
        wait_for(lambda: not gone & client_addresses(box), 15, "the deleted pod's clients to leave Redis")
        killing = [e for e in get(box, "events", "-n", "wallet")["items"] if e["reason"] == "Killing"]
        assert {e["involvedObject"]["name"] for e in killing} - {left[0]["metadata"]["name"]}
    finally:
        kubectl(box, "-n", "wallet", "scale", "deployment/wallet-service", "--replicas=2")
    wait_for(lambda: len(running_pods(box, "wallet", "wallet-service")) == 2, 60,
             "wallet-service back at two running pods")


def test_metrics_server_and_the_hpa_read_each_pods_cpu_from_the_node_agent(plane_sandbox: Sandbox) -> None:
    box = plane_sandbox

    def measured() -> Any:
        hpa = get(box, "hpa", "trading-api", "-n", "trading")
        current = [m["resource"]["current"] for m in (hpa.get("status") or {}).get("currentMetrics") or []
                   if m.get("type") == "Resource"]
        return current[0] if current else None

    current = wait_for(measured, 120, "the HPA controller to read trading-api's CPU from metrics.k8s.io")
    assert current["averageUtilization"] > 0
    top = kubectl(box, "top", "pods", "-n", "trading", "--no-headers").stdout.split("\n")
    assert any(line.startswith("trading-api-") and line.split()[1].endswith("m") for line in top), top


def test_reset_puts_the_baseline_back_beside_what_the_real_controllers_keep(plane_sandbox: Sandbox) -> None:
    """The Deployment controller's revision annotation is the cluster's, not drift: reset leaves it and settles."""
    box = plane_sandbox
    kubectl(box, "-n", "wallet", "annotate", "ingress", "wallet-service", "nginx.ingress.kubernetes.io/limit-rps=5")
    kubectl(box, "-n", "wallet", "scale", "deployment/wallet-service", "--replicas=1")
    changes = box.reset()
    assert sorted(changes["restored"]) == ["/apis/apps/v1/namespaces/wallet/deployments/wallet-service",
                                           "/apis/networking.k8s.io/v1/namespaces/wallet/ingresses/wallet-service"]
    ingress = get(box, "ingress", "wallet-service", "-n", "wallet")
    assert "nginx.ingress.kubernetes.io/limit-rps" not in ingress["metadata"]["annotations"]
    deployment = get(box, "deployment", "wallet-service", "-n", "wallet")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["metadata"]["annotations"]["deployment.kubernetes.io/revision"]
    assert box.reset() == {"restored": [], "deleted": []}


def test_status_shows_each_components_version_as_the_running_server_reports_it(plane_sandbox: Sandbox) -> None:
    def status(*args: str) -> str:
        return subprocess.run([sys.executable, "-m", "stormctl", "sandbox", "status", *args], capture_output=True,
                              text=True, timeout=60, env=plane_sandbox.env(), check=True).stdout

    report = json.loads(status("--json"))
    versions = {name: service.get("version") for name, service in report["services"].items()}
    client = plane_sandbox.redis()
    try:
        assert versions["redis"] == client.info("server")["redis_version"]
    finally:
        client.close()
    kube_version = json.loads(kubectl(plane_sandbox, "version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    assert versions["kube-apiserver"] == versions["kube-controller-manager"] == kube_version
    assert versions["etcd"].startswith("v3.") and versions["metrics-server"].startswith("v0.")
    with urllib.request.urlopen(plane_sandbox.prometheus_url + "/api/v1/status/buildinfo", timeout=10) as answer:
        build_info = json.load(answer)["data"]["version"]
    assert versions["prometheus"] == build_info
    assert versions["exporter"] != "unknown" and versions["fleet"].startswith("stormctl ")

    text = status()
    assert "kube-apiserver %s ok" % kube_version in text and "redis %s ok" % versions["redis"] in text
