# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Documentation of the ``lock`` option of every mutating module (lease.LOCK_ARG_SPEC)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  lock:
    description:
      - This run's hold on the incident lock, as M(fintech.redis_storm.storm_lock) returned it (the incident
        playbooks pass the C(storm_lock) fact through C(module_defaults) of the action group
        C(fintech.redis_storm.fenced)).
      - Before writing anything the module checks that the Lease still names O(lock.holder) with O(lock.transitions)
        transitions, and renews it; otherwise it fails with C(lost_lock) and writes nothing.
      - Without it the module does not look at the lock. Check mode writes nothing and does not look either.
    type: dict
    suboptions:
      name:
        description: The lock's name (O(fintech.redis_storm.storm_lock#module:name)).
        type: str
        required: true
      namespace:
        description: Namespace of the Lease.
        type: str
        default: redis-storm
      holder:
        description: This run's holder identity.
        type: str
        required: true
      transitions:
        description:
          - C(lease_transitions) when this run took the lock; a different count means the lock changed hands since.
        type: int
"""
