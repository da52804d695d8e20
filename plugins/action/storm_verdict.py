# -*- coding: utf-8 -*-
# Copyright: fintech SRE
# GNU General Public License v3.0+ (see COPYING or https://www.gnu.org/licenses/gpl-3.0.txt)
"""storm_verdict on the controller: the verdict is pure computation, so no module round trip is needed."""

from __future__ import annotations

from typing import Any, Dict, Optional

from ansible.plugins.action import ActionBase
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.verdict import VERDICT_ARG_SPEC, run_verdict


class ActionModule(ActionBase):  # type: ignore[misc]
    TRANSFERS_FILES = False
    _requires_connection = False

    def run(self, tmp: Optional[str] = None, task_vars: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        result: Dict[str, Any] = super().run(tmp, task_vars)
        _validation, params = self.validate_argument_spec(argument_spec=VERDICT_ARG_SPEC)
        try:
            result.update(run_verdict(params))
        except StormError as exc:
            result.update(failed=True, msg=exc.message, **exc.details)
            return result
        result["changed"] = False
        return result
