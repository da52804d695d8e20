"""What every playbook subcommand shares: options, extra vars, the dry-run plan and confirmation,
the run with live progress, the exit code from the facts, the report and the output."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rich.console import Console
from rich.markup import escape
from rich.prompt import Confirm

from stormctl import runner
from stormctl.errors import StormctlError
from stormctl.ladder import RUNGS
from stormctl.progress import Progress, summary
from stormctl.runner import DEFAULT_INVENTORY, PLAYBOOKS, RunConfig, RunResult
from stormctl.sandbox.state import REPO

if TYPE_CHECKING:
    from stormctl.report import ReportFiles

EXIT_FOR_OUTCOME = {"recovered": 0, "no_storm": 0, "not_recovered": 2, "refused": 3, "failed": 1}
# Same rule as the ledger's object names: the id becomes part of ConfigMap and Lease names.
INCIDENT_ID = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,38}[a-z0-9])?$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Command:
    """A playbook subcommand: its name, playbook and whether it changes anything."""

    name: str
    playbook: str
    mutating: bool
    # Whether the playbook writes incident facts (and so a report).
    reports: bool
    # Whether it works on an existing incident only (rollback).
    needs_incident_id: bool = False


def new_incident_id(now: datetime | None = None) -> str:
    return "storm-%s" % (now or datetime.now(timezone.utc)).strftime("%Y%m%d-%H%M%S")


def reports_root(value: str | None) -> Path:
    return Path(value or os.environ.get("STORM_REPORTS_DIR") or REPO / "reports").expanduser().resolve()


def artifacts_root(value: str | None) -> Path:
    return Path(value or os.environ.get("STORM_ARTIFACTS_DIR") or REPO / "artifacts").expanduser().resolve()


def add_run_options(parser: argparse.ArgumentParser, command: Command) -> None:
    parser.add_argument("-i", "--inventory", help="inventory path (default: inventories/sandbox)")
    parser.add_argument("--check", action="store_true", help="dry run: change nothing, show what would change")
    parser.add_argument("--diff", action="store_true", help="show each change as a before/after diff")
    parser.add_argument("--limit", help="only these inventory hosts (an Ansible host pattern)")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE",
        help="extra variable (repeatable); secrets belong in the inventory or a vault file given as @FILE",
    )
    parser.add_argument("--vault-password-file", help="file with the vault password for @FILE extra vars")
    parser.add_argument("--incident-id", help="incident the run belongs to (default: storm-YYYYmmdd-HHMMSS, UTC)")
    if command.mutating and command.name != "rollback":
        parser.add_argument("--rungs", help="comma-separated rungs to use, in ladder order: %s" % ", ".join(RUNGS))
    if command.mutating:
        parser.add_argument("--yes", action="store_true", help="do not ask before changing anything")
    parser.add_argument(
        "--json", action="store_true", help="print the machine-readable result instead of the live view"
    )
    parser.add_argument("--reports-dir", help="where reports go (default: $STORM_REPORTS_DIR or <repo>/reports)")
    parser.add_argument("--artifacts-dir", help="ansible-runner's private dir (default: <repo>/artifacts)")


def parse_extra_vars(items: list[str]) -> tuple[dict[str, Any], tuple[Path, ...]]:
    """`-e key=value`, `-e 'a=1 b=2'`, `-e '{"json": 1}'` and `-e @file` (kept as a path, never copied)."""
    values: dict[str, Any] = {}
    files: list[Path] = []
    for item in items:
        text = item.strip()
        if text.startswith("@"):
            path = Path(text[1:]).expanduser().resolve()
            if not path.is_file():
                raise StormctlError("-e %s: no such file" % item)
            files.append(path)
        elif text.startswith("{"):
            try:
                parsed = json.loads(text)
            except ValueError as exc:
                raise StormctlError("-e %s: not valid JSON (%s)" % (item, exc)) from exc
            if not isinstance(parsed, dict):
                raise StormctlError("-e %s: JSON extra vars must be an object" % item)
            values.update(parsed)
        else:
            try:
                pairs = shlex.split(text)
            except ValueError as exc:
                raise StormctlError("-e %s: %s" % (item, exc)) from exc
            for pair in pairs:
                key, sep, value = pair.partition("=")
                if not sep or not VAR_NAME.match(key):
                    raise StormctlError("-e %r: expected KEY=VALUE, a JSON object or @FILE" % pair)
                values[key] = value
    return values, tuple(files)


def parse_rungs(value: str | None) -> list[str] | None:
    if value is None:
        return None
    rungs = [r.strip() for r in value.split(",") if r.strip()]
    unknown = [r for r in rungs if r not in RUNGS]
    if unknown:
        raise StormctlError("--rungs: unknown rung %s; the rungs are %s" % (", ".join(unknown), ", ".join(RUNGS)))
    return rungs


def build_config(command: Command, args: argparse.Namespace, incident_id: str) -> RunConfig:
    """The run config from the parsed arguments (an error for anything invalid, before any run)."""
    if command.needs_incident_id and not args.incident_id:
        raise StormctlError("%s needs --incident-id: the incident whose ledger to undo" % command.name)
    if args.incident_id is not None and not INCIDENT_ID.match(args.incident_id):
        raise StormctlError(
            "--incident-id %r: use 1-40 lowercase letters, digits, '-' or '.', starting and ending with a "
            "letter or digit (e.g. storm-20261126-0545)" % args.incident_id
        )
    inventory = Path(args.inventory).expanduser().resolve() if args.inventory else DEFAULT_INVENTORY
    if not inventory.exists():
        raise StormctlError("-i %s: no such inventory" % args.inventory)
    extravars, files = parse_extra_vars(args.extra_vars)
    rungs = parse_rungs(getattr(args, "rungs", None))
    if rungs is not None:
        extravars["mitigate_rungs"] = rungs
    extravars["incident_id"] = incident_id
    if command.reports:
        extravars["storm_reports_dir"] = str(reports_root(args.reports_dir))
    vault = Path(args.vault_password_file).expanduser().resolve() if args.vault_password_file else None
    if vault is not None and not vault.is_file():
        raise StormctlError("--vault-password-file %s: no such file" % args.vault_password_file)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
    return RunConfig(
        playbook=PLAYBOOKS / command.playbook,
        inventory=inventory,
        private_dir=artifacts_root(args.artifacts_dir) / incident_id,
        extravars=extravars,
        extravar_files=files,
        check=bool(args.check),
        diff=bool(args.diff),
        limit=args.limit,
        vault_password_file=vault,
        ident="%s-%s%s" % (command.name, stamp, "-check" if args.check else ""),
    )


def incidents(result: RunResult) -> dict[str, dict[str, Any]]:
    """Each host's incident facts as this run published them (set_stats storm_incidents)."""
    data = result.artifact_data.get("storm_incidents") or {}
    return {str(host): dict(facts) for host, facts in data.items() if isinstance(facts, Mapping)}


