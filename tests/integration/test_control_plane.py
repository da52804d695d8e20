"""The sandbox's real control plane: its controllers, RBAC as deploy/rbac.yml ships it, the audit log,
the CRDs and the aggregation layer, checked as a user would."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterator

import kubernetes
import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError

from stormctl.sandbox import procs
from stormctl.sandbox.kube.controlplane import ControlPlane, ControlPlaneError
from stormctl.sandbox.state import REPO
from tests.fixtures.sandbox import wait_for

pytestmark = pytest.mark.integration

PRODUCT_USER = "system:serviceaccount:redis-storm:redis-storm"
WRITE_VERBS = {"create", "update", "patch", "delete", "deletecollection"}


@pytest.fixture(scope="module")
def admin(control_plane: ControlPlane) -> kubernetes.client.ApiClient:
    return kubernetes.config.new_client_from_config(config_file=str(control_plane.admin_kubeconfig))


def _namespace(admin: kubernetes.client.ApiClient, name: str) -> None:
    core = kubernetes.client.CoreV1Api(admin)
    try:
        core.create_namespace({"metadata": {"name": name}})
    except kubernetes.client.ApiException as exc:
        if exc.status != 409:
            raise


def _deployment(name: str, replicas: int) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name},
        "spec": {"replicas": replicas, "selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "app", "image": "payments-api:1"}]}}},
    }


@pytest.fixture(scope="module")
def product(control_plane: ControlPlane, admin: kubernetes.client.ApiClient) -> Kube:
    """The collection's own client with the product's ServiceAccount token, bound by deploy/rbac.yml as shipped."""
    for namespace in ("payments", "trading", "wallet", "redis"):
        _namespace(admin, namespace)
    control_plane.kubectl("apply", "-f", str(REPO / "deploy" / "rbac.yml"))
    token = control_plane.token("redis-storm", "redis-storm")
    return Kube({"host": control_plane.url, "api_key": token, "ca_cert": str(control_plane.ca.cert)})


def test_a_deployment_gets_its_replicaset_from_the_controller_and_loses_it_to_garbage_collection(
    admin: kubernetes.client.ApiClient,
) -> None:
    _namespace(admin, "checkout")
    apps = kubernetes.client.AppsV1Api(admin)
    apps.create_namespaced_deployment("checkout", _deployment("checkout-api", 2))

    def owned_replicasets() -> list[Any]:
        return [rs for rs in apps.list_namespaced_replica_set("checkout").items
                if any(o.kind == "Deployment" and o.name == "checkout-api" and o.controller
                       for o in rs.metadata.owner_references or [])]

    replicasets = wait_for(owned_replicasets, 30, "a ReplicaSet owned by Deployment checkout-api")
    assert replicasets[0].spec.replicas == 2

    apps.delete_namespaced_deployment("checkout-api", "checkout", propagation_policy="Background")
    wait_for(lambda: not owned_replicasets(), 30, "the garbage collector deleting the ReplicaSet")


def test_the_product_account_writes_what_rbac_grants_and_is_refused_what_it_does_not(
    admin: kubernetes.client.ApiClient, product: Kube
) -> None:
    apps = kubernetes.client.AppsV1Api(admin)
    apps.create_namespaced_deployment("payments", _deployment("payments-api", 3))

    product.request("PATCH", "/apis/apps/v1/namespaces/payments/deployments/payments-api/scale",
                    body={"spec": {"replicas": 2}}, content_type="application/merge-patch+json")
    assert apps.read_namespaced_deployment("payments-api", "payments").spec.replicas == 2

    with pytest.raises(KubeApiError) as refused:
        product.request("DELETE", "/apis/apps/v1/namespaces/payments/deployments/payments-api")
    assert refused.value.status == 403
    assert 'cannot delete resource "deployments" in API group "apps"' in str(refused.value)
    assert apps.read_namespaced_deployment("payments-api", "payments").spec.replicas == 2

    # mitigations are granted only in the namespaces rbac.yml binds: not in default
    apps.create_namespaced_deployment("default", _deployment("batch", 1))
    with pytest.raises(KubeApiError) as elsewhere:
        product.request("PATCH", "/apis/apps/v1/namespaces/default/deployments/batch/scale",
                        body={"spec": {"replicas": 0}}, content_type="application/merge-patch+json")
    assert elsewhere.value.status == 403
    assert 'cannot patch resource "deployments/scale"' in str(elsewhere.value)


def test_the_audit_log_records_each_write_with_its_user_and_no_write_for_a_read(
    control_plane: ControlPlane, product: Kube
) -> None:
    product.request("POST", "/api/v1/namespaces/redis-storm/configmaps",
                    body={"metadata": {"name": "redis-storm-ledger-audit-check"}, "data": {"k": "v"}})

    def by_product(since: int) -> list[dict[str, Any]]:
        return [e for e in control_plane.audit_events()[since:] if e["user"]["username"] == PRODUCT_USER]

    created = wait_for(lambda: [e for e in by_product(0) if e["verb"] == "create"
                                and e["objectRef"].get("name") == "redis-storm-ledger-audit-check"], 10,
                       "the audit event of the ConfigMap create")
    assert created[0]["objectRef"]["resource"] == "configmaps"
    assert created[0]["responseStatus"]["code"] == 201

    mark = len(control_plane.audit_events())
    product.get("/api/v1/namespaces/wallet/pods")
    listed = wait_for(lambda: [e for e in by_product(mark) if e["verb"] == "list"], 10,
                      "the audit event of the pod list")
    assert listed[0]["objectRef"]["resource"] == "pods"
    assert not [e for e in by_product(mark) if e["verb"] in WRITE_VERBS]


CUSTOM_RESOURCES = [
    ("traefik.io/v1alpha1", "middlewares", {
        "kind": "Middleware", "spec": {"rateLimit": {"average": 50, "burst": 100, "period": "1s"}}}),
    ("networking.istio.io/v1beta1", "destinationrules", {
        "kind": "DestinationRule",
        "spec": {"host": "redis.redis.svc.cluster.local",
                 "trafficPolicy": {"connectionPool": {"tcp": {"maxConnections": 200}},
                                   "outlierDetection": {"consecutive5xxErrors": 5, "interval": "10s"}}}}),
    ("keda.sh/v1alpha1", "scaledobjects", {
        "kind": "ScaledObject",
        "spec": {"scaleTargetRef": {"name": "payments-api"}, "maxReplicaCount": 20,
                 "triggers": [{"type": "cpu", "metricType": "Utilization", "metadata": {"value": "70"}}]}}),
]


@pytest.mark.parametrize("api_version, plural, body", CUSTOM_RESOURCES, ids=[c[1] for c in CUSTOM_RESOURCES])
def test_the_sandbox_crds_serve_their_kinds_with_their_schemas(
    admin: kubernetes.client.ApiClient, api_version: str, plural: str, body: dict[str, Any]
) -> None:
    group, version = api_version.split("/")
    custom = kubernetes.client.CustomObjectsApi(admin)
    _namespace(admin, "payments")
    created = custom.create_namespaced_custom_object(
        group, version, "payments", plural,
        {"apiVersion": api_version, "metadata": {"name": "crd-check"}, **body})
    assert created["spec"] == body["spec"]

    invalid = {"apiVersion": api_version, "metadata": {"name": "crd-invalid"}, "kind": body["kind"],
               "spec": {"host": 7} if plural == "destinationrules" else {"rateLimit": {"average": "lots"}}
               if plural == "middlewares" else {"scaleTargetRef": {}}}
    with pytest.raises(kubernetes.client.ApiException) as rejected:
        custom.create_namespaced_custom_object(group, version, "payments", plural, invalid)
    assert rejected.value.status == 422


def test_kubectl_explains_a_custom_resource_from_its_schema(control_plane: ControlPlane) -> None:
    explained = control_plane.kubectl("explain", "middlewares.spec.rateLimit.average", "--api-version",
                                      "traefik.io/v1alpha1")
    assert "FIELD: average <integer>" in explained.stdout
    assert "Average is the maximum rate" in explained.stdout


def test_kubectl_applies_server_side_and_answers_can_i_for_the_product_account(
    control_plane: ControlPlane, product: Kube, tmp_path: Path
) -> None:
    manifest = tmp_path / "wallet-api.json"
    manifest.write_text(json.dumps({**_deployment("wallet-api", 1), "metadata": {"name": "wallet-api",
                                                                                  "namespace": "wallet"}}))
    applied = control_plane.kubectl("apply", "--server-side", "--field-manager", "platform-team", "-f", str(manifest))
    assert applied.stdout.strip() == "deployment.apps/wallet-api serverside-applied"
    managers = control_plane.kubectl("-n", "wallet", "get", "deploy", "wallet-api", "--show-managed-fields",
                                     "-o", "jsonpath={.metadata.managedFields[*].manager}")
    assert "platform-team" in managers.stdout.split()

    kubeconfig = control_plane.write_token_kubeconfig(
        tmp_path / "redis-storm.kubeconfig", PRODUCT_USER, control_plane.token("redis-storm", "redis-storm"))

    def can_i(*args: str) -> str:
        return control_plane.kubectl("auth", "can-i", *args, kubeconfig=kubeconfig, check=False).stdout.strip()

    assert can_i("patch", "deployments.apps", "--subresource=scale", "-n", "wallet") == "yes"
    assert can_i("delete", "deployments.apps", "-n", "wallet") == "no"
    assert can_i("list", "pods", "-n", "wallet") == "yes"
    assert can_i("list", "pods", "--all-namespaces") == "no" and can_i("list", "pods", "-n", "kube-system") == "no"
    assert can_i("get", "secrets", "-n", "redis-storm") == "no"


def test_metrics_server_serves_metrics_k8s_io_through_the_aggregation_layer(control_plane: ControlPlane) -> None:
    api_service = control_plane.kubectl("get", "apiservice", "v1beta1.metrics.k8s.io", "-o",
                                        "jsonpath={.spec.service.name}/{.spec.group}")
    assert api_service.stdout == "metrics-server/metrics.k8s.io"
    resources = control_plane.kubectl("api-resources", "--api-group", "metrics.k8s.io", "-o", "name")
    assert sorted(resources.stdout.split()) == ["nodes.metrics.k8s.io", "pods.metrics.k8s.io"]


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


@pytest.mark.parametrize("component", ["etcd", "kube-apiserver"])
def test_a_component_that_cannot_start_fails_the_start_naming_it_and_leaves_nothing_running(
    tmp_path: Path, taken_port: int, component: str
) -> None:
    plane = ControlPlane(tmp_path)
    if component == "etcd":
        plane.ports.etcd = taken_port
    else:
        plane.ports.apiserver = taken_port
    with pytest.raises(ControlPlaneError) as failed:
        plane.start()
    log = tmp_path / "logs" / ("%s.log" % component)
    assert str(failed.value).startswith("%s exited" % component)
    assert str(log) in str(failed.value)
    assert "address already in use" in log.read_text()
    assert procs.marked_processes(plane.sandbox_id) == []


def test_components_die_with_a_killed_launcher(tmp_path: Path) -> None:
    launcher = subprocess.Popen(
        [sys.executable, "-c", "import sys; from pathlib import Path; "
         "from stormctl.sandbox.kube.controlplane import ControlPlane; ControlPlane(Path(sys.argv[1])).start()",
         str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        pidfiles = [tmp_path / "pids" / "etcd.pid", tmp_path / "pids" / "kube-apiserver.pid"]
        wait_for(lambda: all(p.exists() and p.read_text() for p in pidfiles), 30, "etcd and kube-apiserver started")
    finally:
        launcher.kill()
        launcher.wait()
    started = [int(p.read_text().split()[0]) for p in pidfiles]
    assert procs.wait_gone(started, 15) == []
