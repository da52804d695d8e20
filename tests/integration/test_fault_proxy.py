"""The fault proxy in front of the real apiserver answers chosen requests with a fault and passes the rest."""

from __future__ import annotations

from typing import Iterator

import kubernetes
import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube, KubeApiError

from stormctl.sandbox.kube.controlplane import ControlPlane
from stormctl.sandbox.kube.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.integration

CONFIGMAPS = "/api/v1/namespaces/fault-check/configmaps"


@pytest.fixture(scope="module")
def proxy(control_plane: ControlPlane) -> Iterator[FaultProxy]:
    with FaultProxy(control_plane.url, ca=control_plane.ca, serving=control_plane.apiserver_cert) as proxy:
        yield proxy


@pytest.fixture
def client(control_plane: ControlPlane, proxy: FaultProxy) -> Iterator[Kube]:
    """The collection's client through the proxy, as a ServiceAccount with rights on ConfigMaps in fault-check."""
    control_plane.kubectl("create", "namespace", "fault-check", check=False)
    control_plane.kubectl("-n", "fault-check", "create", "serviceaccount", "operator", check=False)
    control_plane.kubectl("-n", "fault-check", "create", "rolebinding", "operator-edit", "--clusterrole=edit",
                          "--serviceaccount=fault-check:operator", check=False)
    token = control_plane.token("fault-check", "operator")
    yield Kube({"host": proxy.url, "api_key": token, "ca_cert": str(control_plane.ca.cert), "request_timeout": 2.0})
    proxy.clear()


def test_requests_without_a_matching_fault_reach_the_apiserver_with_their_identity(client: Kube) -> None:
    client.request("POST", CONFIGMAPS, body={"metadata": {"name": "passes"}, "data": {"k": "v"}})
    assert client.get(CONFIGMAPS + "/passes")["data"] == {"k": "v"}
    with pytest.raises(KubeApiError) as refused:
        client.get("/api/v1/namespaces/kube-system/secrets")
    assert 'User "system:serviceaccount:fault-check:operator" cannot list' in str(refused.value)


@pytest.mark.parametrize("status, words", [(409, "conflict (409)"), (429, "failed (429)"), (500, "failed (500)")])
def test_a_status_fault_answers_that_many_requests_then_lets_them_through(
    client: Kube, proxy: FaultProxy, status: int, words: str
) -> None:
    if client.find(CONFIGMAPS + "/flags") is None:
        client.request("POST", CONFIGMAPS, body={"metadata": {"name": "flags"}})
    fault = proxy.add(Fault("PATCH", r"/configmaps/flags$", status=status, count=1))
    patch = {"data": {"retries": "off"}}
    with pytest.raises(KubeApiError) as failed:
        client.request("PATCH", CONFIGMAPS + "/flags", body=patch, content_type="application/merge-patch+json")
    assert failed.value.status == status
    assert words in str(failed.value)
    client.request("PATCH", CONFIGMAPS + "/flags", body=patch, content_type="application/merge-patch+json")
    assert client.get(CONFIGMAPS + "/flags")["data"] == {"retries": "off"}
    assert (fault.seen, fault.fired) == (2, 1)


def test_a_dropped_connection_and_a_stall_reach_the_client_as_errors(client: Kube, proxy: FaultProxy) -> None:
    proxy.add(Fault("POST", r"/configmaps$", drop=True))
    with pytest.raises(KubeApiError) as dropped:
        client.request("POST", CONFIGMAPS, body={"metadata": {"name": "dropped"}})
    assert "cannot reach the Kubernetes API" in str(dropped.value)
    proxy.clear()

    proxy.add(Fault("GET", r"/configmaps/stalled$", stall=True, seconds=1.0))
    client.timeout = 0.5
    with pytest.raises(KubeApiError) as stalled:
        client.get(CONFIGMAPS + "/stalled")
    assert "timed out after 0.5s" in str(stalled.value)


def test_a_fault_with_a_probability_hits_some_of_the_requests(client: Kube, proxy: FaultProxy) -> None:
    fault = proxy.add(Fault("GET", r"/configmaps$", status=500, probability=0.5))
    outcomes = []
    for _ in range(20):
        try:
            client.get(CONFIGMAPS)
            outcomes.append("ok")
        except KubeApiError as exc:
            outcomes.append(str(exc.status))
    assert 0 < outcomes.count("500") < 20
    assert outcomes.count("500") == fault.fired and fault.seen == 20


def test_watches_stream_through_the_proxy(control_plane: ControlPlane, proxy: FaultProxy) -> None:
    config = kubernetes.client.Configuration()
    config.host = proxy.url
    config.ssl_ca_cert = str(control_plane.ca.cert)
    config.api_key = {"authorization": "Bearer " + control_plane.token("fault-check", "operator")}
    core = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    listed = core.list_namespaced_config_map("fault-check")
    watch = kubernetes.watch.Watch()
    # the server would hold the watch open 60 s: a proxy that buffered it would hit the 10 s read timeout
    events = watch.stream(core.list_namespaced_config_map, "fault-check", timeout_seconds=60,
                          resource_version=listed.metadata.resource_version, _request_timeout=10)
    control_plane.kubectl("-n", "fault-check", "create", "configmap", "streamed")
    first = next(events)
    watch.stop()
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "streamed")
