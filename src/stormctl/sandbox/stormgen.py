"""A raw connection storm: N real Redis connections from chosen 127.x source addresses.

Each connection is a plain non-blocking socket bound to its source address before it
connects, so Redis' CLIENT LIST shows the address the test or drill chose. It speaks just
enough RESP to AUTH, name itself and PING, then holds the connection open. With
``reconnect`` every refused or dropped connection is retried at once, like a client
without backoff. Thousands of connections cost one thread and an asyncio loop.

Library::

    with StormGen(port, password=pw, sources=[("127.0.10.1", 150)], name="api") as storm:
        storm.wait_connected(150)

CLI::

    python -m stormctl.sandbox.stormgen --port P --password-file F --source 127.0.10.1=150 --reconnect
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Callable, Dict, List, Optional, Sequence, Tuple

# Linux: let connect() pick the source port, so bind() does not reserve one per address up front.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
MAXCLIENTS_TEXT = b"max number of clients"


def raise_nofile_limit() -> int:
    """Raise this process' open-file soft limit to the hard limit; returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        return hard
    return soft


def encode_command(*parts: str) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


@dataclass
class StormStats:
    """Counters of the whole storm (read from any thread; written only by the loop)."""

    attempted: int = 0  # connects started
    accepted: int = 0  # handshakes Redis answered with PONG
    rejected: int = 0  # refused with "max number of clients reached"
    failed: int = 0  # anything else: refused TCP, reset, auth error
    closed_by_server: int = 0  # held connections Redis closed (CLIENT KILL, timeout)
    connected: int = 0  # open right now
    last_error: Optional[str] = None
    connected_by_source: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, object]:
        return {
            "attempted": self.attempted, "accepted": self.accepted, "rejected": self.rejected,
            "failed": self.failed, "closed_by_server": self.closed_by_server, "connected": self.connected,
            "connected_by_source": dict(self.connected_by_source), "last_error": self.last_error,
        }


