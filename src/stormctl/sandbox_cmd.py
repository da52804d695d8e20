"""`stormctl sandbox up|down|status|storm|calm`: the local sandbox for drills and tests."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from stormctl.sandbox.state import KUBE_BACKEND_ENV, KUBE_BACKENDS

# The sandbox's modules import redis and the supervisor: only the sandbox subcommands pay for them.


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sandbox",
        help="run the local sandbox (real Redis, Prometheus, kube API emulator, client fleet)",
        description="The local sandbox: real redis-server, redis_exporter and Prometheus on free loopback ports, "
        "a Kubernetes API emulator and a fleet of client pods. Its state lives in --dir "
        "(default $STORM_SANDBOX_DIR or <repo>/.sandbox/run); inventories/sandbox reads it.",
    )
    parser.set_defaults(handler=lambda args: _help(parser))
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    def add(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = actions.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("--dir", help="the sandbox's state directory (default $STORM_SANDBOX_DIR or .sandbox/run)")
        return sub

    up = add("up", "start the sandbox and wait until every service is healthy")
    up.add_argument("--maxclients", type=int, default=1000, help="Redis maxclients (default 1000)")
    up.add_argument("--scenario", help="start this scenario's storm once the sandbox is up")
    up.add_argument("--timeout", type=float,
                    help="seconds to wait for health (default 90, 240 on the control plane)")
    up.add_argument("--kube", choices=KUBE_BACKENDS,
                    help="the sandbox's Kubernetes: the real control plane from `make kube` with the fleet as its "
                         "node agent, or the API emulator (default $%s, else emulator)" % KUBE_BACKEND_ENV)
    up.add_argument("--no-fleet", action="store_true", help="start without the client fleet")
    up.add_argument(
        "--no-kubeapi", action="store_true", help="start without the kube API emulator (implies --no-fleet)"
    )
    up.set_defaults(handler=_up)

    down = add("down", "stop the sandbox and remove its state directory (safe to repeat)")
    down.set_defaults(handler=_down)

    status = add("status", "show endpoints, services, namespaces, workloads and the running scenario")
    status.add_argument("--json", action="store_true", help="print JSON (no secrets: see password_file)")
    status.set_defaults(handler=_status)

    storm = add("storm", "start a scenario's storm in the running sandbox")
    storm.add_argument("scenario", metavar="SCENARIO", help="e.g. market-open, bad-pool-config, retry-storm")
    storm.set_defaults(handler=_storm)

    calm = add("calm", "end the running storm")
    calm.add_argument(
        "--reset",
        action="store_true",
        help="also put the cluster back to its baseline (undo mitigations, delete ledgers and Leases)",
    )
    calm.set_defaults(handler=_calm)


def _help(parser: argparse.ArgumentParser) -> int:
    parser.print_help()
    return 1


def _up(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services

    started = time.monotonic()
    report = services.up(
        args.dir,
        maxclients=args.maxclients,
        scenario=args.scenario,
        with_kubeapi=not args.no_kubeapi,
        with_fleet=not (args.no_fleet or args.no_kubeapi),
        timeout=args.timeout,
        kube=args.kube,
    )
    print("sandbox up in %.1f s" % (time.monotonic() - started))
    print(describe(report))
    return 0


def _down(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services

    result = services.down(args.dir)
    print("sandbox stopped, %s removed" % result["dir"] if result["stopped"] else result["message"])
    return 0


def _status(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services

    report = services.status(args.dir)
    if args.json:
        print(json.dumps(services.public(report), indent=2))
    else:
        print(describe(report))
    return 0 if report.get("healthy") else 1


def _storm(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services

    services.storm(args.scenario, args.dir)
    print("storm %r started; end it with `stormctl sandbox calm`" % args.scenario)
    return 0


def _calm(args: argparse.Namespace) -> int:
    from stormctl.sandbox import services

    services.calm(args.dir)
    print("storm ended; the fleet is back to its baseline traffic")
    if args.reset:
        changed = services.reset(args.dir)
        print(
            "cluster back to its baseline: %d objects restored, %d deleted"
            % (len(changed["restored"]), len(changed["deleted"]))
        )
    return 0


def describe(report: dict[str, Any]) -> str:
    """The human view of a status report (never a secret)."""
    if report.get("status") in ("stopped", "broken") and "redis" not in report:
        return "no sandbox running in %s (start one with `stormctl sandbox up`)" % report["dir"]
    if report.get("running"):
        condition = "running" if report.get("healthy") else "running, NOT healthy (see the services line and logs)"
    elif (report.get("supervisor") or {}).get("alive"):
        condition = "starting"
    else:
        condition = "not running (its supervisor is gone: run `stormctl sandbox down`)"
    lines = [
        "sandbox     %s in %s%s"
        % (
            condition,
            report["dir"],
            ", started %s" % report["started_at"] if report.get("started_at") else "",
        )
    ]
    redis = report.get("redis") or {}
    lines.append(
        "redis       %s:%s  maxclients %s  password in %s"
        % (redis.get("host"), redis.get("port"), redis.get("maxclients"), report.get("password_file"))
    )
    if report.get("prometheus"):
        lines.append("prometheus  %s" % report["prometheus"]["url"])
    if report.get("exporter"):
        lines.append("exporter    %s" % report["exporter"]["url"])
    kube = report.get("kube")
    if kube:
        lines.append("kube API    %s  kubeconfig %s" % (kube["api"], kube["kubeconfig"]))
    if report.get("fleet"):
        lines.append("fleet       %s" % report["fleet"]["url"])
    health = ", ".join(
        "%s%s %s" % (name, " " + s["version"] if s.get("version") else "",
                     "ok" if s.get("healthy") else ("alive, unhealthy" if s.get("alive") else "DOWN"))
        for name, s in (report.get("services") or {}).items()
    )
    lines.append("services    %s" % (health or "none"))
    lines.append("namespaces  %s" % (", ".join(report.get("namespaces") or []) or "none"))
    workloads = report.get("workloads") or []
    if workloads:
        lines.append("workloads")
        for w in workloads:
            replicas = "" if w.get("replicas") is None else "  replicas %s" % w["replicas"]
            lines.append("  %s/%s %s%s" % (w["namespace"], w["name"], w["kind"], replicas))
    else:
        lines.append("workloads   none")
    lines.append("scenario    %s" % (report.get("scenario") or "none (calm)"))
    lines.append("state       %s (inventories/sandbox reads it)" % report.get("state_file"))
    return "\n".join(lines)
