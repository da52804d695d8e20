"""feature_flag's value handling: plain strings and flagd documents."""

from __future__ import annotations

import json

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.flags import flag_text, flagd_document

DOC = json.dumps({"flags": {"redis.retry.aggressive": {"state": "ENABLED", "variants": {"on": True, "off": False},
                                                       "defaultVariant": "on"}}})


@pytest.mark.parametrize("value, text", [(False, "false"), (True, "true"), ("false", "false"), (3, "3")])
def test_flag_text(value: object, text: str) -> None:
    assert flag_text(value) == text


@pytest.mark.parametrize("value", [False, "false", "off"])
def test_flagd_sets_the_default_variant_whose_value_matches(value: object) -> None:
    changed = json.loads(flagd_document(DOC, {"redis.retry.aggressive": value}, "cm"))
    assert changed["flags"]["redis.retry.aggressive"]["defaultVariant"] == "off"


def test_flagd_unchanged_document_is_returned_as_is() -> None:
    assert flagd_document(DOC, {"redis.retry.aggressive": True}, "cm") is DOC


@pytest.mark.parametrize("flags, message", [
    ({"nope": True}, "has no flag 'nope'"),
    ({"redis.retry.aggressive": "sometimes"}, "no variant"),
])
def test_flagd_errors_name_the_problem(flags: dict, message: str) -> None:
    with pytest.raises(StormError, match=message):
        flagd_document(DOC, flags, "cm")


def test_flagd_rejects_a_non_json_key() -> None:
    with pytest.raises(StormError, match="not a flagd JSON document"):
        flagd_document("{", {"a": True}, "cm key flags.json")
