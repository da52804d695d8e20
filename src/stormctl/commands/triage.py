"""`stormctl triage`: is Redis in a connection storm, who causes it, what would help (read-only)"""

from __future__ import annotations

import argparse

from stormctl.commands.common import Command, register_playbook_command

COMMAND = Command(name="triage", playbook="triage.yml", mutating=False, reports=False)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    register_playbook_command(
        subparsers,
        COMMAND,
        "is Redis in a connection storm, who causes it, what would help (read-only)",
        "Runs playbooks/triage.yml: Redis' own view, Prometheus and Kubernetes joined into one verdict. "
        "Changes nothing. Exit 0 when there is no storm, 2 when there is one.",
    )
