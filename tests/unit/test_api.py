"""The contract: models parse what users write, durations follow Go syntax, crds/ is generated and fresh."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pydantic
import pytest
import yaml

from agentid.api import crdgen, durations
from agentid.api.v1alpha1 import AgentIdentitySpec
from tests.support.agents import agent_manifest

CRDS = Path(__file__).resolve().parents[2] / "crds"


def test_crds_in_the_repository_match_the_models() -> None:
    for definition in crdgen.DEFINITIONS:
        assert (CRDS / definition.filename).read_text() == crdgen.render(definition), "run `make crds`"


def test_the_generated_schema_is_structural() -> None:
    """No $ref, no anyOf/null types, no additionalProperties beside properties (the apiserver refuses them)."""

    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node
            assert "anyOf" not in node
            assert node.get("type") != "null"
            assert not ("properties" in node and "additionalProperties" in node)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    for definition in crdgen.DEFINITIONS:
        document = yaml.safe_load(crdgen.render(definition))
        walk(document["spec"]["versions"][0]["schema"])


def test_the_documented_example_parses_with_defaults_filled() -> None:
    spec = AgentIdentitySpec.model_validate(agent_manifest("x", "ns", supervision={})["spec"])
    assert spec.supervision.mode.value == "Supervised"  # the safe default
    assert spec.credentials.token_ttl == "15m"
    assert spec.credentials.ttl == dt.timedelta(minutes=15)
    assert spec.delegation.max_depth == 1


@pytest.mark.parametrize(
    ("text", "seconds"), [("720h", 2592000), ("1h30m", 5400), ("15m", 900), ("1.5h", 5400), ("10s", 10)]
)
def test_go_durations_parse(text: str, seconds: float) -> None:
    assert durations.parse(text).total_seconds() == seconds


@pytest.mark.parametrize("text", ["", "15", "fifteen", "-1h", "1d", "h"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        durations.parse(text)


def test_the_models_enforce_the_same_bounds_as_the_crd() -> None:
    with pytest.raises(pydantic.ValidationError, match="shorter than the minimum 1h"):
        AgentIdentitySpec.model_validate({**agent_manifest("x", "ns")["spec"], "credentials": {"rotationPeriod": "5m"}})
    with pytest.raises(pydantic.ValidationError, match="longer than the maximum 24h"):
        AgentIdentitySpec.model_validate({**agent_manifest("x", "ns")["spec"], "credentials": {"tokenTTL": "48h"}})
