# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Redis connection options shared by the collection's Redis modules (module_utils/redis_conn.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  host:
    description:
      - Redis host name or IP address.
    type: str
    default: 127.0.0.1
  port:
    description:
      - Redis port (the TLS port when O(tls=true)).
    type: int
    default: 6379
  username:
    description:
      - ACL user name (Redis 6+). Omit for the default user.
      - The user needs C(+ping +info +client) and, for runtime configuration, C(+config).
    type: str
  password:
    description:
      - Password of O(username), or the C(requirepass) of the default user.
    type: str
  tls:
    description:
      - Connect with TLS.
      - At C(maxclients) Redis drops a TLS connection before the handshake; that drop is reported as saturation.
    type: bool
    default: false
  ca_path:
    description:
      - CA bundle file (or directory of hashed CA certificates) that signed Redis' certificate.
      - Without it the system CA store is used.
    type: path
  validate_certs:
    description:
      - Verify Redis' TLS certificate and host name. Only set V(false) for a drill.
    type: bool
    default: true
  socket_timeout:
    description:
      - Seconds to wait for the connection and for each answer.
      - Exactly one connection attempt is made (client-side retries are off), so a saturated Redis is
        reported within this time plus about a second.
    type: float
    default: 3.0
  cluster:
    description:
      - Redis is a Redis Cluster and O(host)/O(port) name one of its nodes. Every node of the cluster (from
        C(CLUSTER SLOTS) and C(CLUSTER NODES) through redis-py's cluster client) is read or changed, each over
        its own connection with the same credentials.
      - A node that is down is reported by name and the other nodes still are.
    type: bool
    default: false
requirements:
  - redis (the redis-py library, 5.0 or later)
"""
