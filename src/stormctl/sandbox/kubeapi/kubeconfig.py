"""Write a kubeconfig that points the kubernetes client and kubectl at the emulator."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Optional, Union

import yaml


def write_kubeconfig(path: Union[str, Path], server: str, token: str, user: str = "storm-operator",
                     namespace: Optional[str] = None, context: str = "storm-sandbox",
                     ca_file: Union[str, Path, None] = None) -> Path:
    """A one-context kubeconfig (mode 0600) for `server` with a bearer `token`; returns its path.

    For an https `server` pass `ca_file` (the emulator's `kubeapi-ca.crt`); it is embedded in the file.
    kubectl sends the token only over https, the kubernetes Python client over both.
    """
    ctx: dict[str, str] = {"cluster": "storm-sandbox", "user": user}
    if namespace:
        ctx["namespace"] = namespace
    cluster: dict[str, str] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(Path(ca_file).read_bytes()).decode()
    config = {
        "apiVersion": "v1", "kind": "Config", "preferences": {},
        "clusters": [{"name": "storm-sandbox", "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": context, "context": ctx}],
        "current-context": context,
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(str(target), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        yaml.safe_dump(config, handle, default_flow_style=False, sort_keys=False)
    os.chmod(target, 0o600)
    return target
