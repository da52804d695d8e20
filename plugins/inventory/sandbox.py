# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import annotations

DOCUMENTATION = r"""
name: sandbox
short_description: The running local sandbox (C(stormctl sandbox up)) as a one-host inventory
description:
  - Reads the sandbox's C(state.json) once and gives its one Redis deployment, the host C(sandbox-redis) in the
    group C(redis_deployments), the C(storm_*) values that point at it (Redis, Prometheus, the API emulator's
    kubeconfig, the client namespaces, Redis' workload, ingresses, flags and DestinationRules).
  - The values are plain host variables, so no task re-reads the state file.
  - Fails, naming the directory, when no sandbox is running there.
version_added: "0.1.0"
author: fintech SRE (@fintech-sre)
options:
  plugin:
    description: Marks the file as this plugin's configuration.
    type: str
    required: true
    choices: [fintech.redis_storm.sandbox]
  state_dir:
    description:
      - The sandbox's state directory (C(stormctl sandbox up --dir)).
      - Default C(<repo>/.sandbox/run), two directories above the inventory file.
    type: str
    env:
      - name: STORM_SANDBOX_DIR
"""

EXAMPLES = r"""
# inventories/sandbox/sandbox.yml
plugin: fintech.redis_storm.sandbox
"""

import json
import os
from typing import Any, Dict

from ansible.errors import AnsibleParserError
from ansible.plugins.inventory import BaseInventoryPlugin

HOST = "sandbox-redis"
GROUP = "redis_deployments"


def storm_values(state: Dict[str, Any]) -> Dict[str, Any]:
    """The storm_* inventory variables of the sandbox described by ``state``."""
    return {
        "storm_redis_host": state["redis"]["host"],
        "storm_redis_port": state["redis"]["port"],
        "storm_redis_password": state["redis"]["password"],
        "storm_prometheus_url": state["prometheus"]["url"],
        "storm_kubeconfig": state["kube"]["kubeconfig"],
        "storm_namespaces": state["client_namespaces"],
        "storm_redis_workload": state["redis_workload"],
        "storm_ingresses": state["ingresses"],
        "storm_flags": state["flags"],
        "storm_mesh_destination_rules": state.get("mesh_destination_rules") or [],
    }


class InventoryModule(BaseInventoryPlugin):  # type: ignore[misc]
    NAME = "fintech.redis_storm.sandbox"

    def verify_file(self, path: str) -> bool:
        return bool(super().verify_file(path)) and path.endswith(("sandbox.yml", "sandbox.yaml"))

    def parse(self, inventory: Any, loader: Any, path: str, cache: bool = True) -> None:
        super().parse(inventory, loader, path, cache)
        self._read_config_data(path)
        state_dir = os.path.realpath(self.get_option("state_dir") or os.path.join(
            os.path.dirname(os.path.abspath(path)), "..", "..", ".sandbox", "run"))
        state_file = os.path.join(state_dir, "state.json")
        try:
            with open(state_file, encoding="utf-8") as handle:
                state = json.load(handle)
            values = storm_values(state)
        except FileNotFoundError:
            raise AnsibleParserError(
                "no sandbox is running at %s: run `stormctl sandbox up` (or set STORM_SANDBOX_DIR)" % state_dir
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise AnsibleParserError("cannot read the sandbox's %s (%s): run `stormctl sandbox down` and `up` again"
                                     % (state_file, exc)) from exc
        self.inventory.add_group(GROUP)
        self.inventory.add_host(HOST, group=GROUP)
        for name, value in dict(values, storm_sandbox_dir=state_dir).items():
            self.inventory.set_variable(HOST, name, value)
