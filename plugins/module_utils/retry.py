# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backing off after a write conflict (409): the ledger, the Lease and the mitigations.

A 409 means someone else wrote the object between our read and our write. Retrying at once
meets the same writer again (two runs, AWX and EDA, a controller); each retry waits an
exponentially growing delay with jitter, so contenders spread out, and the attempts are bounded:
with ``CONFLICT_ATTEMPTS`` attempts the waits add up to at most ``max_total_wait()`` seconds.
"""

from __future__ import annotations

import random
import time

CONFLICT_ATTEMPTS = 5
BASE_DELAY = 0.05
MAX_DELAY = 2.0


def conflict_delay(retry: int) -> float:
    """Seconds to wait before retry number ``retry`` (0 for the first): half of the exponential step is
    fixed, half random ("equal jitter"), so two contenders rarely retry together and none retries at once."""
    step = min(MAX_DELAY, BASE_DELAY * 2.0 ** retry)
    return step / 2 + random.uniform(0, step / 2)


def back_off(retry: int) -> None:
    time.sleep(conflict_delay(retry))


def max_total_wait(attempts: int = CONFLICT_ATTEMPTS) -> float:
    """The most all waits of ``attempts`` attempts can add up to (there is no wait after the last)."""
    return sum(min(MAX_DELAY, BASE_DELAY * 2.0 ** retry) for retry in range(attempts - 1))
