# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The Sentinel options of the collection's Redis modules (module_utils/redis_sentinel.py)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  sentinels:
    description:
      - The Sentinels of a Redis group, each C(host:port) (the port defaults to 26379).
      - When given, the current master is asked from the Sentinels and O(host) and O(port) are not used; the
        replicas the Sentinels list are known too. O(password) and O(username) are the Redis nodes' credentials.
      - A Redis Cluster has no Sentinels; O(sentinels) beside O(cluster=true) fails before anything is read.
    type: list
    elements: str
  sentinel_master:
    description:
      - The group's name, as in the Sentinels' C(sentinel monitor <name> ...) line. Required with O(sentinels).
    type: str
  sentinel_username:
    description: ACL user on the Sentinels, when they have one.
    type: str
  sentinel_password:
    description: The Sentinels' own C(requirepass) (not the Redis nodes' password).
    type: str
"""
