"""Raw Redis connections over asyncio, RESP by hand: cheap enough to hold thousands from one process."""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Callable, Optional, Union

Reply = Union[bytes, int, None, list[Any], "ReplyError"]


GREETING_WAIT = 0.003


class ReplyError(Exception):
    """A `-ERR ...` reply."""


class ConnectFailure(Exception):
    """Opening a connection failed; ``kind`` is the error label (maxclients, reset, timeout, refused, overflow)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class ConnectionLost(Exception):
    """The server closed the connection (or the network dropped it) while a reply was awaited."""


def encode(*args: Union[str, bytes, int]) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def parse(buf: bytearray, pos: int = 0) -> Optional[tuple[Reply, int]]:
    """One reply from ``buf`` at ``pos``: (reply, next position), or None when incomplete."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        return None
    kind = buf[pos:pos + 1]
    line = bytes(buf[pos + 1:end])
    if kind == b"+":
        return line, end + 2
    if kind == b"-":
        return ReplyError(line.decode(errors="replace")), end + 2
    if kind == b":":
        return int(line), end + 2
    if kind == b"$":
        size = int(line)
        if size < 0:
            return None, end + 2
        stop = end + 2 + size
        if len(buf) < stop + 2:
            return None
        return bytes(buf[end + 2:stop]), stop + 2
    if kind == b"*":
        count = int(line)
        items: list[Any] = []
        nxt = end + 2
        for _ in range(max(count, 0)):
            got = parse(buf, nxt)
            if got is None:
                return None
            items.append(got[0])
            nxt = got[1]
        return items, nxt
    raise ValueError("unexpected RESP type %r" % kind)


class RedisConnection(asyncio.Protocol):
    """Replies are matched to requests in order, as RESP guarantees."""

    def __init__(self) -> None:
        self.transport: Optional[asyncio.Transport] = None
        self._buf = bytearray()
        self._waiters: deque[asyncio.Future[Reply]] = deque()
        self.lost = False
        self.lost_reason = "Connection reset by peer"
        self.idle_since = 0.0
        self.opened_at = 0.0
        self.closing = False
        self.on_lost: Optional[Callable[[RedisConnection], None]] = None
        self.unsolicited: list[Reply] = []
        self.first_bytes: Optional[asyncio.Future[None]] = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def _first_bytes(self) -> None:
        if self.first_bytes is not None and not self.first_bytes.done():
            self.first_bytes.set_result(None)

    def data_received(self, data: bytes) -> None:
        self._first_bytes()
        self._buf += data
        pos = 0
        while pos < len(self._buf):
            got = parse(self._buf, pos)
            if got is None:
                break
            reply, pos = got
            if self._waiters:
                waiter = self._waiters.popleft()
                if not waiter.done():
                    waiter.set_result(reply)
            else:
                self.unsolicited.append(reply)
        del self._buf[:pos]

    def connection_lost(self, exc: Optional[Exception]) -> None:
        self.lost = True
        self._first_bytes()
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionLost(self.lost_reason))
        if not self.closing and self.on_lost is not None:
            self.on_lost(self)

    def send(self, *commands: bytes) -> list[asyncio.Future[Reply]]:
        if self.lost or self.transport is None:
            raise ConnectionLost(self.lost_reason)
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in commands]
        self._waiters.extend(futures)
        self.transport.write(b"".join(commands))
        return futures

    async def call(self, *args: Union[str, bytes, int]) -> Reply:
        (future,) = self.send(encode(*args))
        return await future

    def close(self) -> None:
        self.lost = True
        self.closing = True
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.lost = True
        self.closing = True
        if self.transport is not None:
            self.transport.abort()


async def open_connection(host: str, port: int, source_ip: str, password: str, client_name: str,
                          lib_name: str, lib_version: str, timeout: float) -> RedisConnection:
    """Connect from ``source_ip`` and do the handshake a client library does (AUTH, SETNAME, SETINFO)."""
    loop = asyncio.get_running_loop()
    conn: Optional[RedisConnection] = None
    try:
        async with asyncio.timeout(timeout):
            _, conn = await loop.create_connection(RedisConnection, host, port, local_addr=(source_ip, 0))
            # At maxclients Redis writes its error and closes at once; a handshake sent into that closed socket
            # would turn the error into a bare reset, so give the server a moment to speak first.
            conn.first_bytes = loop.create_future()
            try:
                async with asyncio.timeout(GREETING_WAIT):
                    await conn.first_bytes
            except TimeoutError:
                pass
            for reply in conn.unsolicited:
                if isinstance(reply, ReplyError):
                    conn.abort()
                    raise ConnectFailure("maxclients" if "max number of clients" in str(reply) else "error",
                                         str(reply))
            replies = await asyncio.gather(*conn.send(
                encode("AUTH", password),
                encode("CLIENT", "SETNAME", client_name),
                encode("CLIENT", "SETINFO", "LIB-NAME", lib_name),
                encode("CLIENT", "SETINFO", "LIB-VER", lib_version),
            ))
    except TimeoutError:
        if conn is not None:
            conn.abort()
        raise ConnectFailure("timeout", "RedisTimeoutException: connect timed out after %d ms" % (timeout * 1000)) \
            from None
    except ConnectionRefusedError:
        raise ConnectFailure("refused", "Connection refused") from None
    except (ConnectionLost, ConnectionResetError, BrokenPipeError):
        if conn is not None:
            conn.abort()
        raise ConnectFailure("reset", "Connection reset by peer") from None
    except OSError as exc:
        if conn is not None:
            conn.abort()
        raise ConnectFailure("reset", "Connection reset by peer (%s)" % (exc.strerror or exc)) from None
    except BaseException:
        # A pod deleted mid-handshake: its socket must not outlive it.
        if conn is not None:
            conn.abort()
        raise
    # CLIENT SETINFO needs Redis 7.2; client libraries ignore its error on older servers, and so do we.
    for reply in replies[:2]:
        if isinstance(reply, ReplyError):
            conn.abort()
            text = str(reply)
            kind = "error"
            if "max number of clients" in text:
                kind = "maxclients"
            elif "WRONGPASS" in text or "NOAUTH" in text:
                kind = "auth"
            raise ConnectFailure(kind, text)
    return conn
