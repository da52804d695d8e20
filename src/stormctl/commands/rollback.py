"""`stormctl rollback`: undo what an incident changed (from its ledger)"""

from __future__ import annotations

import argparse

from stormctl.commands.common import Command, register_playbook_command

COMMAND = Command(name="rollback", playbook="rollback.yml", mutating=True, reports=False, needs_incident_id=True)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_playbook_command(
        subparsers,
        COMMAND,
        "undo what an incident changed (from its ledger)",
        "Runs playbooks/rollback.yml: restores every change the incident's ledger recorded, newest first; "
        "refuses to overwrite later changes (drift) unless -e rollback_force=true. Needs --incident-id.",
    )