def exit_code(result: RunResult, facts: Mapping[str, Mapping[str, Any]]) -> int:
    """0 recovered or nothing to do, 2 storm persists, 3 refused, 1 error: from facts and run status."""
    if facts:
        from stormctl.report.facts import worst_outcome  # the report package imports jsonschema

        worst = worst_outcome(str(f.get("outcome")) for f in facts.values())
        code = EXIT_FOR_OUTCOME.get(worst, 1)
        return 1 if code == 0 and not result.successful else code
    if any(f["refused"] for f in result.failures if not f["ignored"]):
        return 3
    if not result.successful:
        return 1
    if result.triage:
        return 2 if any(t.get("storm") for t in result.triage.values()) else 0
    return 0


def outcome_of(result: RunResult, facts: Mapping[str, Mapping[str, Any]], code: int) -> str:
    if facts:
        from stormctl.report.facts import worst_outcome

        return worst_outcome(str(f.get("outcome")) for f in facts.values())
    if code == 3:
        return "refused"
    if code == 1:
        return "failed"
    if result.triage:
        return "storm" if code == 2 else "no_storm"
    return "done"


def _run(config: RunConfig, title: str, quiet: bool) -> RunResult:
    if quiet:
        return runner.run(config)
    with Progress(title) as progress:
        return runner.run(config, progress.handle)


def _show_plan(console: Console, result: RunResult) -> int:
    """Print each change the dry run would make; return how many there are."""
    from stormctl.report.render import diff_text  # no matplotlib behind it

    changes = [c for c in result.changes if c.get("diff")]
    console.print("[bold]The dry run would change:[/bold]" if result.changes else "The dry run would change nothing.")
    for change in result.changes:
        console.print("  [yellow]~[/yellow] %s" % escape("%s: %s" % (change["host"], change["task"])))
    for change in changes:
        diffs = change["diff"] if isinstance(change["diff"], list) else [change["diff"]]
        for item in [d for entry in diffs for d in (entry if isinstance(entry, list) else [entry])]:
            if isinstance(item, Mapping) and ("before" in item or "after" in item):
                console.print(diff_text(item), markup=False, highlight=False)
    return len(result.changes)


