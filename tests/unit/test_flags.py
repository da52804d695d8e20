"""feature_flag's value handling: plain strings and flagd documents."""

from __future__ import annotations

import json

import pytest
from ansible_collections.fintech.redis_storm.plugins.module_utils import json_fields
from ansible_collections.fintech.redis_storm.plugins.module_utils.errors import StormError
from ansible_collections.fintech.redis_storm.plugins.module_utils.flags import flag_text, flagd_document
from ansible_collections.fintech.redis_storm.plugins.module_utils.ledger import make_field

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


def test_only_the_changed_leaves_of_a_flagd_document_are_kept_and_plain_json_values_stay_whole() -> None:
    flagd = {"flags": {"retry": {"variants": {"on": True, "off": False}, "defaultVariant": "on"},
                       "other": {"variants": {"a": 1}, "defaultVariant": "a"}}}
    switched = {"flags": dict(flagd["flags"], retry=dict(flagd["flags"]["retry"], defaultVariant="off"))}
    field = make_field(["data", "flags.json"], True, json.dumps(flagd), json.dumps(switched))
    assert json_fields.narrow(field) == [{
        "path": ["data", "flags.json", json_fields.MARK, "flags", "retry", "defaultVariant"],
        "present_before": True, "before": "on", "present_after": True, "after": "off"}]
    plain = make_field(["data", "limits"], True, '{"rps": 5}', '{"rps": 1}')
    assert json_fields.narrow(plain) == [plain]
