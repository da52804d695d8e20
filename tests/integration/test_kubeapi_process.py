"""The emulator as a process: --seed, plain http, the ready file, and nothing left behind after stop."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import kubernetes
import pytest
import yaml

from stormctl.sandbox.kubeapi import write_kubeconfig
from tests.fixtures.kubeapi import running_kubeapi

pytestmark = pytest.mark.integration

SEED = """\
- apiVersion: v1
  kind: Namespace
  metadata: {name: trading}
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: trading-api, namespace: trading, labels: {app: trading-api}}
  spec:
    replicas: 4
    selector: {matchLabels: {app: trading-api}}
    template:
      metadata: {labels: {app: trading-api}}
      spec: {containers: [{name: app, image: "trading:1"}]}
  status: {replicas: 4, readyReplicas: 4}
"""


def test_seed_file_plain_http_and_clean_stop(tmp_path: Path) -> None:
    seed = tmp_path / "seed.yml"
    seed.write_text(SEED)
    with running_kubeapi(tmp_path / "state", seed=seed, tls=False) as api:
        assert api.url.startswith("http://127.0.0.1:") and api.ca_file is None
        ready = json.loads((tmp_path / "state" / "kubeapi.json").read_text())
        assert ready["url"] == api.url and ready["pid"] == api.proc.pid

        config = write_kubeconfig(tmp_path / "kubeconfig", api.url, api.tokens["operator"], namespace="trading")
        assert config.stat().st_mode & 0o777 == 0o600
        loaded = yaml.safe_load(config.read_text())
        assert loaded["contexts"][0]["context"] == {"cluster": "storm-sandbox", "user": "storm-operator",
                                                    "namespace": "trading"}
        client = kubernetes.config.new_client_from_config(config_file=str(config))
        apps = kubernetes.client.AppsV1Api(client)
        seeded = apps.read_namespaced_deployment("trading-api", "trading")
        assert (seeded.spec.replicas, seeded.status.ready_replicas) == (4, 4), "seeding keeps status"
        apps.patch_namespaced_deployment_scale("trading-api", "trading", {"spec": {"replicas": 2}})
        pid = api.proc.pid
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    audit = [json.loads(line) for line in (tmp_path / "state" / "kubeapi-audit.jsonl").read_text().splitlines()]
    assert [(e["verb"], e["subresource"], e["code"]) for e in audit] == [("patch", "scale", 200)]


def test_tls_kubeconfig_embeds_the_ca(tmp_path: Path) -> None:
    with running_kubeapi(tmp_path / "state") as api:
        assert api.url.startswith("https://") and api.ca_file is not None
        client = kubernetes.config.new_client_from_config(config_file=str(api.kubeconfig))
        names = [n.metadata.name for n in kubernetes.client.CoreV1Api(client).list_namespace().items]
        assert names == ["default", "kube-node-lease", "kube-public", "kube-system"]


def test_http_and_https_listeners_side_by_side(tmp_path: Path) -> None:
    with running_kubeapi(tmp_path / "state", tls=False, tls_listener=True) as api:
        assert api.url.startswith("http://") and api.tls_url is not None and api.tls_url.startswith("https://")
        core = kubernetes.client.CoreV1Api(api.client("operator"))
        core.create_namespace({"metadata": {"name": "trading"}})
        config = write_kubeconfig(tmp_path / "kubeconfig", api.tls_url, api.tokens["readonly"],
                                  user="storm-readonly", ca_file=tmp_path / "state" / "kubeapi-ca.crt")
        from tests.fixtures.services import require_binary

        result = subprocess.run([require_binary("kubectl"), "--kubeconfig", str(config), "--cache-dir",
                                 str(tmp_path / "cache"), "get", "namespace", "trading", "-o", "name"],
                                capture_output=True, text=True, timeout=30, check=False)
        assert (result.returncode, result.stdout.strip()) == (0, "namespace/trading"), result.stderr
