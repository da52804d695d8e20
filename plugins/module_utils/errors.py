# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one exception type the collection's module_utils raise."""

from __future__ import annotations

from typing import Any


class StormError(Exception):
    """A failure whose message says what went wrong and what to do about it.

    Only a module's ``main()`` turns it into ``fail_json``; ``details`` travel along as
    extra result keys (never secrets).
    """

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
