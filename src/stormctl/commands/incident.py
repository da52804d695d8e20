"""`stormctl incident`: the whole incident: lock, triage, mitigate, stabilise, verify, report"""

from __future__ import annotations

import argparse

from stormctl.commands.common import Command, register_playbook_command

COMMAND = Command(name="incident", playbook="incident.yml", mutating=True, reports=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_playbook_command(
        subparsers,
        COMMAND,
        "the whole incident: lock, triage, mitigate, stabilise, verify, report",
        "Runs playbooks/incident.yml: lock, triage, the mitigation ladder, stabilisation, the recovery check,"
        " then writes reports/<incident-id>/report.json, report.md and report.html.",
    )
