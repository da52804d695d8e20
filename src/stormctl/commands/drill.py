"""`stormctl drill SCENARIO`: a whole incident in the local sandbox, from storm to report."""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from stormctl import runner
from stormctl.commands import common, incident
from stormctl.errors import StormctlError
from stormctl.sandbox.state import resolve_dir

TRIAGE = common.Command(name="triage", playbook="triage.yml", mutating=False, reports=False)
# Triage runs in a row that must see the storm at its peak (critical), over at least SUSTAINED_SECONDS:
# a storm's first burst of new connections can look critical for a few seconds and settle before the
# incident's own triage runs.
CONFIRMATIONS = 2
SUSTAINED_SECONDS = 10.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "drill",
        help="rehearse an incident in the sandbox: storm, triage, incident, report, tear down",
        description="Starts the sandbox (unless one runs), raises SCENARIO's storm, waits until triage sees it, "
        "runs `stormctl incident --yes`, writes the report and tears down what it started. Exit 0 only "
        "when Redis recovered; prints the path of report.html.",
    )
    parser.add_argument("scenario", metavar="SCENARIO", help="e.g. market-open, bad-pool-config, retry-storm")
    parser.add_argument(
        "--sandbox-dir", help="the sandbox's state directory (default $STORM_SANDBOX_DIR or .sandbox/run)"
    )
    parser.add_argument(
        "--wait", type=float, default=180.0, help="seconds to wait for triage to see the storm (default 180)"
    )
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        default=[],
        metavar="KEY=VALUE|@FILE",
        help="extra variable for the incident run (repeatable)",
    )
    parser.add_argument("--incident-id", help="incident id (default: storm-YYYYmmdd-HHMMSS, UTC)")
    parser.add_argument(
        "--json", action="store_true", help="print the machine-readable result instead of the live view"
    )
    parser.add_argument("--reports-dir", help="where reports go (default: $STORM_REPORTS_DIR or <repo>/reports)")
    parser.add_argument("--artifacts-dir", help="ansible-runner's private dir (default: <repo>/artifacts)")
    parser.set_defaults(handler=_drill)


def _incident_args(args: argparse.Namespace, incident_id: str) -> argparse.Namespace:
    return argparse.Namespace(
        inventory=None,
        check=False,
        diff=True,
        limit=None,
        extra_vars=list(args.extra_vars),
        vault_password_file=None,
        incident_id=incident_id,
        rungs=None,
        yes=True,
        json=args.json,
        reports_dir=args.reports_dir,
        artifacts_dir=args.artifacts_dir,
    )


def wait_for_storm(args: argparse.Namespace, incident_id: str, console: Console) -> int:
    """Run triage until it has seen a critical storm CONFIRMATIONS times in a row, over SUSTAINED_SECONDS;
    the number of triage runs it took."""
    triage_args = _incident_args(args, incident_id)
    triage_args.yes = False
    deadline = time.monotonic() + args.wait
    attempt = seen = 0
    critical_since = 0.0
    while True:
        attempt += 1
        started = time.monotonic()
        config = common.build_config(TRIAGE, triage_args, incident_id)
        result = runner.run(config)
        if not result.successful:
            reasons = "; ".join("%s: %s" % (f["task"], f["msg"]) for f in result.failures) or result.status
            raise StormctlError("triage failed while waiting for the storm: %s" % reasons)
        critical = any(t.get("storm") and t.get("severity") == "critical" for t in result.triage.values())
        if critical and not seen:
            critical_since = started
        seen = seen + 1 if critical else 0
        console.print("triage run %d: %s" % (attempt, "critical storm" if critical else _seen(result.triage)))
        if seen >= CONFIRMATIONS and time.monotonic() - critical_since >= SUSTAINED_SECONDS:
            return attempt
        if time.monotonic() >= deadline:
            raise StormctlError("triage did not see the storm within %.0f s (%d runs)" % (args.wait, attempt))


def _seen(verdicts: dict[str, dict[str, Any]]) -> str:
    storms = [str(v.get("severity")) for v in verdicts.values() if v.get("storm")]
    return "%s storm, waiting for it to turn critical" % storms[0] if storms else "no storm yet"


def _drill(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services  # redis and the supervisor: only a drill pays for them

    console = Console(stderr=True)
    state_dir: Path = resolve_dir(args.sandbox_dir)
    # The inventory and every subprocess find this sandbox through the environment.
    os.environ["STORM_SANDBOX_DIR"] = str(state_dir)
    incident_id = args.incident_id or common.new_incident_id()
    common.build_config(incident.COMMAND, _incident_args(args, incident_id), incident_id)  # bad arguments: stop now
    started = not services.status(state_dir, live=False).get("running")
    if started:
        console.print("starting the sandbox in %s" % state_dir)
        services.up(state_dir)
    stormed = False
    try:
        console.print("raising the %s storm" % args.scenario)
        services.storm(args.scenario, state_dir)
        stormed = True
        wait_for_storm(args, incident_id, console)
        outcome = common.execute(incident.COMMAND, _incident_args(args, incident_id))
    finally:
        if started:
            services.down(state_dir)
            console.print("sandbox stopped")
        elif stormed:
            services.calm(state_dir)
            console.print("storm ended (the sandbox keeps running)")
    common.print_outcome(incident.COMMAND, args, outcome)
    if outcome.report is None:
        raise StormctlError("the incident wrote no report (outcome %s)" % outcome.outcome)
    if not args.json:
        print(outcome.report.html)
    return 0 if outcome.outcome == "recovered" else (outcome.code or 1)
