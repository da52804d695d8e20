"""`python -m stormctl.sandbox.kubeapi --listen 127.0.0.1:PORT --state-dir DIR [--seed FILE]`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from .app import serve


def _address(parser: argparse.ArgumentParser, flag: str, value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        parser.error("%s takes HOST:PORT, e.g. 127.0.0.1:6443" % flag)
    return host, int(port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stormctl.sandbox.kubeapi",
                                     description="Kubernetes API emulator for the redis-storm sandbox.")
    parser.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT to listen on (port 0: any free port)")
    parser.add_argument("--state-dir", required=True, type=Path,
                        help="holds tokens.json, kubeapi-audit.jsonl and kubeapi.json (the bound URL)")
    parser.add_argument("--seed", type=Path, help="YAML/JSON objects to create at start")
    parser.add_argument("--listen-tls", metavar="HOST:PORT",
                        help="also serve https there (local CA in the state dir), e.g. for kubectl's kubeconfig")
    parser.add_argument("--tls", action="store_true",
                        help="serve HTTPS with a local CA (kubeapi-ca.crt in the state dir); kubectl sends bearer "
                             "tokens only over TLS")
    args = parser.parse_args(argv)
    host, port = _address(parser, "--listen", args.listen)
    tls_listen = _address(parser, "--listen-tls", args.listen_tls) if args.listen_tls else None
    try:
        asyncio.run(serve(host, port, args.state_dir, args.seed, args.tls, tls_listen))
    except OSError as exc:
        print("kubeapi: cannot listen on %s: %s" % (args.listen, exc), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
