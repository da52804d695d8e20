"""`stormctl mitigate`: climb the mitigation ladder until Redis recovers"""

from __future__ import annotations

import argparse

from stormctl.commands.common import Command, register_playbook_command

COMMAND = Command(name="mitigate", playbook="mitigate.yml", mutating=True, reports=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_playbook_command(
        subparsers,
        COMMAND,
        "climb the mitigation ladder until Redis recovers",
        "Runs playbooks/mitigate.yml under the incident lock: triage, then each recommended rung (or --rungs)"
        " least invasive first, checking recovery after each, and writes the report.",
    )
