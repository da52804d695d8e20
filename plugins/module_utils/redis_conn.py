# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""One Redis connection for triage, and what it means when Redis will not give us one.

During a storm Redis is often at ``maxclients``: it answers a new connection with
``-ERR max number of clients reached`` (over TLS it just drops the socket before the
handshake) and closes it. That refusal is the strongest storm signal there is, so
``connect()`` returns it as a result instead of raising. Only mistakes the operator must
fix (wrong password or ACL, a CA that does not verify the server) raise ``StormError``.

Exactly one socket is opened, with client-side retries and health checks off: redis-py
8.x retries ten times by default, which would multiply our own load on a saturated Redis.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
from typing import Any, Dict, List, Optional

from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import AuthenticationError, NoPermissionError, RedisError
    from redis.retry import Retry

    HAS_REDIS = True
    REDIS_IMPORT_ERROR = None  # type: Optional[str]
except ImportError as exc:  # pragma: no cover - reported by the module through missing_required_lib
    HAS_REDIS = False
    REDIS_IMPORT_ERROR = str(exc)

# What the collection's user needs in a Redis ACL (documented once, quoted in errors).
ACL_HINT = (
    "the user needs +ping +info +client|id +client|list (+client|kill for redis_clients_kill, "
    "+config|get/+config|set for runtime config), e.g. ACL SETUSER storm on >PASSWORD "
    "+ping +info +client +config"
)

CLIENT_NAME = "redis-storm"

REDIS_ARG_SPEC: Dict[str, Dict[str, Any]] = {
    "host": {"type": "str", "default": "127.0.0.1"},
    "port": {"type": "int", "default": 6379},
    "username": {"type": "str"},
    "password": {"type": "str", "no_log": True},
    "tls": {"type": "bool", "default": False},
    "ca_path": {"type": "path"},
    "validate_certs": {"type": "bool", "default": True},
    "socket_timeout": {"type": "float", "default": 3.0},
    # a Redis Cluster: host and port name one node, every node is read or changed (module_utils/redis_cluster.py)
    "cluster": {"type": "bool", "default": False},
}

_SATURATED_TEXT = "max number of clients"
_DROP_ERRNOS = (errno.ECONNRESET, errno.EPIPE, errno.ECONNABORTED)


class Connection:
    """The outcome of one connection attempt: ``client`` is set only when ``reachable``."""

    def __init__(
        self,
        client: Optional[Any],
        reachable: bool,
        saturated: bool = False,
        error: Optional[str] = None,
    ) -> None:
        self.client = client
        self.reachable = reachable
        self.saturated = saturated
        self.error = error

    def live_client(self) -> Any:
        """The client of a reachable connection; a StormError for one that is not (or is closed)."""
        if self.client is None:
            raise StormError("no connection to Redis: %s" % (self.error or "it is closed"))
        return self.client

    def close(self) -> None:
        if self.client is not None:
            # closing a dead socket must not hide the real result
            with contextlib.suppress(Exception):
                self.client.close()
            self.client = None


def redis_options(params: Dict[str, Any]) -> Dict[str, Any]:
    """Pick the connection options out of a module's params."""
    return {key: params.get(key) for key in REDIS_ARG_SPEC}


def endpoint(options: Dict[str, Any]) -> str:
    host = str(options.get("host") or "127.0.0.1")
    port = options.get("port") or 6379
    return "%s:%s" % ("[%s]" % host if ":" in host else host, port)


def _client_kwargs(options: Dict[str, Any]) -> Dict[str, Any]:
    timeout = float(options.get("socket_timeout") or 3.0)
    kwargs: Dict[str, Any] = {
        "host": options.get("host") or "127.0.0.1",
        "port": int(options.get("port") or 6379),
        "username": options.get("username") or None,
        "password": options.get("password") or None,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "socket_keepalive": False,
        # One attempt, one socket: no retries, no health-check PINGs, a pool of one.
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 0,
        "single_connection_client": True,
        "max_connections": 1,
        "client_name": CLIENT_NAME,
    }
    if options.get("tls"):
        validate = options.get("validate_certs", True) is not False
        kwargs["ssl"] = True
        kwargs["ssl_cert_reqs"] = "required" if validate else "none"
        kwargs["ssl_check_hostname"] = validate
        ca_path = options.get("ca_path")
        if ca_path:
            if not os.path.exists(ca_path):
                raise StormError("ca_path %s does not exist: point it at the CA bundle that signed Redis' certificate"
                                 % ca_path)
            kwargs["ssl_ca_path" if os.path.isdir(ca_path) else "ssl_ca_certs"] = ca_path
    return kwargs


def _causes(exc: BaseException) -> List[BaseException]:
    chain: List[BaseException] = []
    current: Optional[BaseException] = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def ca_description(options: Dict[str, Any]) -> str:
    ca_path = options.get("ca_path")
    if ca_path:
        return "the CA in ca_path %s" % ca_path
    paths = ssl.get_default_verify_paths()
    return "the system CA store (%s)" % (paths.cafile or paths.capath or "OpenSSL default paths")


