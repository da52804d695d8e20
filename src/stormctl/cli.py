"""stormctl's entry point: one small module per subcommand, each with register(subparsers)."""

from __future__ import annotations

import argparse
import sys
from typing import NoReturn, Sequence

from stormctl.errors import StormctlError

EXIT_CODES = """exit codes:
  0  recovered, or nothing to do (triage: no storm)
  1  error (bad arguments, a failed run)
  2  the storm persists after the mitigations (triage: a storm is going on)
  3  refused (the incident lock is held, or a guard rail said no)
They come from the incident facts each run publishes and from ansible-runner's status.
"""


class _Parser(argparse.ArgumentParser):
    """Bad arguments are an error like any other: a clear message and exit 1 (2 means the storm persists)."""

    def error(self, message: str) -> NoReturn:
        raise StormctlError("%s (see `%s --help`)" % (message, self.prog))


def build_parser() -> argparse.ArgumentParser:
    from stormctl import sandbox_cmd
    from stormctl.commands import drill, incident, mitigate, rollback, stabilize, triage

    parser = _Parser(
        prog="stormctl",
        description="Triage and mitigate a Redis connection storm with the fintech.redis_storm playbooks.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (triage, mitigate, stabilize, rollback, incident, drill, sandbox_cmd):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
        return int(args.handler(args))
    except StormctlError as exc:
        print("stormctl: %s" % exc, file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("stormctl: interrupted", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
