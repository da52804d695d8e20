"""`python -m stormctl.sandbox.fleet --state-dir DIR --listen 127.0.0.1:PORT`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from stormctl.errors import StormctlError
from stormctl.sandbox.fleet.app import serve


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stormctl.sandbox.fleet",
                                     description="The sandbox's client fleet: pods as real Redis connections.")
    parser.add_argument("--state-dir", required=True, type=Path, help="the sandbox directory with state.json")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT for /metrics, /status, /storm, /calm")
    parser.add_argument("--world", type=Path, help="a world file instead of the packaged scenarios/world.yml")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not host or not port.isdigit():
        parser.error("--listen takes HOST:PORT, e.g. 127.0.0.1:9100")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(args.state_dir, host, int(port), args.world))
    except StormctlError as exc:
        print("fleet: %s" % exc, file=sys.stderr)
        return 1
    except OSError as exc:
        print("fleet: cannot listen on %s: %s" % (args.listen, exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
