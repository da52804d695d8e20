"""`stormctl sandbox up|down|status|storm|calm` and `stormctl drill` (filled in by the sandbox)."""

from __future__ import annotations

import argparse


def register(subparsers: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    parser = subparsers.add_parser("sandbox", help="run the local sandbox (real Redis, Prometheus, kube API emulator)")
    parser.set_defaults(handler=lambda args: parser.print_help() or 1)
