"""stormctl's entry point: one small module per subcommand, each with register(subparsers)."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from stormctl.errors import StormctlError

EXIT_CODES = """exit codes:
  0  recovered, or nothing to do
  1  error (bad arguments, a failed run)
  2  the storm persists after the mitigations
  3  refused (the incident lock is held, or a guard rail said no)
"""


def build_parser() -> argparse.ArgumentParser:
    from stormctl import sandbox_cmd

    parser = argparse.ArgumentParser(
        prog="stormctl",
        description="Triage and mitigate a Redis connection storm with the fintech.redis_storm playbooks.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (sandbox_cmd,):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.handler(args))
    except StormctlError as exc:
        print("stormctl: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stormctl: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
