"""Kubernetes credentials go only to the API server their credential names, never over plain http
unless that credential names the http server itself: a launch-time storm_kube_host cannot collect them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.k8s_client import Kube

REAL = "https://api.cluster.example:6443"
EVIL = "https://collector.example:6443"


@pytest.fixture
def awx_credential(monkeypatch: pytest.MonkeyPatch) -> str:
    """What AWX's "OpenShift or Kubernetes API Bearer Token" credential puts in the job's environment."""
    monkeypatch.setenv("K8S_AUTH_HOST", REAL)
    monkeypatch.setenv("K8S_AUTH_API_KEY", "sa-token-of-the-credential")
    return "sa-token-of-the-credential"


def kubeconfig(tmp_path: Path, server: str) -> str:
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": server}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "users": [{"name": "u", "user": {"token": "kubeconfig-token"}}]}))
    return str(path)


def sent_to(kube: Kube) -> tuple[str, str]:
    return kube.configuration.host, kube._headers(None).get("Authorization", "")


def test_the_credential_token_goes_to_the_credential_host(awx_credential: str) -> None:
    # the modules' options fall back to the environment: host and api_key both from the credential
    assert sent_to(Kube({"host": REAL, "api_key": awx_credential})) == (REAL, "Bearer " + awx_credential)


def test_a_launch_time_host_cannot_collect_the_credential_token(awx_credential: str) -> None:
    with pytest.raises(StormError, match="refusing to send the API token of the Kubernetes credential .* to %s" % EVIL):
        Kube({"host": EVIL, "api_key": awx_credential})


def test_kubeconfig_credentials_go_only_to_the_kubeconfig_server(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path, REAL)
    assert sent_to(Kube({"kubeconfig": path})) == (REAL, "Bearer kubeconfig-token")
    assert sent_to(Kube({"kubeconfig": path, "host": REAL + "/"}))[0] == REAL + "/"
    with pytest.raises(StormError, match="refusing to send the kubeconfig's credentials to %s" % EVIL):
        Kube({"kubeconfig": path, "host": EVIL})


@pytest.mark.parametrize("options", [
    {"host": "http://api.cluster.example:8080", "api_key": "inventory-token"},
    {"host": "http://api.cluster.example:8080", "api_key": "sa-token-of-the-credential"},
])
def test_no_token_over_plain_http_unless_the_credential_names_it(options: dict[str, Any], awx_credential: str) -> None:
    with pytest.raises(StormError, match="refusing to send"):
        Kube(options)


def test_a_credential_that_names_an_http_server_is_honoured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_AUTH_HOST", "http://127.0.0.1:8080")
    monkeypatch.setenv("K8S_AUTH_API_KEY", "lab-token")
    assert sent_to(Kube({"host": "http://127.0.0.1:8080", "api_key": "lab-token"}))[0] == "http://127.0.0.1:8080"


def test_an_inventory_host_and_token_over_https_are_used_as_given() -> None:
    assert sent_to(Kube({"host": EVIL, "api_key": "inventory-token"})) == (EVIL, "Bearer inventory-token")