class StormGen:
    """Open, hold and optionally re-open Redis connections from chosen source addresses."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        password: Optional[str] = None,
        username: Optional[str] = None,
        sources: Sequence[Tuple[str, int]] = (("127.0.0.1", 1),),
        name: Optional[str] = None,
        lib_name: Optional[str] = None,
        reconnect: bool = False,
        lifetime: Optional[float] = None,
        reconnect_delay: float = 0.0,
        connect_timeout: float = 5.0,
        concurrency: int = 256,
    ) -> None:
        self.host = host
        self.port = port
        self.sources = [(ip, int(count)) for ip, count in sources]
        self.reconnect = reconnect
        self.lifetime = lifetime
        self.reconnect_delay = reconnect_delay
        self.connect_timeout = connect_timeout
        self.concurrency = concurrency
        # every key exists up front, so another thread can copy the dict while the loop counts
        self.stats = StormStats(connected_by_source={ip: 0 for ip, _ in self.sources})
        self._handshake, self._replies = self._build_handshake(password, username, name, lib_name)
        self._thread: Optional[threading.Thread] = None
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._stopping: Optional[asyncio.Event] = None
        self._ready = threading.Event()

    @staticmethod
    def _build_handshake(password: Optional[str], username: Optional[str], name: Optional[str],
                         lib_name: Optional[str]) -> Tuple[bytes, int]:
        commands = []
        if password:
            commands.append(encode_command("AUTH", username, password) if username
                            else encode_command("AUTH", password))
        if name:
            commands.append(encode_command("CLIENT", "SETNAME", name))
        if lib_name:
            commands.append(encode_command("CLIENT", "SETINFO", "LIB-NAME", lib_name))
        # PING last: its PONG proves Redis accepted us (a refusal arrives before it).
        commands.append(encode_command("PING"))
        return b"".join(commands), len(commands)

    # -------------------------------------------------------------- lifecycle

    def start(self) -> StormGen:
        raise_nofile_limit()
        self._thread = threading.Thread(target=self._run, name="stormgen", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self, timeout: float = 30.0) -> None:
        if self._loop is not None and self._stopping is not None and self._thread is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
            self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> StormGen:
        return self.start()

    def __exit__(self, exc_type: Optional[type], exc: Optional[BaseException], tb: Optional[TracebackType]) -> None:
        self.stop()

    def wait_until(self, predicate: Callable[[StormStats], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.stats):
            if time.monotonic() > deadline:
                raise TimeoutError("storm did not reach %s within %ss: %s" % (what, timeout, self.stats.as_dict()))
            time.sleep(0.01)

    def wait_connected(self, count: Optional[int] = None, timeout: float = 30.0) -> None:
        """Block until ``count`` connections (default: all of them) are open."""
        want = sum(n for _, n in self.sources) if count is None else count
        self.wait_until(lambda s: s.connected >= want, timeout, "%d connections" % want)

    def wait_settled(self, timeout: float = 30.0) -> None:
        """Block until every connection slot has been tried at least once."""
        want = sum(n for _, n in self.sources)
        self.wait_until(lambda s: s.attempted >= want and s.accepted + s.rejected + s.failed >= want,
                        timeout, "every slot tried")

    # -------------------------------------------------------------- the loop

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        finally:
            loop.close()

    async def _main(self) -> None:
        self._stopping = asyncio.Event()
        gate = asyncio.Semaphore(self.concurrency)
        self._ready.set()
        tasks = [asyncio.ensure_future(self._slot(ip, gate)) for ip, count in self.sources for _ in range(count)]
        await self._stopping.wait()
        pending = set(tasks)
        while pending:
            # Python 3.11's wait_for can swallow a cancel that races its own completion: cancel again
            for task in pending:
                task.cancel()
            _done, pending = await asyncio.wait(pending, timeout=0.2)

    async def _open(self, source: str) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            sock.bind((source, 0))
            await asyncio.get_running_loop().sock_connect(sock, (self.host, self.port))
        except BaseException:
            sock.close()
            raise
        return await asyncio.open_connection(sock=sock)

    async def _greet(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> Optional[bytes]:
        """None when Redis accepted us, else the error line (b"" for a silent drop)."""
        writer.write(self._handshake)
        await writer.drain()
        for index in range(self._replies):
            line = await reader.readline()
            if not line:
                return b""
            is_last = index == self._replies - 1
            if line.startswith(b"-") and (MAXCLIENTS_TEXT in line or index == 0 or is_last):
                return line.strip()
        return None

    async def _slot(self, source: str, gate: asyncio.Semaphore) -> None:
        stats = self.stats
        while True:
            writer: Optional[asyncio.StreamWriter] = None
            try:
                async with gate:
                    stats.attempted += 1
                    reader, opened = await asyncio.wait_for(self._open(source), self.connect_timeout)
                    writer = opened
                    refusal = await asyncio.wait_for(self._greet(reader, opened), self.connect_timeout)
                if refusal is not None:
                    if MAXCLIENTS_TEXT in refusal:
                        stats.rejected += 1
                    else:
                        stats.failed += 1
                        stats.last_error = refusal.decode("utf-8", "replace") or "connection dropped at accept"
                        if refusal.startswith((b"-WRONGPASS", b"-NOAUTH", b"-ERR invalid password", b"-NOPERM")):
                            return  # a wrong password does not fix itself by retrying
                else:
                    await self._hold(source, reader)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as exc:
                stats.failed += 1
                stats.last_error = "%s: %s" % (type(exc).__name__, exc)
            finally:
                if writer is not None:
                    writer.close()
            if not self.reconnect:
                return
            if self.reconnect_delay > 0:
                await asyncio.sleep(self.reconnect_delay)

    async def _hold(self, source: str, reader: asyncio.StreamReader) -> None:
        stats = self.stats
        stats.accepted += 1
        stats.connected += 1
        stats.connected_by_source[source] = stats.connected_by_source.get(source, 0) + 1
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(4096), self.lifetime)
                except asyncio.TimeoutError:
                    return  # lifetime over: we close and, with reconnect, come straight back
                if not data:
                    stats.closed_by_server += 1
                    return
        finally:
            stats.connected -= 1
            stats.connected_by_source[source] -= 1


# ------------------------------------------------------------------ CLI

def parse_source(text: str) -> Tuple[str, int]:
    ip, sep, count = text.partition("=")
    try:
        socket.inet_aton(ip)
        if not sep:
            raise ValueError
        return ip, int(count)
    except (OSError, ValueError) as exc:
        raise argparse.ArgumentTypeError("expected IP=COUNT, e.g. 127.0.10.1=150 (got %r)" % text) from exc


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m stormctl.sandbox.stormgen", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--username")
    parser.add_argument("--password-file", help="file holding the Redis password (never on the command line)")
    parser.add_argument("--source", type=parse_source, action="append", required=True, metavar="IP=COUNT",
                        help="connections to open from this 127.x address (repeatable)")
    parser.add_argument("--name", help="CLIENT SETNAME for every connection")
    parser.add_argument("--lib-name", help="CLIENT SETINFO LIB-NAME (Redis 7.2+)")
    parser.add_argument("--reconnect", action="store_true", help="re-open refused or dropped connections at once")
    parser.add_argument("--lifetime", type=float, help="close and (with --reconnect) re-open each connection after S s")
    parser.add_argument("--reconnect-delay", type=float, default=0.0,
                        help="fixed pause before each re-open (default 0: no backoff at all)")
    parser.add_argument("--duration", type=float, help="stop after S seconds (default: until SIGINT/SIGTERM)")
    parser.add_argument("--interval", type=float, default=1.0, help="print counters as a JSON line every S seconds")
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    password = None
    if args.password_file:
        with open(args.password_file, encoding="utf-8") as handle:
            password = handle.read().strip()
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    storm = StormGen(args.port, host=args.host, password=password, username=args.username, sources=args.source,
                     name=args.name, lib_name=args.lib_name, reconnect=args.reconnect, lifetime=args.lifetime,
                     reconnect_delay=args.reconnect_delay)
    deadline = None if args.duration is None else time.monotonic() + args.duration
    with storm:
        while not done.is_set():
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            done.wait(args.interval if left is None else min(args.interval, left))
            print(json.dumps(storm.stats.as_dict()), flush=True)
    print(json.dumps(storm.stats.as_dict()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