def classify(exc: BaseException, options: Dict[str, Any]) -> Connection:
    """Turn a failed connection attempt into a result, or raise StormError for operator mistakes."""
    where = endpoint(options)
    chain = _causes(exc)
    texts = " | ".join(str(item) for item in chain)
    if _SATURATED_TEXT in texts:
        return Connection(None, reachable=False, saturated=True, error=(
            "Redis at %s refused our connection: %s (it is at maxclients; every new client is being rejected)"
            % (where, _first_line(texts, _SATURATED_TEXT))))
    if any(isinstance(item, AuthenticationError) for item in chain):
        raise StormError(auth_message(where, options, texts))
    if any(isinstance(item, NoPermissionError) for item in chain):
        raise StormError(acl_message(where, options, texts))
    if any(isinstance(item, ssl.SSLCertVerificationError) for item in chain) or "CERTIFICATE_VERIFY_FAILED" in texts:
        reason = next((getattr(item, "verify_message", "") for item in chain
                       if isinstance(item, ssl.SSLCertVerificationError)), "") or _last(chain)
        raise StormError(
            "TLS verification of Redis at %s failed (%s) using %s: set ca_path to the CA that signed the "
            "server certificate, or validate_certs: false to skip verification"
            % (where, reason, ca_description(options))
        )
    if options.get("tls") and _dropped(chain):
        return Connection(None, reachable=False, saturated=True, error=(
            "Redis at %s dropped our TLS connection during the handshake (%s): that is how Redis refuses a TLS "
            "client at maxclients" % (where, _last(chain))))
    if any(isinstance(item, socket.gaierror) for item in chain):
        message = "cannot resolve the Redis host %s (%s): check host" % (where, _last(chain))
    elif any(isinstance(item, ConnectionRefusedError) for item in chain):
        message = "Redis at %s refused the TCP connection (nothing listens there): check host and port" % where
    elif any(isinstance(item, (socket.timeout, TimeoutError)) for item in chain) or "Timeout" in texts:
        message = ("Redis at %s did not answer within socket_timeout %ss: check host, port, firewall and tls"
                   % (where, options.get("socket_timeout")))
    else:
        message = "cannot connect to Redis at %s: %s" % (where, _last(chain))
    return Connection(None, reachable=False, saturated=False, error=message)


def auth_message(where: str, options: Dict[str, Any], detail: str) -> str:
    who = "user %s" % options["username"] if options.get("username") else "the default user"
    if not options.get("password"):
        return ("Redis at %s requires a password and none was given: set password (and username for an ACL user)"
                % where)
    return ("Redis at %s rejected the password for %s (%s): check password/username; %s"
            % (where, who, _first_line(detail, ""), ACL_HINT))


def acl_message(where: str, options: Dict[str, Any], detail: str) -> str:
    who = "user %s" % options["username"] if options.get("username") else "the default user"
    return "Redis at %s denied a command to %s (%s): %s" % (where, who, _first_line(detail, "NOPERM"), ACL_HINT)


def _dropped(chain: List[BaseException]) -> bool:
    for item in chain:
        if isinstance(item, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError, BrokenPipeError,
                             ConnectionAbortedError)):
            return True
        if isinstance(item, OSError) and item.errno in _DROP_ERRNOS:
            return True
        if "Connection closed by server" in str(item):
            return True
    return False


def _last(chain: List[BaseException]) -> str:
    return str(chain[-1]) or type(chain[-1]).__name__


def _first_line(text: str, needle: str) -> str:
    for part in text.split(" | "):
        if needle in part:
            return part.strip()
    return text.split(" | ")[0].strip()


def connect(options: Dict[str, Any]) -> Connection:
    """Open exactly one connection to Redis; refusals come back as a result, mistakes as StormError."""
    if not HAS_REDIS:
        raise StormError("the redis Python library is required: pip install redis")
    kwargs = _client_kwargs(options)
    try:
        client = redis.Redis(**kwargs)
    except (RedisError, OSError) as exc:
        return classify(exc, options)
    return Connection(client, reachable=True)


def command_error(exc: BaseException, options: Dict[str, Any], command: str) -> StormError:
    """A StormError for a command that failed on an open connection."""
    where = endpoint(options)
    chain = _causes(exc)
    texts = " | ".join(str(item) for item in chain)
    if any(isinstance(item, NoPermissionError) for item in chain):
        return StormError(acl_message(where, options, texts) + " (failed: %s)" % command)
    if any(isinstance(item, AuthenticationError) for item in chain):
        return StormError(auth_message(where, options, texts))
    return StormError("Redis at %s failed %s: %s" % (where, command, _last(chain)))
