"""Date-times: the model gives every edge case the verdict and message the CRD gives it on the apiserver
(tests/integration/test_validation.py runs the same table there), and every date-time of the spec is checked."""

from __future__ import annotations

import datetime as dt
import typing
from collections.abc import Iterator
from typing import Any

import pydantic
import pytest

from agentid.api import crdgen, timestamps
from agentid.api.v1alpha1 import AgentIdentitySpec
from tests.support import date_times
from tests.support.agents import agent_manifest


def parse_expiry(text: object) -> dt.datetime | None:
    return AgentIdentitySpec.model_validate(agent_manifest("x", "ns", expiresAt=text)["spec"]).expires_at


@pytest.mark.parametrize("case", date_times.CASES, ids=lambda case: case.why)
def test_the_model_agrees_with_the_crd(case: date_times.Case) -> None:
    if case.refused_with is None:
        parsed = parse_expiry(case.text)
        assert parsed is not None
        parsed.astimezone(dt.UTC)  # usable: the instant exists in UTC
    else:
        with pytest.raises(pydantic.ValidationError) as refused:
            parse_expiry(case.text)
        assert case.refused_with in str(refused.value)


def test_a_number_of_seconds_is_not_a_date_time() -> None:
    """pydantic would read 1798761600 as a Unix time; the CRD's type is string, so the model refuses it too."""
    with pytest.raises(pydantic.ValidationError) as refused:
        parse_expiry(1798761600)
    assert "expected a string, got int" in str(refused.value)


def test_a_datetime_object_is_checked_for_range_only() -> None:
    assert parse_expiry(dt.datetime(2027, 1, 1, tzinfo=dt.UTC)) == dt.datetime(2027, 1, 1, tzinfo=dt.UTC)
    with pytest.raises(pydantic.ValidationError, match="once converted to UTC"):
        parse_expiry(dt.datetime(1, 1, 1, tzinfo=dt.timezone(dt.timedelta(hours=1))))


def _models(model: type[pydantic.BaseModel]) -> Iterator[type[pydantic.BaseModel]]:
    yield model
    for hint in typing.get_type_hints(model).values():
        yield from (nested for arg in _flatten(hint) if _is_model(arg) for nested in _models(arg))


def _flatten(hint: Any) -> Iterator[Any]:
    yield hint
    for arg in typing.get_args(hint):
        yield from _flatten(arg)


def _is_model(value: Any) -> bool:
    return isinstance(value, type) and issubclass(value, pydantic.BaseModel)


def _unchecked_date_times(hint: Any) -> Iterator[Any]:
    """Every ``dt.datetime`` in an annotation that is not a ``Timestamp`` (Annotated with its checks)."""
    if typing.get_origin(hint) is typing.Annotated:
        base, *metadata = typing.get_args(hint)
        if base is dt.datetime and pydantic.BeforeValidator(timestamps.check_text) in metadata:
            return
        yield from _unchecked_date_times(base)
    elif hint is dt.datetime:
        yield hint
    else:
        for arg in typing.get_args(hint):
            yield from _unchecked_date_times(arg)


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_every_date_time_of_the_spec_is_a_timestamp(definition: crdgen.CrdDefinition) -> None:
    unchecked = [
        f"{model.__name__}.{name}"
        for model in _models(definition.spec_model)
        for name, hint in typing.get_type_hints(model, include_extras=True).items()
        if list(_unchecked_date_times(hint))
    ]
    assert unchecked == [], "use agentid.api.timestamps.Timestamp"


def _date_times(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    if node.get("format") == "date-time" or any(
        r in timestamps.CEL_RULES for r in node.get("x-kubernetes-validations", [])
    ):
        yield node
    for child in (node.get("properties") or {}).values():
        yield from _date_times(child)
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            yield from _date_times(node[key])


@pytest.mark.parametrize("definition", crdgen.DEFINITIONS, ids=lambda d: d.kind)
def test_every_date_time_of_the_spec_schema_carries_the_rules_and_no_format(definition: crdgen.CrdDefinition) -> None:
    spec = crdgen.build(definition)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    for node in _date_times(spec):
        assert "format" not in node, "the apiserver's date-time format admits what Python cannot hold"
        assert node["type"] == "string"
        assert node["maxLength"] == timestamps.MAX_LENGTH
        assert node["x-kubernetes-validations"][-len(timestamps.CEL_RULES) :] == timestamps.CEL_RULES


def test_expires_at_is_checked_by_the_crd() -> None:
    spec = crdgen.build(crdgen.AGENT_IDENTITY)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]
    assert spec["spec"]["properties"]["expiresAt"]["x-kubernetes-validations"] == timestamps.CEL_RULES
