"""`stormctl stabilize`: pause the worst offender's autoscaler"""

from __future__ import annotations

import argparse

from stormctl.commands.common import Command, register_playbook_command

COMMAND = Command(name="stabilize", playbook="stabilize.yml", mutating=True, reports=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_playbook_command(
        subparsers,
        COMMAND,
        "pause the worst offender's autoscaler",
        "Runs playbooks/stabilize.yml under the incident lock: pause the HPA or ScaledObject of the worst "
        "offender, and writes the report.",
    )