def confirm(command: Command, config: RunConfig, console: Console) -> Outcome | None:
    """Dry-run the same playbook, show its plan and ask; None to go on, else how the command ends."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise StormctlError(
            "%s changes the cluster and there is no terminal to ask on: pass --yes to go ahead "
            "(or --check for a dry run)" % command.name
        )
    plan_vars = dict(config.extravars)
    if "storm_reports_dir" in plan_vars:
        plan_vars["storm_reports_dir"] = str(config.private_dir / "plan-reports")
    plan = replace(config, check=True, diff=True, extravars=plan_vars, ident=config.ident + "-plan")
    result = _run(plan, "%s (dry run)" % command.name, quiet=False)
    facts = incidents(result)
    code = exit_code(result, facts)
    incident_id = str(config.extravars["incident_id"])
    if code in (1, 3):
        console.print("[red]The dry run stopped, so nothing was changed.[/red]")
        return Outcome(code, incident_id, outcome_of(result, facts, code), result, None)
    if _show_plan(console, result) == 0 and code == 0:
        console.print("Nothing to do.")
        return Outcome(0, incident_id, outcome_of(result, facts, code), result, None)
    if not Confirm.ask(
        "Go ahead with %s for incident %s?" % (command.name, incident_id), console=console, default=False
    ):
        raise StormctlError("stopped at the prompt; nothing was changed")
    return None


@dataclass(frozen=True)
class Outcome:
    code: int
    incident_id: str
    outcome: str
    result: RunResult
    report: ReportFiles | None


def execute(command: Command, args: argparse.Namespace) -> Outcome:
    """Run the command's playbook as the arguments say and write its report; no printing of the result."""
    incident_id = args.incident_id or new_incident_id()
    config = build_config(command, args, incident_id)
    console = Console(stderr=True)
    if command.mutating and not args.check and not getattr(args, "yes", False):
        stopped = confirm(command, config, console)
        if stopped is not None:
            return stopped
    result = _run(config, "%s %s" % (command.name, incident_id), quiet=bool(args.json))
    facts = incidents(result)
    code = exit_code(result, facts)
    files = None
    incident_dir = reports_root(args.reports_dir) / incident_id
    if command.reports and facts and any(incident_dir.glob("facts-*.json")):
        from stormctl import report  # matplotlib is slow to import: only when there is a report to draw

        files = report.write(incident_dir)
    if incident_dir.is_dir():
        result.scrubber.tree(incident_dir)
    return Outcome(code, incident_id, outcome_of(result, facts, code), result, files)


def as_json(command: Command, outcome: Outcome) -> dict[str, Any]:
    result = outcome.result
    facts = incidents(result)
    return {
        "command": command.name,
        "incident_id": outcome.incident_id,
        "exit_code": outcome.code,
        "outcome": outcome.outcome,
        "status": result.status,
        "rc": result.rc,
        "elapsed_seconds": round(result.elapsed, 2),
        "hosts": {
            host: dict(
                vars(result.stats[host]) if host in result.stats else {},
                outcome=(facts.get(host) or {}).get("outcome"),
            )
            for host in sorted(set(result.stats) | set(facts))
        },
        "triage": {
            host: {k: t.get(k) for k in ("storm", "severity", "summary", "recommended_rungs")}
            for host, t in result.triage.items()
        },
        "timeline": [
            {k: e.get(k) for k in ("rung", "result", "changed", "recovered", "started_at", "finished_at")}
            | {"host": host}
            for host, f in facts.items()
            for e in f.get("timeline") or []
        ],
        "failures": result.failures,
        "report": None
        if outcome.report is None
        else {
            "json": str(outcome.report.json),
            "markdown": str(outcome.report.markdown),
            "html": str(outcome.report.html),
        },
        "artifacts": str(result.artifact_dir),
    }


def print_outcome(command: Command, args: argparse.Namespace, outcome: Outcome) -> None:
    if args.json:
        print(json.dumps(as_json(command, outcome), indent=2, default=str))
        return
    facts = incidents(outcome.result)
    outcomes = {host: "storm" if t.get("storm") else "no_storm" for host, t in outcome.result.triage.items()}
    outcomes.update({host: str(f.get("outcome")) for host, f in facts.items()})
    # Off a terminal rich assumes 80 columns; a log or CI view reads better wider.
    console = Console() if sys.stdout.isatty() else Console(width=140)
    console.print(
        summary(
            outcome.result,
            outcomes,
            {host: list(f.get("timeline") or []) for host, f in facts.items()},
            "%s %s: %s (exit %d)" % (command.name, outcome.incident_id, outcome.outcome, outcome.code),
        )
    )
    for host, verdict in sorted(outcome.result.triage.items()):
        console.print(
            "%s: %s" % (host, verdict.get("summary") or ("storm" if verdict.get("storm") else "no storm")), markup=False
        )
    for failure in outcome.result.failures:
        if not failure["ignored"]:
            console.print(
                "[red]failed[/red] %s" % escape("%s: %s: %s" % (failure["host"], failure["task"], failure["msg"]))
            )
    if outcome.report is not None:
        console.print("report: %s" % outcome.report.html, markup=False, highlight=False)


def handler(command: Command) -> Any:
    def handle(args: argparse.Namespace) -> int:
        outcome = execute(command, args)
        print_outcome(command, args, outcome)
        return outcome.code

    return handle


def register_playbook_command(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser], command: Command, help_text: str, description: str
) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(command.name, help=help_text, description=description)
    add_run_options(parser, command)
    parser.set_defaults(handler=handler(command))
    return parser
